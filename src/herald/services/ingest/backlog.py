"""The outbox's backlog as gauges, and a warning while it is not draining.

Accepted events are safe in the outbox whatever becomes of the relays, but they reach
nobody until a relay sends them: with ``RELAY_ENABLED=false`` and no relay process
(``herald.services.ingest_relay``) running, or Kafka unreachable, the backlog would
grow without a sound. Ingest itself reports it, wherever its relays run: every 5 s
into ``outbox_pending_events`` and ``outbox_lag_seconds``, and a warning
(``outbox.behind``) at most once a minute while the oldest pending event is older
than a minute.
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
from herald.services.ingest.outbox import LANES
from herald.services.ingest.writer import Q

log = structlog.get_logger("herald.ingest.backlog")
PENDING = Gauge(
    "outbox_pending_events", "Accepted events not yet acknowledged by Kafka (at most 1,000,000)."
)
LAG = Gauge(
    "outbox_lag_seconds", "Age of the oldest event not yet acknowledged by Kafka (0: none)."
)
COUNT_UP_TO = 1_000_000
BEHIND_SECONDS = 60.0


class Backlog(NamedTuple):
    """Pending outbox rows (counted up to :data:`COUNT_UP_TO`) and the oldest's age."""

    pending: int
    lag: float


class BacklogReporter:
    """Keeps the gauges current; :meth:`run` is a worker of the service."""

    def __init__(
        self, pool: asyncpg.Pool, behind: float = BEHIND_SECONDS, warn_every: float = 60.0
    ) -> None:
        self._pool = pool
        self._behind = behind
        self._warn_every = warn_every
        self._warned_at = -math.inf

    async def once(self) -> Backlog | None:
        """Reads the backlog and reports it; None when PostgreSQL did not answer."""
        try:
            row = await self._pool.fetchrow(Q.outbox_backlog, LANES, COUNT_UP_TO)
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
                hint="events wait for a relay: is one running (RELAY_ENABLED=true, or "
                "herald.services.ingest_relay) and is Kafka reachable?",
            )
        return backlog

    async def run(self, every: float = 5.0) -> None:
        while True:
            await self.once()
            await asyncio.sleep(every)
