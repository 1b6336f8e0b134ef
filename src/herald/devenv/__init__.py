"""Real local infrastructure (Kafka 3.9 KRaft, PostgreSQL) for dev, tests and benchmarks.

No Docker: Kafka runs from the official Maven Central jars, PostgreSQL from the
distribution's server binaries, both with their files under :func:`local_root`.
Externally provided servers win: with ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS``
set, the matching local server is not started and the given value is used as is.

Typical use from a pytest fixture::

    env = start_services()          # idempotent; returns DATABASE_URL etc.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._util import DevEnvError, MissingPrerequisiteError, local_root
from .kafka import LocalKafka
from .postgres import LocalPostgres

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

DATABASE_URL = "DATABASE_URL"
KAFKA_BOOTSTRAP_SERVERS = "KAFKA_BOOTSTRAP_SERVERS"


def external_database_url() -> str | None:
    """Return ``$DATABASE_URL`` if an external PostgreSQL is configured."""
    return os.environ.get(DATABASE_URL) or None


def external_kafka_bootstrap() -> str | None:
    """Return ``$KAFKA_BOOTSTRAP_SERVERS`` if an external Kafka is configured."""
    return os.environ.get(KAFKA_BOOTSTRAP_SERVERS) or None


def service_env(root: Path | None = None) -> dict[str, str]:
    """Return ``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS``, external values first."""
    root = local_root() if root is None else root
    return {
        DATABASE_URL: external_database_url() or LocalPostgres(root).dsn,
        KAFKA_BOOTSTRAP_SERVERS: external_kafka_bootstrap() or LocalKafka(root).bootstrap_servers,
    }


def start_services(
    root: Path | None = None, *, kafka_timeout: float = 120, postgres_timeout: float = 60
) -> dict[str, str]:
    """Start the local servers that are not provided externally; return :func:`service_env`.

    Both start in parallel (Kafka dominates); already running servers are kept.
    """
    root = local_root() if root is None else root
    jobs: list[Callable[[], None]] = []
    if external_database_url() is None:
        jobs.append(lambda: LocalPostgres(root).start(postgres_timeout))
    if external_kafka_bootstrap() is None:
        jobs.append(lambda: LocalKafka(root).start(kafka_timeout))
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(job) for job in jobs]
    errors = [exc for exc in (future.exception() for future in futures) if exc is not None]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise DevEnvError("\n\n".join(str(exc) for exc in errors))
    return service_env(root)


@dataclass(frozen=True)
class Servers:
    """The servers a session (tests, a benchmark) uses, and what it started itself."""

    database_url: str
    bootstrap_servers: str
    kafka: LocalKafka | None  # the local Kafka, None when it is external
    started: tuple[str, ...]  # "kafka" / "postgres" started by this session


@contextmanager
def servers(root: Path | None = None) -> Iterator[Servers]:
    """Starts the local Kafka and PostgreSQL unless running or external; on exit stops
    only those it started (``HERALD_KEEP_INFRA=1`` keeps them)."""
    root = local_root() if root is None else root
    kafka, postgres = LocalKafka(root), LocalPostgres(root)
    start_kafka = external_kafka_bootstrap() is None and not kafka.is_running()
    start_pg = external_database_url() is None and not postgres.is_running()
    env = start_services(root)
    started = tuple(n for n, s in (("kafka", start_kafka), ("postgres", start_pg)) if s)
    try:
        yield Servers(
            env[DATABASE_URL],
            env[KAFKA_BOOTSTRAP_SERVERS],
            None if external_kafka_bootstrap() else kafka,
            started,
        )
    finally:
        if not os.environ.get("HERALD_KEEP_INFRA"):
            if start_kafka:
                kafka.stop()
            if start_pg:
                postgres.stop()


def stop_services(root: Path | None = None) -> None:
    """Stop the local Kafka and PostgreSQL (no-op for those not running)."""
    root = local_root() if root is None else root
    LocalKafka(root).stop()
    LocalPostgres(root).stop()


__all__ = [
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "DevEnvError",
    "LocalKafka",
    "LocalPostgres",
    "MissingPrerequisiteError",
    "Servers",
    "external_database_url",
    "external_kafka_bootstrap",
    "local_root",
    "servers",
    "service_env",
    "start_services",
    "stop_services",
]
