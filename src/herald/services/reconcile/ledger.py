"""The ledger: each batch of input records applied in one transaction.

Everything about one event (the event, its orders, their refunds) is serialised by an
advisory lock on the event id, so replicas sharing the partitions agree on what was
parked, released and sent. Outputs for Vibeapp are queued in the same transaction, so
a record's effect and its outputs commit together; the Kafka offsets are committed
only after that. A record taken before (same coordinates) is skipped; an older
version of an entity than the ledger's changes nothing; a queued output is never
queued again: a replay from the beginning sends nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import structlog
from ticketland.v1 import ticketland_pb2 as tl

from herald.runtime.db import Connection
from herald.services.reconcile.checks import Finding, TicketState, check_refund
from herald.services.reconcile.inputs import Decoded, short_status
from herald.services.reconcile.outputs import OutputConfig, Queue
from herald.services.reconcile.store import Q

log = structlog.get_logger("herald.reconcile.ledger")
SOLD = frozenset({tl.Order.STATUS_EXECUTED, tl.Order.STATUS_DONE})
TICKET_STATUSES = {
    tl.Ticket.STATUS_UNSPECIFIED: "active",
    tl.Ticket.STATUS_ACTIVE: "active",
    tl.Ticket.STATUS_USED: "used",
    tl.Ticket.STATUS_CANCELLED: "cancelled",
}


@dataclass(frozen=True, slots=True)
class Taken:
    """A decoded input record and where it was read."""

    topic: str
    partition: int
    offset: int
    decoded: Decoded


def lock_key(d: Decoded) -> str:
    """The event whose lock a record takes."""
    m = d.message
    if isinstance(m, tl.Event):
        return m.id
    return m.event_id


class Ledger:
    """See the module docstring."""

    def __init__(self, pool: asyncpg.Pool, config: OutputConfig) -> None:
        self._pool = pool
        self._config = config

    async def take(self, items: Sequence[Taken]) -> int:
        """Applies ``items`` in one transaction; the number of outputs queued."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.fetchval(Q.lock_keys, [lock_key(i.decoded) for i in items])
            fresh = await conn.fetch(
                Q.take_inputs,
                [i.topic for i in items],
                [i.partition for i in items],
                [i.offset for i in items],
                [i.decoded.kind for i in items],
                [i.decoded.entity_id for i in items],
                [short_status(i.decoded.message) for i in items],
            )
            new = {(r["topic"], r["partition"], r["offset"]) for r in fresh}
            tx = Transaction(conn, Queue(self._config))
            for i in items:
                if (i.topic, i.partition, i.offset) in new:
                    await tx.apply(i.decoded)
            return await tx.queue.flush(conn)


class Transaction:
    """The ledger's rules, applied on one connection inside a transaction."""

    def __init__(self, conn: Connection, queue: Queue) -> None:
        self.conn = conn
        self.queue = queue

    async def apply(self, d: Decoded) -> None:
        m = d.message
        if isinstance(m, tl.Event):
            await self.event(m)
        elif isinstance(m, tl.Order):
            await self.order(m)
        else:
            await self.refund(m)

    # ------------------------------------------------------------------ events

    async def event(self, e: tl.Event) -> None:
        org = e.organizer
        legals = org.legals.SerializeToString() if org.HasField("legals") else None
        await self.conn.execute(Q.upsert_organizer, org.id, org.name, legals)
        changed = await self.conn.fetchval(
            Q.upsert_event, e.id, org.id, e.name, e.SerializeToString(), e.updated_at
        )
        if changed is None:
            return  # older than the ledger's version
        self.queue.event(e)
        released = await self.conn.fetch(Q.release_parked_orders, e.id)
        for row in released:
            self.queue.order(tl.Order.FromString(row["doc"]))
        if released:
            log.info("orders.released", event_id=e.id, orders=len(released))
            await self.release_refunds([r["id"] for r in released])

    # ------------------------------------------------------------------ orders

    async def order(self, o: tl.Order) -> None:
        row = await self.conn.fetchrow(
            Q.upsert_order,
            o.id,
            o.number,
            short_status(o),
            o.event_id,
            o.organizer_id,
            o.SerializeToString(),
            o.updated_at,
        )
        if row is None:
            return  # older than the ledger's version
        cancelled = o.status in (tl.Order.STATUS_CANCELLED, tl.Order.STATUS_EXPIRED)
        await self.conn.execute(
            Q.upsert_tickets,
            [t.id for t in o.tickets],
            [o.id] * len(o.tickets),
            [o.event_id] * len(o.tickets),
            [t.barcode for t in o.tickets],
            [t.price_nominal for t in o.tickets],
            [t.currency.upper() for t in o.tickets],
            ["cancelled" if cancelled else TICKET_STATUSES[t.status] for t in o.tickets],
        )
        before = row["before"]
        if before == "sent":
            delivery = "sent"  # Vibeapp has it; later changes reach it as refunds
        elif o.status not in SOLD:
            delivery = "not_sold"
        elif await self.conn.fetchval(Q.event_known, o.event_id):
            delivery = "sent"
            self.queue.order(o)
        else:
            delivery = "parked"
            if before != "parked":
                log.info("order.parked", order_id=o.id, event_id=o.event_id)
        if delivery != before:
            await self.conn.execute(Q.set_order_delivery, o.id, delivery)
        for waiting in await self.conn.fetch(Q.waiting_refunds, o.id):
            await self.approve(tl.RefundRequest.FromString(waiting["doc"]))
        if delivery == "sent" and before != "sent":
            await self.release_refunds([o.id])

    # ----------------------------------------------------------------- refunds

    async def refund(self, r: tl.RefundRequest) -> None:
        status = short_status(r)
        await self.conn.execute(Q.refund_history, r.id, status, r.updated_at)
        state = await self.conn.fetchval(
            Q.upsert_refund,
            r.id,
            status,
            r.order_id,
            r.event_id,
            r.organizer_id,
            r.SerializeToString(),
            r.updated_at,
            r.money.refund_nominal,
            r.money.customer,
            r.money.org,
            r.money.agent,
        )
        if state != "open":
            return  # stale, or decided before (a refund is decided once)
        if r.status == tl.RefundRequest.STATUS_APPROVED:
            await self.approve(r)
        elif r.status == tl.RefundRequest.STATUS_REJECTED:
            await self.conn.execute(Q.set_refund_state, r.id, "rejected")

    async def approve(self, r: tl.RefundRequest) -> None:
        """Checks an approved refund; sends it, holds it, or waits for its order."""
        order = await self.conn.fetchrow(Q.get_order, r.order_id)
        if order is None:
            await self.conn.execute(Q.set_refund_state, r.id, "waiting_order")
            log.info("refund.waiting_for_order", refund_id=r.id, order_id=r.order_id)
            return
        rows = await self.conn.fetch(Q.tickets_by_id, [t.ticket_id for t in r.tickets])
        tickets = {
            row["id"]: TicketState(
                row["id"], row["order_id"], row["status"], row["price_nominal"], row["refund_id"]
            )
            for row in rows
        }
        findings = check_refund(r, tickets)
        if findings:
            await self.hold(r.id, r.order_id, r.event_id, findings)
            return
        await self.conn.execute(Q.refund_tickets, r.id, [t.ticket_id for t in r.tickets])
        await self.send_or_ready(r, order)

    async def send_or_ready(self, r: tl.RefundRequest, order: asyncpg.Record) -> None:
        """The refund goes to Vibeapp now if its order went; else when the order goes."""
        if order["delivery"] == "sent":
            self.queue.refund(r, tl.Order.FromString(order["doc"]).customer)
            await self.conn.execute(Q.set_refund_state, r.id, "sent")
        else:
            await self.conn.execute(Q.set_refund_state, r.id, "ready")

    async def hold(
        self, refund_id: str, order_id: str, event_id: str, findings: Sequence[Finding]
    ) -> None:
        await self.store_findings(refund_id, refund_id, order_id, event_id, findings)
        await self.conn.execute(Q.set_refund_state, refund_id, "held")
        log.warning("refund.held", refund_id=refund_id, findings=sorted({f.kind for f in findings}))

    async def store_findings(
        self,
        owner: str,
        refund_id: str,
        order_id: str,
        event_id: str,
        findings: Sequence[Finding],
    ) -> None:
        await self.conn.execute(
            Q.insert_discrepancies,
            [f.id_for(owner) for f in findings],
            [f.kind for f in findings],
            [refund_id] * len(findings),
            [order_id] * len(findings),
            [f.ticket_id for f in findings],
            [event_id] * len(findings),
            [f.expected for f in findings],
            [f.actual for f in findings],
            [f.description for f in findings],
        )

    async def release_refunds(self, order_ids: list[str]) -> None:
        """Refunds that were ready and waited for their order to go: they go now."""
        released = await self.conn.fetch(Q.release_ready_refunds, order_ids)
        customers: dict[str, tl.Customer] = {}
        for row in released:
            if row["order_id"] not in customers:
                order = await self.conn.fetchrow(Q.get_order, row["order_id"])
                assert order is not None  # the refund was ready: its order is known
                customers[row["order_id"]] = tl.Order.FromString(order["doc"]).customer
            self.queue.refund(tl.RefundRequest.FromString(row["doc"]), customers[row["order_id"]])
