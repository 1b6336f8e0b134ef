#!/usr/bin/env bash
# Checks what Herald needs on the machine and names the command that installs
# whatever is missing. Exits non-zero when something is missing.
set -u
missing=0
need() { echo "missing: $1 — install with: $2" >&2; missing=1; }

py=${PYTHON_SYS:-python3}
if ! command -v "$py" >/dev/null || ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  need "Python 3.11+" "apt-get install -y python3 python3-venv"
elif ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
  need "python3 venv module" "apt-get install -y python3-venv"
fi
if ! command -v java >/dev/null; then
  need "Java 17+" "apt-get install -y openjdk-17-jre-headless"
else
  v=$(java -version 2>&1 | awk -F'"' '/version/ {print $2}' | cut -d. -f1)
  [ "${v:-0}" -ge 17 ] 2>/dev/null || need "Java 17+ (found $v)" "apt-get install -y openjdk-17-jre-headless"
fi
command -v mvn >/dev/null || need "Maven" "apt-get install -y maven"
command -v npm >/dev/null || need "npm (for the buf CLI)" "apt-get install -y npm"
if [ -z "${DATABASE_URL:-}" ]; then
  if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    need "PostgreSQL server binaries (initdb, pg_ctl)" "apt-get install -y postgresql"
  fi
fi
if [ "$missing" = 0 ]; then
  echo "prerequisites: all found (Python 3.11+, Java 17+, Maven, npm, PostgreSQL server)"
fi
exit $missing
