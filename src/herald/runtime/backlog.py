"""A service's outbox backlog as gauges, and a warning while it is not draining.

What a service accepted is safe in its outbox whatever becomes of its relay, but it
reaches nobody until the relay sends it: with no relay running (ingest with
``RELAY_ENABLED=false`` and no ``ingest_relay`` process) or Kafka unreachable, the
backlog would grow without a sound. Every 5 s the service reads its backlog into
``outbox_pending`` (rows not yet acknowledged by Kafka, counted up to 1,000,000) and
``outbox_lag_seconds`` (the oldest's age, 0 when none), and warns (``outbox.behind``,
with the service's hint) at most once a minute while the oldest is over a minute old.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import NamedTuple

import asyncpg
import structlog
from prometheus_client import Gauge

from herald.runtime.db import DATABASE_ERRORS

log = structlog.get_logger("herald.backlog")
PENDING = Gauge(
    "outbox_pending", "Outbox rows not yet acknowledged by Kafka (counted up to 1,000,000)."
)
LAG = Gauge("outbox_lag_seconds", "Age of the oldest outbox row not yet acknowledged by Kafka.")
COUNT_UP_TO = 1_000_000
BEHIND_SECONDS = 60.0


class Backlog(NamedTuple):
    """Pending outbox rows (counted up to :data:`COUNT_UP_TO`) and the oldest's age."""

    pending: int
    lag: float


class BacklogReporter:
    """Keeps the gauges current; :meth:`run` is a worker of the service.

    ``query`` returns one row (``pending``, ``lag`` in seconds) for its ``args`` and
    :data:`COUNT_UP_TO` as the last argument; ``hint`` says what to check when it is
    behind.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        query: str,
        hint: str,
        args: tuple[object, ...] = (),
        behind: float = BEHIND_SECONDS,
        warn_every: float = 60.0,
    ) -> None:
        self._pool = pool
        self._query = query
        self._args = (*args, COUNT_UP_TO)
        self._hint = hint
        self._behind = behind
        self._warn_every = warn_every
        self._warned_at = -math.inf

    async def once(self) -> Backlog | None:
        """Reads the backlog and reports it; None when PostgreSQL did not answer."""
        try:
            row = await self._pool.fetchrow(self._query, *self._args)
        except DATABASE_ERRORS as exc:
            log.warning("outbox.backlog_unread", error=repr(exc))
            return None
        assert row is not None  # one row, always
        backlog = Backlog(row["pending"], row["lag"])
        PENDING.set(backlog.pending)
        LAG.set(backlog.lag)
        now = time.monotonic()
        if backlog.lag >= self._behind and now - self._warned_at >= self._warn_every:
            self._warned_at = now
            log.warning(
                "outbox.behind",
                pending=backlog.pending,
                oldest_seconds=round(backlog.lag, 1),
                hint=self._hint,
            )
        return backlog

    async def run(self, every: float = 5.0) -> None:
        while True:
            await self.once()
            await asyncio.sleep(every)
