"""Operational events (alerts such as ``herald.webhook.delivery_exhausted``) stored in
the service's own ``announcements`` table, then published through ingest by
:meth:`Announcements.run`, a worker of the service, until ingest takes each one.

An alert raised while ingest is away (a rolling restart, an outage) is published when
it is back, not dropped after a few seconds of retries. The event id derives from
(type, key), so a row published twice (two replicas, a crash before the delete) is a
duplicate at ingest, not a second alert. An alert ingest refuses (INVALID_ARGUMENT,
which no retry changes) is kept with ``refused_at`` and logged.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import structlog

from herald.runtime import json_fast
from herald.runtime.db import DATA_REFUSED, DATABASE_ERRORS, Connection, Queries
from herald.runtime.publisher import Alert, EventPublisher
from herald.runtime.rounds import send_in_rounds

log = structlog.get_logger("herald.announcements")
_SQL = Path(__file__).with_name("sql") / "announcements.sql"
BATCH = 100
ADD_WAIT_SECONDS = 30.0


class Announcements:
    """See the module docstring."""

    def __init__(self, pool: asyncpg.Pool, publisher: EventPublisher, schema: str) -> None:
        """``schema``: the service's schema, which has an ``announcements`` table."""
        if not schema.isidentifier():
            raise ValueError(f"not a schema name: {schema!r}")
        self._q = Queries(_SQL, _SQL.read_text().replace("{schema}", schema))
        self._pool = pool
        self._publisher = publisher
        self._wake = asyncio.Event()

    async def add(self, alert: Alert) -> bool:
        """Stores ``alert`` and wakes the worker; the same (type, key) again is the same
        alert. Text PostgreSQL cannot store (a NUL character, a lone surrogate: from a
        bad input being reported) is stored with U+FFFD instead. While the database is
        away it tries again for up to ADD_WAIT_SECONDS; False (logged) if the alert
        could not be stored."""
        args = _columns(alert)
        delay = 0.1
        deadline = asyncio.get_running_loop().time() + ADD_WAIT_SECONDS
        while True:
            try:
                await self._pool.execute(self._q.add, *args)
                break
            except DATA_REFUSED as exc:
                return _not_stored(alert, exc)
            except DATABASE_ERRORS as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    return _not_stored(alert, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._wake.set()
        return True

    async def add_within(self, conn: Connection, alert: Alert) -> None:
        """Stores ``alert`` in the caller's transaction, so it exists exactly when what
        it announces does; :meth:`wake` once the transaction commits."""
        await conn.execute(self._q.add, *_columns(alert))

    def wake(self) -> None:
        """Alerts were stored: publish them now."""
        self._wake.set()

    async def run(self) -> None:
        """Publishes what is stored, until cancelled."""
        await send_in_rounds(self.publish_stored, self._wake, "announcements")

    async def publish_stored(self) -> tuple[int, bool]:
        """One round: (alerts published, whether some are left)."""
        rows = await self._pool.fetch(self._q.pending, BATCH)
        published = 0
        for row in rows:
            error = await self._publisher.publish_once(
                Alert(
                    row["event_type"],
                    row["key"],
                    row["subject"],
                    json_fast.loads(row["data"]),
                    row["dataschema"],
                    row["created_at"],
                    row["tenant"],
                    row["traceparent"],
                )
            )
            if error is None:
                await self._pool.execute(self._q.published, row["event_type"], row["key"])
                published += 1
            elif error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                log.error(
                    "announcements.refused",
                    type=row["event_type"],
                    key=row["key"],
                    detail=error.details(),
                )
                await self._pool.execute(
                    self._q.refused, row["event_type"], row["key"], str(error.details())
                )
            else:
                return published, True  # ingest is away: the rest waits too
        return published, len(rows) == BATCH


def _columns(alert: Alert) -> tuple[Any, ...]:
    """The ``add`` statement's arguments, with text PostgreSQL can store."""
    return (
        _storable(alert.event_type),
        _storable(alert.key),
        _storable(alert.subject),
        json_fast.dumps(_storable(alert.data)),
        _storable(alert.dataschema),
        _storable(alert.tenant),
        _storable(alert.traceparent),
    )


def _not_stored(alert: Alert, error: BaseException) -> bool:
    log.error("announcements.not_stored", type=alert.event_type, key=alert.key, error=repr(error))
    return False


def _storable(value: Any) -> Any:
    """``value`` with every string PostgreSQL can store: NUL characters and lone
    surrogates become U+FFFD."""
    if isinstance(value, str):
        if value.isascii():
            return value.replace("\x00", "\ufffd")
        return (
            value.encode("utf-8", "surrogatepass")
            .decode("utf-8", "replace")
            .replace("\x00", "\ufffd")
        )
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value
