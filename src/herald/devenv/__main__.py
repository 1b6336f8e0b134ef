"""CLI: ``python -m herald.devenv up|down|status|env|kafka-start|kafka-stop|pg-start|pg-stop``.

``up`` prints ``NAME=value`` lines on stdout (progress goes to stderr), ``env``
prints ``export NAME=value`` lines for ``eval "$(python -m herald.devenv env)"``.
Exit status: 0 on success, 1 on errors (missing prerequisites name their
install command), 3 from ``status`` when a managed server is not running.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import TYPE_CHECKING

from . import (
    DevEnvError,
    LocalKafka,
    LocalPostgres,
    external_database_url,
    external_kafka_bootstrap,
    local_root,
    service_env,
    start_services,
    stop_services,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def _info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _timed(what: str, action: Callable[[], None]) -> None:
    started = time.monotonic()
    action()
    _info(f"{what} in {time.monotonic() - started:.1f}s")


def _kafka_start(kafka: LocalKafka) -> None:
    if external_kafka_bootstrap():
        _info(f"kafka: external KAFKA_BOOTSTRAP_SERVERS={external_kafka_bootstrap()}, not started")
        return
    _timed(
        f"kafka: ready on {kafka.bootstrap_servers} (SCRAM {kafka.scram_bootstrap_servers})",
        kafka.start,
    )


def _pg_start(pg: LocalPostgres) -> None:
    if external_database_url():
        _info("postgres: external DATABASE_URL is set, not started")
        return
    _timed(f"postgres: ready at {pg.dsn}", pg.start)


def _status(kafka: LocalKafka, pg: LocalPostgres) -> int:
    down = 0
    if external_database_url():
        print(f"postgres: external  {external_database_url()}")
    else:
        pid = pg.pid()
        down += pid is None
        print(
            f"postgres: {'running' if pid else 'stopped'}  {pg.dsn}"
            + (f"  (pid {pid})" if pid else "")
        )
    if external_kafka_bootstrap():
        print(f"kafka:    external  {external_kafka_bootstrap()}")
    else:
        pid = kafka.pid()
        down += pid is None
        state = "running" if pid else "stopped"
        scram = f"(SCRAM-SHA-512 {kafka.scram_bootstrap_servers})"
        print(
            f"kafka:    {state}  {kafka.bootstrap_servers} {scram}"
            + (f"  (pid {pid})" if pid else "")
        )
    return 3 if down else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m herald.devenv", description="Local Kafka + PostgreSQL."
    )
    commands = ["up", "down", "status", "env", "kafka-start", "kafka-stop", "pg-start", "pg-stop"]
    parser.add_argument("command", choices=commands)
    args = parser.parse_args(argv)
    root = local_root()
    kafka, pg = LocalKafka(root), LocalPostgres(root)
    try:
        if args.command == "up":
            started = time.monotonic()
            env = start_services(root)
            external = [
                name
                for name, value in (
                    ("postgres", external_database_url()),
                    ("kafka", external_kafka_bootstrap()),
                )
                if value
            ]
            note = f"; external: {', '.join(external)}" if external else ""
            _info(f"up: ready in {time.monotonic() - started:.1f}s (data in {root}{note})")
            for name, value in env.items():
                print(f"{name}={value}")
        elif args.command == "down":
            _timed("down: kafka and postgres stopped", lambda: stop_services(root))
        elif args.command == "status":
            return _status(kafka, pg)
        elif args.command == "env":
            for name, value in service_env(root).items():
                print(f"export {name}={shlex.quote(value)}")
        elif args.command == "kafka-start":
            _kafka_start(kafka)
        elif args.command == "kafka-stop":
            _timed("kafka: stopped", kafka.stop)
        elif args.command == "pg-start":
            _pg_start(pg)
        elif args.command == "pg-stop":
            _timed("postgres: stopped", pg.stop)
    except DevEnvError as exc:
        _info(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
