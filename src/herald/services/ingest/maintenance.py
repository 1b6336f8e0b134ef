"""Periodic purges: expired idempotency keys, sent outbox rows, old events."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from herald.runtime.db import DATABASE_ERRORS
from herald.services.ingest.writer import Q

log = structlog.get_logger("herald.ingest.maintenance")


async def purge_once(pool: asyncpg.Pool, outbox_seconds: float, event_seconds: float) -> None:
    """Deletes what has outlived its retention."""
    keys = await pool.execute(Q.purge_keys)
    outbox = await pool.execute(Q.purge_outbox, outbox_seconds)
    events = await pool.execute(Q.purge_events, event_seconds)
    log.info("maintenance.purged", keys=keys, outbox=outbox, events=events)


async def run_purges(
    pool: asyncpg.Pool, outbox_seconds: float, event_seconds: float, every: float = 600
) -> None:
    """Purges every ``every`` seconds (a worker of the service); errors are retried."""
    while True:
        try:
            await purge_once(pool, outbox_seconds, event_seconds)
        except DATABASE_ERRORS as exc:
            log.warning("maintenance.failed", error=repr(exc))
        await asyncio.sleep(every)
