"""A private PostgreSQL cluster under ``<root>/postgres`` for dev, tests and benchmarks."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import time
from pathlib import Path

from ._util import (
    DevEnvError,
    MissingPrerequisiteError,
    file_lock,
    pid_alive,
    proc_cmdline,
    read_pid,
    require_program,
    run,
    tail,
)

HOST = "127.0.0.1"
DATABASE = "herald"
SUPERUSER = "postgres"
OS_USER = "postgres"
_INSTALL = "apt-get install -y postgresql"
_PG_LIB = Path("/usr/lib/postgresql")
# Unix socket paths are limited to 107 bytes (sun_path); deeper roots go TCP-only.
_MAX_SOCKET_PATH = 107


def find_bindir() -> Path:
    """Locate ``initdb``/``pg_ctl``: on PATH, else the newest /usr/lib/postgresql/N/bin."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    # Resolve: PATH often holds symlinks (e.g. /usr/local/bin/initdb) without psql next to them.
    if initdb and pg_ctl and Path(initdb).resolve().parent == Path(pg_ctl).resolve().parent:
        return Path(initdb).resolve().parent
    candidates = [
        path
        for path in _PG_LIB.glob("*/bin")
        if path.parent.name.isdigit()
        and (path / "initdb").is_file()
        and (path / "pg_ctl").is_file()
    ]
    if not candidates:
        raise MissingPrerequisiteError("PostgreSQL server binaries (initdb, pg_ctl)", _INSTALL)
    return max(candidates, key=lambda path: int(path.parent.name))


def _major_version(bindir: Path) -> str:
    output = run([str(bindir / "pg_ctl"), "--version"], what="pg_ctl --version", timeout=30)
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    if match is None:
        raise DevEnvError(f"cannot parse the PostgreSQL version from {output!r}")
    return match.group(1)


class LocalPostgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a ``herald`` database.

    As root, the server runs as the unprivileged ``postgres`` OS user (via
    ``runuser``) because PostgreSQL refuses to run as root.
    """

    def __init__(self, root: Path, port: int = 54329) -> None:
        self.root = root
        self.port = port
        self.dir = root / "postgres"
        self.data_dir = self.dir / "data"
        self.socket_dir = self.dir / "run"
        self.log_file = self.dir / "postgres.log"
        self.dsn = f"postgresql://{SUPERUSER}@{HOST}:{port}/{DATABASE}"
        self._initialized_marker = self.dir / ".initialized"

    # -- state -----------------------------------------------------------------

    def pid(self) -> int | None:
        """Return the postmaster's pid if this cluster is running."""
        pid = read_pid(self.data_dir / "postmaster.pid")
        if pid is None or not pid_alive(pid):
            return None
        cmdline = proc_cmdline(pid)
        if not cmdline or not Path(cmdline[0]).name.startswith("postgres"):
            return None  # stale pid file after a crash, pid reused
        return pid

    def is_running(self) -> bool:
        """Tell whether this cluster's postmaster is alive."""
        return self.pid() is not None

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Create the cluster on first use, start it unless running, ensure the database exists."""
        with file_lock(self.dir / ".lock"):
            bindir = find_bindir()
            if not self.is_running():
                as_user = self._run_as()
                if not self._initialized_marker.is_file():
                    self._initdb(bindir, as_user)
                else:
                    self._check_version(bindir)
                self._write_config()
                pg_ctl = [
                    str(bindir / "pg_ctl"),
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                ]
                pg_ctl += ["-w", "-t", str(max(1, int(timeout))), "-s"]
                try:
                    run(
                        [*as_user, *pg_ctl],
                        what="starting PostgreSQL",
                        timeout=timeout + 10,
                        cwd=self.dir,
                    )
                except DevEnvError as exc:
                    raise DevEnvError(
                        f"{exc}\n--- tail of {self.log_file} ---\n{tail(self.log_file)}"
                    ) from exc
            self._ensure_database(bindir)

    def stop(self, timeout: float = 30) -> None:
        """Stop the cluster (fast mode: roll back sessions), escalating to immediate mode."""
        with file_lock(self.dir / ".lock"):
            if not self.is_running():
                return
            bindir, as_user = find_bindir(), self._run_as()
            base = [*as_user, str(bindir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-w", "-s"]
            try:
                fast = [*base, "-m", "fast", "-t", str(max(1, int(timeout)))]
                run(fast, what="stopping PostgreSQL", timeout=timeout + 10, cwd=self.dir)
            except DevEnvError:
                immediate = [*base, "-m", "immediate", "-t", "30"]
                run(immediate, what="stopping PostgreSQL (immediate)", timeout=40, cwd=self.dir)

    # -- helpers ---------------------------------------------------------------

    def _run_as(self) -> list[str]:
        """Command prefix that drops root privileges; empty when not root."""
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            raise DevEnvError(
                f"running as root, but PostgreSQL refuses to run as root and the "
                f"'{OS_USER}' OS user does not exist; it comes with the server "
                f"package: {_INSTALL}"
            ) from None
        runuser = require_program("runuser", "apt-get install -y util-linux")
        return [runuser, "-u", OS_USER, "--"]

    def _own(self, *paths: Path) -> None:
        """Hand ``paths`` to the postgres OS user when we are root."""
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam(OS_USER)
        for path in paths:
            os.chown(path, user.pw_uid, user.pw_gid)

    def _initdb(self, bindir: Path, as_user: list[str]) -> None:
        # Without the marker any data dir is a leftover of a failed init: start over.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self.data_dir.mkdir(mode=0o700)
        self._own(self.dir, self.socket_dir, self.data_dir)
        if as_user:
            try:
                run([*as_user, "test", "-w", str(self.dir)], what="access check", timeout=30)
            except DevEnvError:
                raise DevEnvError(
                    f"the '{OS_USER}' OS user cannot write {self.dir}; every parent directory "
                    "must be searchable by it (chmod o+x), or set HERALD_LOCAL_DIR elsewhere"
                ) from None
        initdb = [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust"]
        # C collation: fast and deterministic for tests; --no-sync: a throwaway cluster.
        initdb += ["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        run([*as_user, *initdb], what="initdb", timeout=300, cwd=self.dir)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# Managed by herald.devenv, rewritten on every start.\n")
            conf.write("include = 'herald.conf'\n")
        self._initialized_marker.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))

    def _check_version(self, bindir: Path) -> None:
        cluster = (self.data_dir / "PG_VERSION").read_text().strip()
        binaries = _major_version(bindir)
        if cluster != binaries:
            raise DevEnvError(
                f"{self.data_dir} was created by PostgreSQL {cluster} but the binaries in "
                f"{bindir} are version {binaries}; delete {self.dir} to recreate the dev cluster"
            )

    def _write_config(self) -> None:
        socket_file = self.socket_dir / f".s.PGSQL.{self.port}"
        sockets = str(self.socket_dir) if len(str(socket_file)) <= _MAX_SOCKET_PATH else ""
        lines = [
            f"listen_addresses = '{HOST}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{sockets}'",
            "max_connections = 200",
            # Throwaway dev/test cluster: durability is traded for speed. An OS crash
            # or power loss can corrupt it; delete .local/postgres to start afresh.
            "# Throwaway dev cluster: no durability (an OS crash can corrupt it).",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "shared_buffers = 256MB",
            "log_line_prefix = '%m [%p] %q%u@%d '",
        ]
        conf = self.data_dir / "herald.conf"
        conf.write_text(
            "# Generated by herald.devenv on every start; edits are overwritten.\n"
            + "\n".join(lines)
            + "\n"
        )
        self._own(conf)

    def _ensure_database(self, bindir: Path) -> None:
        psql = str(bindir / "psql") if (bindir / "psql").is_file() else shutil.which("psql")
        if psql is None:
            raise MissingPrerequisiteError("psql", "apt-get install -y postgresql-client")
        # Connect over TCP as the postgres role (trust auth): works as any OS user.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["PGCONNECT_TIMEOUT"] = "10"
        # psql's \gexec runs the generated CREATE only when the database is missing.
        sql = (
            "SELECT 'CREATE DATABASE herald' "
            "WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'herald')\\gexec\n"
        )
        cmd = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(self.port)]
        cmd += ["-U", SUPERUSER, "-d", "postgres", "-f", "-"]
        run(cmd, what="creating the herald database", timeout=60, env=env, stdin=sql, cwd=self.dir)


__all__ = ["LocalPostgres", "find_bindir"]
