"""The ledger's rules applied to a whole batch at once: a fixed number of statements
per batch (each over arrays), not per record, in the order events → orders → refunds,
then what they release.

Within a batch the latest version of each entity is applied (by its ``updated_at``;
the ledger keeps it only if not older than its own); every refund status is recorded
in the history. Refund checks run in Python over the batch's view of the tickets, so
two refunds of one ticket in one batch are found as they would be one after another.
What waited is released last, once the batch's own versions are in: an order parked
for its event goes as the batch left it (not sent if the batch cancelled it), a refund
ready for its order goes only if the batch did not take it back, and a refund waiting
for its order is checked in the batch's newest version.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import structlog
from ticketland.v1 import ticketland_pb2 as tl

from herald.runtime.db import Connection
from herald.services.reconcile.checks import (
    REFUND_CHECK_KINDS,
    Finding,
    TicketState,
    changed_since,
    check_refund,
    order_mismatch,
    reversal,
    withdrawal,
)
from herald.services.reconcile.inputs import SOLD, short_status
from herald.services.reconcile.outputs import Queue
from herald.services.reconcile.store import Q

log = structlog.get_logger("herald.reconcile.ledger")
CANCELLED = frozenset({tl.Order.STATUS_CANCELLED, tl.Order.STATUS_EXPIRED})
TICKET_STATUSES = {
    tl.Ticket.STATUS_UNSPECIFIED: "active",
    tl.Ticket.STATUS_ACTIVE: "active",
    tl.Ticket.STATUS_USED: "used",
    tl.Ticket.STATUS_CANCELLED: "cancelled",
}
M = TypeVar("M", tl.Event, tl.Order, tl.RefundRequest)


def latest(messages: Iterable[M]) -> list[M]:
    """One message per id: the newest by updated_at (the later one on a tie)."""
    out: dict[str, M] = {}
    for m in messages:
        held = out.get(m.id)
        if held is None or m.updated_at >= held.updated_at:
            out[m.id] = m
    return list(out.values())


def _delivery(o: tl.Order, known_events: set[str]) -> str:
    """Where an order not yet sent goes: to Vibeapp once its event is known."""
    if o.status not in SOLD:
        return "not_sold"
    return "sent" if o.event_id in known_events else "parked"


@dataclass(frozen=True, slots=True)
class Found:
    """A finding and what it concerns; ``owner`` (a refund or order id) derives its id."""

    owner: str
    refund_id: str
    order_id: str
    event_id: str
    finding: Finding


async def store_findings(conn: Connection, found: Sequence[Found]) -> None:
    """Stores discrepancies; one already stored (same owner, kind, ticket) is kept, or
    opened again if the ledger had settled it. The same one found twice (a ticket named
    three times in a refund) is stored once."""
    unique: dict[uuid.UUID, Found] = {}
    for x in found:
        unique.setdefault(x.finding.id_for(x.owner), x)
    found = list(unique.values())
    await conn.execute(
        Q.insert_discrepancies,
        list(unique),
        [x.finding.kind for x in found],
        [x.refund_id for x in found],
        [x.order_id for x in found],
        [x.finding.ticket_id for x in found],
        [x.event_id for x in found],
        [x.finding.expected for x in found],
        [x.finding.actual for x in found],
        [x.finding.description for x in found],
    )


async def ticket_states(conn: Connection, ids: Iterable[str]) -> dict[str, TicketState]:
    """The ledger's tickets among ``ids``, for the refund checks."""
    return {
        row["id"]: TicketState(
            row["id"], row["order_id"], row["status"], row["price_nominal"], row["refund_id"]
        )
        for row in await conn.fetch(Q.tickets_by_id, list(ids))
    }


class BatchApply:
    """Applies one batch on ``conn`` (inside its transaction); outputs go to ``queue``."""

    def __init__(self, conn: Connection, queue: Queue) -> None:
        self.conn = conn
        self.queue = queue
        self._states: list[tuple[str, str]] = []  # (refund id, state)
        self._refunded: list[tuple[str, str]] = []  # (ticket id, refund id)
        self._findings: list[Found] = []
        self._withdrawn: list[str] = []  # refunds Ticketland rejected before they went
        # (ticket id, status, refund id, whether its order lists it)
        self._unrefunded: list[tuple[str, str, str, bool]] = []
        # Refunds checked in this batch and the ids of every finding (decided or not).
        self._checked: dict[str, list[uuid.UUID]] = {}
        self._incoming: dict[str, tl.RefundRequest] = {}  # the batch's newest refunds
        self._first_seen: set[str] = set()  # refunds new to the ledger in this batch

    async def run(
        self,
        events: Sequence[tl.Event],
        orders: Sequence[tl.Order],
        refunds: Sequence[tl.RefundRequest],
    ) -> None:
        self._incoming = {r.id: r for r in latest(refunds)}
        arrived = await self.events(latest(events)) if events else []
        sent_now = await self.orders(latest(orders)) if orders else []
        if refunds:
            await self.refunds(refunds)
        await self._write()
        await self._release(arrived, sent_now)

    # ------------------------------------------------------------------ events

    async def events(self, events: list[tl.Event]) -> list[str]:
        """Applies ``events``; the ids of those applied (their parked orders are
        released at the end, see :meth:`_release`)."""
        organizers = {e.organizer.id: e.organizer for e in events}
        await self.conn.execute(
            Q.upsert_organizers,
            list(organizers),
            [g.name for g in organizers.values()],
            [
                g.legals.SerializeToString() if g.HasField("legals") else None
                for g in organizers.values()
            ],
        )
        applied = {
            r["id"]
            for r in await self.conn.fetch(
                Q.upsert_events,
                [e.id for e in events],
                [e.organizer.id for e in events],
                [e.name for e in events],
                [e.SerializeToString() for e in events],
                [e.updated_at for e in events],
            )
        }
        for e in events:
            if e.id in applied:
                self.queue.event(e)
        return [e.id for e in events if e.id in applied]

    async def _release(self, arrived: list[str], sent_now: list[str]) -> None:
        """Orders parked for the events that ``arrived`` go (as the batch left them: one
        it cancelled is no longer parked), then the refunds ready for those orders and
        for the orders ``sent_now`` (as the batch left them: written by then)."""
        ids = list(sent_now)
        if arrived:
            released = await self.conn.fetch(Q.release_parked_orders_of, arrived)
            for row in released:
                self.queue.order(tl.Order.FromString(row["doc"]))
            if released:
                log.info("orders.released", orders=len(released))
                out = [r["id"] for r in released]
                await self.conn.execute(
                    Q.settle_arrived, "order_parked_too_long", out, "settled: the event arrived"
                )
                ids += out
        if ids:
            await self.release_refunds(ids)

    # ------------------------------------------------------------------ orders

    async def orders(self, orders: list[tl.Order]) -> list[str]:
        """Applies ``orders``; the ids of those sent now (their ready refunds go at
        the end, see :meth:`_release`)."""
        known = {
            r["id"]
            for r in await self.conn.fetch(Q.known_events, list({o.event_id for o in orders}))
        }
        deliveries = [_delivery(o, known) for o in orders]
        rows = await self.conn.fetch(
            Q.upsert_orders,
            [o.id for o in orders],
            [o.number for o in orders],
            [short_status(o) for o in orders],
            [o.event_id for o in orders],
            [o.organizer_id for o in orders],
            [o.SerializeToString() for o in orders],
            [o.updated_at for o in orders],
            deliveries,
        )
        before = {r["id"]: r["before"] for r in rows}
        applied = [o for o in orders if o.id in before]
        if not applied:
            return []
        await self._tickets(applied)
        # New versions of orders known before: tickets they no longer list were taken out.
        changed = [o for o in applied if before[o.id] is not None]
        if changed:
            await self.conn.execute(
                Q.cancel_removed_tickets,
                [o.id for o in changed],
                [t.id for o in changed for t in o.tickets],
            )
        sent_now: list[str] = []
        for o, delivery in zip(orders, deliveries, strict=True):
            if o.id not in before:
                continue  # not applied (older than the ledger's): nothing to do
            was = before[o.id]
            if was == "sent":
                # Vibeapp has an earlier version. A sale that changed what Vibeapp reads
                # (a ticket added, a barcode or the customer corrected) goes again under
                # the same key; the outbox adds nothing for content it already holds, so
                # a change Vibeapp does not see (a ticket scanned) sends nothing.
                if delivery == "sent":
                    self.queue.order(o)
                continue
            if delivery == "sent":
                self.queue.order(o)
                sent_now.append(o.id)
            elif delivery == "parked" and was != "parked":
                log.info("order.parked", order_id=o.id, event_id=o.event_id)
        ids = [o.id for o in applied]
        waiting = list(await self.conn.fetch(Q.waiting_refunds_of, ids))
        late = await self.conn.fetch(Q.refunds_held_for_their_order, ids)
        if late:  # held because the order was unknown: checked now that it is here
            await self.conn.execute(
                Q.settle_arrived,
                "unknown_order",
                [r["id"] for r in late],
                "settled: the order arrived; the refund was checked then",
            )
        if waiting or late:
            await self.approve([self._newest(w["doc"]) for w in [*waiting, *late]])
        return sent_now

    def _newest(self, doc: bytes) -> tl.RefundRequest:
        """A stored refund, or its version in this batch if that one is applied (not
        older): what waited is checked as the batch leaves it (taken back: not at all)."""
        stored = tl.RefundRequest.FromString(doc)
        incoming = self._incoming.get(stored.id)
        if incoming is not None and incoming.updated_at >= stored.updated_at:
            return incoming
        return stored

    async def _tickets(self, orders: list[tl.Order]) -> None:
        tickets: dict[str, tuple[str, str, str, int, str, str]] = {}
        for o in orders:
            for t in o.tickets:
                status = "cancelled" if o.status in CANCELLED else TICKET_STATUSES[t.status]
                tickets[t.id] = (
                    o.id,
                    o.event_id,
                    t.barcode,
                    t.price_nominal,
                    t.currency.upper(),
                    status,
                )
        if tickets:
            values = list(tickets.values())
            await self.conn.execute(
                Q.upsert_tickets, list(tickets), *([v[i] for v in values] for i in range(6))
            )

    # ----------------------------------------------------------------- refunds

    async def refunds(self, refunds: Sequence[tl.RefundRequest]) -> None:
        statuses = [short_status(r) for r in refunds]
        await self.conn.execute(
            Q.refund_history_many,
            [r.id for r in refunds],
            statuses,
            [r.updated_at for r in refunds],
        )
        newest = latest(refunds)
        rows = await self.conn.fetch(
            Q.upsert_refunds,
            [r.id for r in newest],
            [short_status(r) for r in newest],
            [r.order_id for r in newest],
            [r.event_id for r in newest],
            [r.organizer_id for r in newest],
            [r.SerializeToString() for r in newest],
            [r.updated_at for r in newest],
            [r.money.refund_nominal for r in newest],
            [r.money.customer for r in newest],
            [r.money.org for r in newest],
            [r.money.agent for r in newest],
        )
        states = {r["id"]: r["state"] for r in rows}  # the refunds this batch updated
        before = {r["id"]: r["before"] for r in rows}
        self._first_seen = {i for i, doc in before.items() if doc is None}
        decided = dict(self._states)  # what this batch's orders did with waiting refunds
        approved = []
        withdrawn: list[tuple[tl.RefundRequest, str, str]] = []
        for r in newest:
            state = states.get(r.id)
            if state is None:
                continue
            state = decided.get(r.id, state)
            if back := reversal(r, status := short_status(r), state):
                self._findings.append(Found(r.id, r.id, r.order_id, r.event_id, back))
                log.warning("refund.reversed", refund_id=r.id, status=status)
            if (now := withdrawal(status, state)) is not None:
                withdrawn.append((r, state, now))
                continue
            if _approved_again(r, state):
                if r.id not in self._checked and changed_since(before[r.id], r):
                    # Not sent yet, and not what was checked: checked as it is now.
                    log.info("refund.changed", refund_id=r.id, state=state)
                    approved.append(r)
                continue
            if state != "open":  # a refund is decided once
                continue
            if r.status == tl.RefundRequest.STATUS_APPROVED:
                approved.append(r)
            elif r.status == tl.RefundRequest.STATUS_REJECTED:
                self._states.append((r.id, "rejected"))
                self._withdrawn.append(r.id)  # held once, taken back: nothing to decide
        if withdrawn:
            await self.withdraw(withdrawn)
        was = {r.id: decided.get(r.id, states[r.id]) for r in approved}
        if approved:
            # One held for its unknown order, naming the same order still, stays held
            # until the order comes (checked then, as it is then).
            await self.approve(approved, keep_held=_same_order(approved, was, before))
        # Ready ones approved again with other data: what they refunded and do not
        # refund again now (held now: all of it) is undone.
        if changed := [i for i, w in was.items() if w == "ready"]:
            await self._undo_refunds(changed, keep_this_batch=True)

    async def withdraw(self, refunds: Sequence[tuple[tl.RefundRequest, str, str]]) -> None:
        """Approved refunds Vibeapp does not have yet that Ticketland took back
        (refund, its state, its new state): none is sent. Tickets one had refunded
        (ready: waiting for its order to go) are again as their order says; a rejected
        one's open discrepancies are settled, nothing is left to decide."""
        await self._undo_refunds([r.id for r, _, _ in refunds], keep_this_batch=False)
        for r, was, now in refunds:
            self._states.append((r.id, now))
            if now == "rejected":
                self._withdrawn.append(r.id)
            log.warning("refund.withdrawn", refund_id=r.id, state=was, status=short_status(r))

    async def _undo_refunds(self, refund_ids: Sequence[str], *, keep_this_batch: bool) -> None:
        """What refunds ``refund_ids`` refunded in the ledger is undone (each ticket as
        its order says). This batch's refunding by them is dropped too, or
        (``keep_this_batch``: they were checked again just now) kept, and a ticket they
        refund again is left as it is."""
        ids = set(refund_ids)
        again = {x for x in self._refunded if x[1] in ids} if keep_this_batch else set()
        self._refunded = [x for x in self._refunded if x[1] not in ids or x in again]
        for row in await self.conn.fetch(Q.tickets_refunded_by, list(ids)):
            if (row["id"], row["refund_id"]) in again:
                continue
            status, listed = _as_ordered(row["id"], row["order_doc"])
            self._unrefunded.append((row["id"], status, row["refund_id"], listed))

    async def approve(
        self, refunds: Sequence[tl.RefundRequest], keep_held: Iterable[str] = ()
    ) -> None:
        """Checks approved refunds; each is sent, held, or waits for its order (but
        those of ``keep_held``, held now, stay held while their order is unknown)."""
        held = set(keep_held)
        orders = {
            r["id"]: r
            for r in await self.conn.fetch(Q.orders_by_id, list({r.order_id for r in refunds}))
        }
        tickets = await ticket_states(self.conn, {t.ticket_id for r in refunds for t in r.tickets})
        for r in refunds:
            if r.status != tl.RefundRequest.STATUS_APPROVED:
                continue  # Ticketland took it back meanwhile (see withdraw)
            order = orders.get(r.order_id)
            if order is None and r.id in held:
                continue  # its unknown_order stays open; checked when the order comes
            if order is None:
                self._states.append((r.id, "waiting_order"))
                log.info("refund.waiting_for_order", refund_id=r.id, order_id=r.order_id)
                continue
            findings = order_mismatch(r, order["event_id"], order["organizer_id"])
            findings += check_refund(r, tickets)
            self._checked[r.id] = [f.id_for(r.id) for f in findings]
            if findings:  # as an operator decided them, if approved before (see withdraw)
                decided = {
                    row["id"]: row["status"]
                    for row in await self.conn.fetch(
                        Q.decided_discrepancies, [f.id_for(r.id) for f in findings]
                    )
                }
                if "rejected" in decided.values():
                    self._states.append((r.id, "blocked"))
                    continue
                findings = [f for f in findings if f.id_for(r.id) not in decided]
            if findings:
                # Under the order's event: the one reports and operators' locks go by.
                ev = order["event_id"]
                self._findings += [Found(r.id, r.id, r.order_id, ev, f) for f in findings]
                self._states.append((r.id, "held"))
                log.warning(
                    "refund.held", refund_id=r.id, findings=sorted({f.kind for f in findings})
                )
                continue
            for t in r.tickets:  # what later refunds of this batch see
                known = tickets.get(t.ticket_id)
                if known is None:  # not in the ledger: an operator accepted that
                    continue
                tickets[t.ticket_id] = TicketState(
                    known.id, known.order_id, "refunded", known.price_nominal, r.id
                )
                self._refunded.append((t.ticket_id, r.id))
            if order["delivery"] == "sent":
                self.queue.refund(r, tl.Order.FromString(order["doc"]))
                self._states.append((r.id, "sent"))
            else:
                self._states.append((r.id, "ready"))

    async def approve_waiting(self, refunds: Sequence[tl.RefundRequest]) -> None:
        """Checks refunds that waited for their order, now known, and writes what that
        decided (outside a batch: the sweeper's)."""
        await self.approve(refunds)
        await self._write()

    async def release_refunds(self, order_ids: list[str]) -> None:
        await release_refunds(self.conn, self.queue, order_ids)

    # -------------------------------------------------------------------- writes

    async def _write(self) -> None:
        if self._findings:
            await store_findings(self.conn, self._findings)
        # Checked against its order (an unknown_order no longer holds), but not those new
        # in this batch: they have nothing stored to settle.
        if again := {i: ids for i, ids in self._checked.items() if i not in self._first_seen}:
            await self.conn.execute(
                Q.settle_not_found_again,
                list(again),
                [i for ids in again.values() for i in ids],
                [*REFUND_CHECK_KINDS, "unknown_order"],
                "settled: not found when the refund was checked again (approved again, "
                "or approved with other data)",
            )
        if self._unrefunded:  # first: a refund checked again refunds its tickets anew
            await self.conn.execute(
                Q.unrefund_tickets, *([x[i] for x in self._unrefunded] for i in range(4))
            )
        if self._refunded:
            await self.conn.execute(
                Q.refund_tickets_many,
                [t for t, _ in self._refunded],
                [r for _, r in self._refunded],
            )
        if self._withdrawn:
            await self.conn.execute(
                Q.settle_withdrawn,
                self._withdrawn,
                "settled: Ticketland rejected the refund; it is not sent to Vibeapp",
            )
        if self._states:
            final = dict(self._states)  # the last state set for a refund wins
            await self.conn.execute(Q.set_refund_states, list(final), list(final.values()))


def _same_order(
    refunds: Sequence[tl.RefundRequest], was: dict[str, str], before: dict[str, bytes | None]
) -> set[str]:
    """The held ones among ``refunds`` whose version before named the same order."""
    return {
        r.id
        for r in refunds
        if was[r.id] == "held"
        and (doc := before.get(r.id)) is not None
        and tl.RefundRequest.FromString(doc).order_id == r.order_id
    }


def _approved_again(r: tl.RefundRequest, state: str) -> bool:
    """A newer APPROVED version of a refund approved before that Vibeapp does not have
    yet and that has been checked (held by a finding, or ready for its order)."""
    return r.status == tl.RefundRequest.STATUS_APPROVED and state in ("ready", "held")


def _as_ordered(ticket_id: str, order_doc: bytes) -> tuple[str, bool]:
    """A ticket's status as its order says (a refund the ticket went with was
    withdrawn), and whether the order lists it: one it no longer lists (kept while
    refunded) was taken out of the sale meanwhile, cancelled."""
    o = tl.Order.FromString(order_doc)
    for t in o.tickets:
        if t.id == ticket_id:
            return ("cancelled" if o.status in CANCELLED else TICKET_STATUSES[t.status]), True
    return "cancelled", False


async def release_refunds(conn: Connection, queue: Queue, order_ids: list[str]) -> None:
    """Refunds that were ready and waited for their order to go: they go now."""
    released = await conn.fetch(Q.release_ready_refunds, order_ids)
    if not released:
        return
    orders = {
        r["id"]: tl.Order.FromString(r["doc"])
        for r in await conn.fetch(Q.orders_by_id, list({row["order_id"] for row in released}))
    }
    for row in released:
        queue.refund(tl.RefundRequest.FromString(row["doc"]), orders[row["order_id"]])
