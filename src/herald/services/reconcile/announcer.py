"""Publishes each new discrepancy as ``integration.conflict.detected`` through ingest,
once (the event id derives from the discrepancy id); retried until ingest takes it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import structlog

from herald.runtime.db import DATABASE_ERRORS
from herald.runtime.publisher import EventPublisher
from herald.services.reconcile.store import Q

log = structlog.get_logger("herald.reconcile.announcer")
CONFLICT_TYPE = "integration.conflict.detected"
# integration.* events carry a source urn:mastermobile:<system> and a dataschema.
SOURCE = "urn:mastermobile:integration:herald-reconcile"
CONFLICT_SCHEMA = "urn:herald:schema:integration.conflict.detected:1.0"


def conflict_data(row: asyncpg.Record) -> dict[str, Any]:
    """The event's data: what an alert needs to say what is wrong and where."""
    return {
        "discrepancy_id": str(row["id"]),
        "kind": row["kind"],
        "refund_id": row["refund_id"],
        "order_id": row["order_id"],
        "ticket_id": row["ticket_id"],
        "event_id": row["event_id"],
        "expected_amount": row["expected_amount"],
        "actual_amount": row["actual_amount"],
        "description": row["description"],
        "detected_at": row["detected_at"].isoformat(),
    }


class Announcer:
    """See the module docstring; :meth:`run` is a worker of the service."""

    def __init__(
        self, pool: asyncpg.Pool, publisher: EventPublisher, interval: float = 1.0
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._interval = interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.announce()
            except DATABASE_ERRORS as exc:
                log.error("announce.failed", error=repr(exc))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)

    async def announce(self) -> int:
        """Publishes what is unpublished; the number published."""
        rows = await self._pool.fetch(Q.unpublished_discrepancies)
        done = 0
        for row in rows:
            subject = (
                f"refunds/{row['refund_id']}" if row["refund_id"] else f"orders/{row['order_id']}"
            )
            if not await self._publisher.publish(
                CONFLICT_TYPE, str(row["id"]), subject, conflict_data(row), CONFLICT_SCHEMA
            ):
                return done  # ingest is not taking events: next round
            await self._pool.execute(Q.mark_published, row["id"])
            done += 1
        return done
