"""The delivery engine's Prometheus metrics."""

from __future__ import annotations

import asyncio

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from herald.runtime.db import DATABASE_ERRORS
from herald.services.webhooks.store import Q

DELIVERIES = Counter("webhook_deliveries", "Delivery attempts by outcome.", ["outcome"])
ATTEMPT_SECONDS = Histogram(
    "webhook_attempt_seconds",
    "Seconds from sending a POST to its answer (or failure).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DUE_DEPTH = Gauge("webhook_due_deliveries", "Deliveries due now and not yet attempted.")
DUE_LAG = Gauge("webhook_due_lag_seconds", "How late the oldest due delivery is.")


async def report_due(pool: asyncpg.Pool, every: float = 5.0) -> None:
    """Keeps the due-queue gauges current and the rate ledger short (a worker)."""
    while True:
        try:
            row = await pool.fetchrow(Q.due_depth)
            await pool.execute(Q.purge_sends)  # the rate windows need only 1 minute
        except DATABASE_ERRORS:
            row = None
        if row is not None:
            DUE_DEPTH.set(row["depth"])
            DUE_LAG.set(float(row["lag"]))
        await asyncio.sleep(every)
