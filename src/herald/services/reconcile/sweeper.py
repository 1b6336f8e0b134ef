"""Waits with a limit: an order whose event never came, a refund whose order never
came. Past ``park_limit`` each becomes a discrepancy (the refund is then held until
an operator resolves it; the order is still released if its event arrives)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog

from herald.runtime.db import DATABASE_ERRORS
from herald.services.reconcile.checks import Finding
from herald.services.reconcile.ledger import Transaction
from herald.services.reconcile.outputs import OutputConfig, Queue
from herald.services.reconcile.store import Q

log = structlog.get_logger("herald.reconcile.sweeper")


class Sweeper:
    """See the module docstring; :meth:`run` is a worker of the service."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        config: OutputConfig,
        park_limit: float,
        found: Callable[[], None] = lambda: None,
        interval: float = 1.0,
    ) -> None:
        """``found`` is called after a pass that raised discrepancies."""
        self._pool = pool
        self._found = found
        self._config = config
        self._park_limit = park_limit
        self._interval = interval

    async def run(self) -> None:
        while True:
            try:
                if await self.sweep():
                    self._found()
            except DATABASE_ERRORS as exc:
                log.error("sweep.failed", error=repr(exc))
            await asyncio.sleep(self._interval)

    async def sweep(self) -> int:
        """One pass; the number of discrepancies raised."""
        found = 0
        async with self._pool.acquire() as conn:
            orders = await conn.fetch(Q.overdue_orders, self._park_limit)
            refunds = await conn.fetch(Q.overdue_refunds, self._park_limit)
        for o in orders:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.fetchval(Q.lock_keys, [o["event_id"]])
                row = await conn.fetchrow(Q.get_order, o["id"])
                if row is None or row["delivery"] != "parked":
                    continue  # released meanwhile
                finding = Finding(
                    "order_parked_too_long",
                    f"order {o['id']} waits for event {o['event_id']}, unknown since "
                    f"{o['parked_at'].isoformat()}",
                )
                tx = Transaction(conn, Queue(self._config))
                await tx.store_findings(o["id"], "", o["id"], o["event_id"], [finding])
                found += 1
        for r in refunds:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.fetchval(Q.lock_keys, [r["event_id"]])
                row = await conn.fetchrow(Q.get_refund, r["id"])
                if row is None or row["state"] != "waiting_order":
                    continue
                finding = Finding(
                    "unknown_order", f"refund {r['id']}: order {row['order_id']} is not known"
                )
                tx = Transaction(conn, Queue(self._config))
                await tx.hold(r["id"], row["order_id"], r["event_id"], [finding])
                found += 1
        return found
