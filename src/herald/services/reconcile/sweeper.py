"""Waits with a limit: an order whose event never came, a refund whose order never
came. Past ``park_limit`` each becomes a discrepancy (the refund is then held until
an operator resolves it; the order is still released if its event arrives).

A refund found waiting for an order the ledger has (its transaction and the order's
ran at once: a refund naming another event than its order's takes that event's lock,
not the order's) is checked as the order's arrival would have checked it, on the next
pass rather than after the limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog
from ticketland.v1 import ticketland_pb2 as tl

from herald.runtime.db import DATABASE_ERRORS
from herald.services.reconcile.apply import BatchApply
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
        """``found`` is called after a pass that raised discrepancies or queued outputs."""
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
        """One pass; the number of discrepancies raised and refunds checked."""
        found = 0
        async with self._pool.acquire() as conn:
            arrived = await conn.fetch(Q.waiting_refunds_with_order)
            orders = await conn.fetch(Q.overdue_orders, self._park_limit)
            refunds = await conn.fetch(Q.overdue_refunds, self._park_limit)
        for r in arrived:
            found += await self._judge_refund(r["id"], [r["event_id"], r["order_event_id"]])
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
            found += await self._judge_refund(r["id"], [r["event_id"]], overdue=True)
        return found

    async def _judge_refund(self, refund_id: str, events: list[str], overdue: bool = False) -> int:
        """A refund waiting for its order, under the locks of ``events`` (its own and,
        once known, its order's): checked if the order is there, else (``overdue``)
        held as an unknown order. 1 if it was either, else 0."""
        for _ in range(3):  # an order found under an event not locked: once more with it
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.fetchval(Q.lock_keys, sorted(set(events)))
                row = await conn.fetchrow(Q.get_refund, refund_id)
                if row is None or row["state"] != "waiting_order":
                    return 0  # the order's arrival took it meanwhile
                order_event = await conn.fetchval(Q.order_event, row["order_id"])
                if order_event is not None and order_event not in events:
                    events = [*events, order_event]
                    continue
                queue = Queue(self._config)
                if order_event is not None:
                    log.info("refund.order_found", refund_id=refund_id, order_id=row["order_id"])
                    await BatchApply(conn, queue).approve_waiting(
                        [tl.RefundRequest.FromString(row["doc"])]
                    )
                    await queue.flush(conn)
                    return 1
                if not overdue:
                    return 0
                finding = Finding(  # one per order it names (another one: another finding)
                    "unknown_order",
                    f"refund {refund_id}: order {row['order_id']} is not known",
                    aspect=row["order_id"],
                )
                tx = Transaction(conn, queue)
                await tx.hold(refund_id, row["order_id"], row["event_id"], [finding])
                await conn.execute(
                    Q.settle_other_unknown_orders,
                    refund_id,
                    row["order_id"],
                    "settled: the refund names another order now",
                )
                return 1
        return 0
