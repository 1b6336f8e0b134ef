"""PostgreSQL plumbing: the asyncpg pool, named SQL queries and versioned migrations.

SQL lives in ``.sql`` files. A queries file holds named statements, each under a
``-- name: <query_name>`` header. Migrations are ``NNN_description.sql`` files applied
in order, once, under an advisory lock so that replicas starting together agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from herald.runtime.settings import StartError

log = structlog.get_logger("herald.db")

# PostgreSQL is unreachable or has dropped the connection (a restart, a failover, an
# operator's pg_terminate_backend): worth trying again later. asyncpg's
# InternalClientError belongs here: a connection the server terminates in the middle of
# an operation can leave asyncpg's protocol state confused ("cannot switch to state 15;
# another operation (2) is in progress", MagicStack/asyncpg#784); the pool discards it.
CONNECTION_LOST = (
    OSError,  # refused, reset, timed out (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # ConnectionDoesNotExistError: closed mid-operation
    asyncpg.InternalClientError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)

# What a database call raises when PostgreSQL is unreachable or refuses: loops that
# must outlive an outage catch these, log, and try again.
DATABASE_ERRORS = (*CONNECTION_LOST, asyncpg.PostgresError)

# What PostgreSQL answers about the data itself (a value it cannot store, such as a NUL
# character in text; an index entry too large, …): the same records would fail for ever,
# so a consumer isolates the record at fault and dead-letters it.
DATA_REFUSED = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)

T = TypeVar("T")
R = TypeVar("R")


class Unforeseen(Exception):
    """Applying one item raised an error that is neither PostgreSQL's nor the network's
    (a bug meeting data it did not foresee): retrying would fail the same way for ever."""


async def isolate_refused(
    items: Sequence[T],
    apply: Callable[[Sequence[T]], Awaitable[list[R]]],
    refused: Callable[[T, BaseException], Awaitable[R]],
    refusals: tuple[type[BaseException], ...] = DATA_REFUSED,
) -> list[R]:
    """``apply(items)``; a batch PostgreSQL refuses for its data (DATA_REFUSED, or any
    of ``refusals``) is split in halves until the item it refuses is alone, whose result
    is ``refused`` with the reason; the rest are applied. Results keep the items' order;
    any other error is raised."""
    try:
        return await apply(items)
    except refusals as exc:
        if len(items) == 1:
            return [await refused(items[0], exc)]
        log.warning("db.refused_batch", items=len(items), error=repr(exc))
        half = len(items) // 2
        return [
            *await isolate_refused(items[:half], apply, refused, refusals),
            *await isolate_refused(items[half:], apply, refused, refusals),
        ]


async def until_taken(
    action: Callable[[], Awaitable[R]],
    *,
    failed_event: str,
    first_delay: float,
    max_delay: float,
    level: int = logging.WARNING,
) -> R:
    """``action()`` until PostgreSQL takes it, for a consumer whose offsets wait for it:
    any database error but refused data is logged as ``failed_event`` (``retry_in``) and
    the action tried again, the delay doubling from ``first_delay`` up to ``max_delay``.
    Refused data (DATA_REFUSED) and any other error are raised at once: the same data
    would be refused for ever."""
    delay = first_delay
    while True:
        try:
            return await action()
        except DATA_REFUSED:
            raise
        except DATABASE_ERRORS as exc:
            log.log(level, failed_event, error=repr(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


async def apply_isolating_refused(
    items: Sequence[T],
    apply: Callable[[Sequence[T]], Awaitable[int]],
    refused: Callable[[T, BaseException], Awaitable[None]],
    *,
    failed_event: str,
    first_delay: float,
    max_delay: float,
    level: int = logging.WARNING,
) -> int:
    """``apply(items)`` (the sum of what it returns) for a consumer whose offsets wait
    for it. Any database error other than refused data (unreachable, a deadlock, …) is
    logged as ``failed_event`` and the part at hand tried again with backoff. Refused
    data goes to ``refused`` item by item (:func:`isolate_refused`), and so does an item
    whose application raises anything else (:class:`Unforeseen`, logged with its
    traceback): one such record would otherwise stop the consumer, again after every
    restart, while the records behind it wait."""

    async def retrying(part: Sequence[T]) -> list[int]:
        try:
            return [
                await until_taken(
                    lambda: apply(part),
                    failed_event=failed_event,
                    first_delay=first_delay,
                    max_delay=max_delay,
                    level=level,
                )
            ]
        except DATA_REFUSED:
            raise
        except Exception as exc:  # until_taken raises no other database error
            if len(part) == 1:
                log.exception("db.apply_crashed", error=repr(exc))
            raise Unforeseen(f"{type(exc).__name__}: {exc}") from exc

    async def refused_one(item: T, exc: BaseException) -> int:
        await refused(item, exc)
        return 0

    return sum(await isolate_refused(items, retrying, refused_one, (*DATA_REFUSED, Unforeseen)))


def refusal_reason(exc: BaseException) -> str:
    """The dead-letter reason of an item :func:`apply_isolating_refused` set aside."""
    if isinstance(exc, Unforeseen):
        return f"processing it failed: {exc}"
    return f"the database refused it: {exc}"


# A connection, whether taken from a pool or opened alone.
Connection = asyncpg.Connection | PoolConnectionProxy

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")
_INCLUDE = re.compile(r"^-- include: ([a-z0-9_]+)$", re.MULTILINE)
_TABLES = Path(__file__).with_name("sql") / "tables"
# One advisory lock key for all migrations: services migrate one at a time.
_MIGRATION_LOCK = 0x4E52414C44  # "HERALD"-ish, any stable bigint


class Queries:
    """Named SQL statements read from one file: ``queries.insert_event``."""

    def __init__(self, path: Path, text: str | None = None) -> None:
        """The statements of ``path`` (of ``text``, when given: ``path`` then only
        names the source in errors)."""
        if text is None:
            text = path.read_text()
        parts = _NAME.split(text)
        self._sql: dict[str, str] = {}
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in self._sql:
                raise ValueError(f"{path}: query {name!r} defined twice")
            self._sql[name] = body.strip()

    def __getattr__(self, name: str) -> str:
        try:
            return self._sql[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r}") from None

    def names(self) -> list[str]:
        """All query names in the file."""
        return list(self._sql)


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    service: str
    version: int
    name: str
    sql: str


def read_migrations(service: str, folder: Path) -> list[Migration]:
    """The migrations in ``folder``, in version order; gaps or repeats are errors."""
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION.match(path.name)
        if not match:
            raise ValueError(f"{path}: migration files are named NNN_description.sql")
        found.append(Migration(service, int(match[1]), match[2], _expand(path, service)))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"{folder}: migration versions must be 1..N, got {versions}")
    return found


def _expand(path: Path, schema: str) -> str:
    """A migration's text, each ``-- include: <table>`` line replaced by the runtime's
    definition of a table every service has (``runtime/sql/tables/<table>.sql``), in the
    service's ``schema``."""

    def table(match: re.Match[str]) -> str:
        where = _TABLES / f"{match[1]}.sql"
        if not where.exists():
            raise ValueError(f"{path}: no runtime table {match[1]!r} to include")
        return where.read_text().replace("{schema}", schema)

    return _INCLUDE.sub(table, path.read_text())


# This module's own statements (the migration runner's table and lock, the health check).
_OWN = Queries(Path(__file__).with_name("sql") / "db.sql")


async def migrate(conn: Connection, migrations: list[Migration]) -> list[int]:
    """Applies the migrations not applied yet, each in its own transaction.

    Returns the versions applied now. One PostgreSQL refuses (or a connection lost
    while it runs) is rolled back and stops the start: a :class:`StartError` naming
    the migration's file and the reason (``cannot start: DATABASE_URL: …``, exit 1).
    """
    applied_now: list[int] = []
    try:
        await conn.execute(_OWN.lock, _MIGRATION_LOCK)
    except DATABASE_ERRORS as exc:
        raise StartError(_bookkeeping_failure("waiting for the migration lock", exc)) from None
    try:
        try:
            await conn.execute(_OWN.create_table)
        except DATABASE_ERRORS as exc:
            raise StartError(_bookkeeping_failure("creating herald_migrations", exc)) from None
        for migration in migrations:
            try:
                done = await conn.fetchval(_OWN.applied, migration.service, migration.version)
            except DATABASE_ERRORS as exc:
                raise StartError(_bookkeeping_failure("reading herald_migrations", exc)) from None
            if done:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        _OWN.record, migration.service, migration.version, migration.name
                    )
            except DATABASE_ERRORS as exc:
                raise StartError(_migration_failure(migration, exc)) from None
            log.info("db.migrated", service=migration.service, version=migration.version)
            applied_now.append(migration.version)
    finally:
        # A connection lost on the way has released its session lock with it.
        with contextlib.suppress(*CONNECTION_LOST):
            await conn.execute(_OWN.unlock, _MIGRATION_LOCK)
    return applied_now


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _bookkeeping_failure(step: str, exc: BaseException) -> str:
    """What the operator reads when the runner's own statements fail (a user that may
    not create the table, the connection lost while another replica migrates)."""
    return f"DATABASE_URL: migrations: {step} failed: {_reason(exc)}"


def _migration_failure(migration: Migration, exc: BaseException) -> str:
    """What the operator reads when a migration fails: which file, that none of it was
    applied (each migration is one transaction), and PostgreSQL's reason."""
    return (
        f"DATABASE_URL: {migration.service} migration "
        f"{migration.version:03d}_{migration.name}.sql failed and was rolled back "
        f"(none of it is applied; migrations before it are): {_reason(exc)}"
    )


async def _rollback_only(conn: asyncpg.Connection) -> None:
    """Pool reset: Herald keeps no session state (no SET, LISTEN or session locks on
    pooled connections), so the default reset query's round trip on every release is
    waste; only an unfinished transaction is rolled back."""
    if conn.is_in_transaction():
        await conn.execute(_OWN.rollback)


# PostgreSQL notices a Herald process gone without closing its connections (its host
# lost, the network cut) after about 2 minutes (60 s idle, then 6 probes 10 s apart), not
# the operating system's default of two hours and more: until then the connection's
# transaction holds its locks (an ingest relay's lanes, reconcile's relay lock) and no
# other replica takes that work. A setting given in DATABASE_URL's query wins (0: the
# operating system's default).
KEEPALIVES = {
    "tcp_keepalives_idle": "60",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "6",
}


def server_settings(dsn: str) -> dict[str, str]:
    """The session settings Herald asks for on connections to ``dsn``: KEEPALIVES,
    but those ``dsn`` gives itself."""
    try:
        given = {k for k, _ in urllib.parse.parse_qsl(urllib.parse.urlsplit(dsn).query)}
    except ValueError:  # asyncpg says what is wrong with it
        given = set()
    return {k: v for k, v in KEEPALIVES.items() if k not in given}


async def create_pool(dsn: str, size: int) -> asyncpg.Pool:
    """An asyncpg pool of ``dsn`` (a service's DATABASE_URL). When it cannot connect
    (unreachable, refused, a wrong password or database) the start stops at once with
    a :class:`StartError` naming DATABASE_URL and the reason, without the password."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min(2, size),
            max_size=size,
            reset=_rollback_only,
            server_settings=server_settings(dsn),
        )
    except (*DATABASE_ERRORS, asyncpg.ClientConfigurationError, ValueError) as exc:
        raise StartError(f"DATABASE_URL: {_connect_failure(dsn, exc)}") from None
    assert pool is not None
    return pool


_PASSWORDS = frozenset({"password", "sslpassword"})  # DSN parameters that are secrets


def _connect_failure(dsn: str, exc: BaseException) -> str:
    """Why connecting to ``dsn`` failed, naming it without its password (in the user
    part, a ``password`` parameter or ``sslpassword``, the client key's passphrase,
    wherever the error's text quotes it)."""
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    try:
        parts = urllib.parse.urlsplit(dsn)
        user, at, hosts = parts.netloc.rpartition("@")
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        secrets = [parts.password or "", *(v for k, v in query if k in _PASSWORDS)]
    except ValueError:  # not even a URL: say nothing of it
        return f"cannot connect: {reason}"
    for secret in filter(None, secrets):
        for form in {secret, urllib.parse.unquote(secret), urllib.parse.quote(secret, safe="")}:
            reason = reason.replace(form, "***")
    if at and ":" in user:
        user = user.partition(":")[0] + ":***"
    shown = parts._replace(
        netloc=f"{user}{at}{hosts}",
        query="&".join(f"{k}={'***' if k in _PASSWORDS else v}" for k, v in query),
    )
    return f"cannot connect to {urllib.parse.urlunsplit(shown)}: {reason}"


async def check(pool: asyncpg.Pool) -> None:
    """Raises when PostgreSQL does not answer (health checks)."""
    async with pool.acquire(timeout=2) as conn:
        await conn.fetchval(_OWN.ping, timeout=2)
