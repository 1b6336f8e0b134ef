"""Operator actions on the ledger: resolving a discrepancy (which may release a held
refund) and running a reconciliation (with repair)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

import asyncpg
import structlog
from herald.reconcile.v1 import reconcile_pb2 as pb
from ticketland.v1 import ticketland_pb2 as tl

from herald.runtime.announcements import Announcements
from herald.runtime.db import Connection
from herald.runtime.errors import FailedPrecondition, NotFound
from herald.runtime.publisher import Alert
from herald.runtime.timestamps import datetime_of, timestamp
from herald.runtime.tracing import current_traceparent
from herald.services.reconcile.apply import ticket_states
from herald.services.reconcile.checks import Finding, check_refund, order_mismatch
from herald.services.reconcile.ledger import Transaction
from herald.services.reconcile.outputs import OutputConfig, Queue
from herald.services.reconcile.reconciliation import Outcome, Repair, compare
from herald.services.reconcile.store import Q

log = structlog.get_logger("herald.reconcile.reconciler")
RECONCILED_TYPE = "integration.cash.reconciled"
RECONCILED_SCHEMA = "urn:herald:schema:integration.cash.reconciled:1.0"


class Reconciler:
    """See the module docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        config: OutputConfig,
        announcements: Announcements,
        on_queued: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._config = config
        self._announcements = announcements
        self._on_queued = on_queued

    # -------------------------------------------------------------- resolving

    async def resolve(
        self, discrepancy_id: uuid.UUID, resolution: str, note: str
    ) -> tuple[asyncpg.Record, bool]:
        """Resolves an open discrepancy; (its row, whether its refund went to Vibeapp)."""
        first = await self._pool.fetchrow(Q.get_discrepancy, discrepancy_id)
        if first is None:
            raise NotFound(f"discrepancy {discrepancy_id} does not exist")
        keys = {first["event_id"]}
        if first["refund_id"]:  # a release touches its order's event: its lock too
            keys.update(await self._pool.fetchval(Q.refund_lock_keys, first["refund_id"]) or ())
        async with self._pool.acquire() as conn, conn.transaction():
            if keys - {""}:
                await conn.fetchval(Q.lock_keys, sorted(keys - {""}))
            row = await conn.fetchrow(Q.get_discrepancy_for_update, discrepancy_id)
            assert row is not None  # never deleted
            if row["status"] != "open":
                raise FailedPrecondition(f"discrepancy {discrepancy_id} is already {row['status']}")
            row = await conn.fetchrow(Q.resolve_discrepancy, discrepancy_id, resolution, note)
            assert row is not None
            tx = Transaction(conn, Queue(self._config))
            released = False
            if row["refund_id"]:
                released = await self._settle_refund(tx, row["refund_id"])
            queued = await tx.queue.flush(conn)
        if queued:
            self._on_queued()
        return row, released

    async def _settle_refund(self, tx: Transaction, refund_id: str) -> bool:
        """Once no discrepancy of a held refund is open: blocked if one was rejected,
        else released (its tickets refunded; sent once its order has gone)."""
        found = await tx.conn.fetch(Q.refund_discrepancies, refund_id)
        statuses = {row["status"] for row in found}
        refund = await tx.conn.fetchrow(Q.get_refund, refund_id)
        if "open" in statuses or refund is None or refund["state"] != "held":
            return False
        if refund["status"] != "APPROVED":  # Ticketland took it back: never sent
            return False
        if "rejected" in statuses:
            await tx.conn.execute(Q.set_refund_state, refund_id, "blocked")
            log.info("refund.blocked", refund_id=refund_id)
            return False
        r = tl.RefundRequest.FromString(refund["doc"])
        order = await tx.conn.fetchrow(Q.get_order, r.order_id)
        if order is None:
            # Accepting an unknown order means waiting for it: the refund is checked
            # when the order arrives, like any other.
            await tx.conn.execute(Q.set_refund_state, refund_id, "waiting_order")
            return False
        if new := await _new_findings(tx, r, order, {row["id"] for row in found}):
            # The ledger moved on while the refund was held (another refund took its
            # ticket, the ticket was used): what was accepted is not what would be sent.
            await tx.hold(r.id, r.order_id, order["event_id"], new)
            return False
        await tx.conn.execute(Q.refund_tickets, r.id, [t.ticket_id for t in r.tickets])
        await tx.send_or_ready(r, order)
        log.info("refund.released", refund_id=refund_id, order_delivery=order["delivery"])
        return bool(order["delivery"] == "sent")

    # ---------------------------------------------------------- reconciliation

    async def run(self, request: pb.RunReconciliationRequest) -> pb.ReconciliationReport:
        """Compares, repairs if asked, stores the report and announces its totals."""
        async with self._pool.acquire() as conn:
            ledger = await _in_scope(conn, request)
        rows = (ledger.orders, ledger.refunds, ledger.tickets)
        outcome = compare(*([dict(r) for r in part] for part in rows))
        missing = sum(r["missing"] for r in ledger.inputs.values())
        if missing:
            outcome.find(
                "input_not_in_ledger", "", f"{missing} input records name entities the ledger lacks"
            )
        repaired = await self._repaired(outcome) if request.repair else 0
        report = _report(request, outcome, ledger, repaired)
        # The report and its announcement are stored together: one exists if the other does.
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(Q.insert_report, uuid.UUID(report.id), report.SerializeToString())
            await self._announcements.add_within(conn, _reconciled(report))
        self._announcements.wake()
        log.info(
            "reconciliation.done",
            report_id=report.id,
            findings=len(report.findings),
            repaired=repaired,
            balanced=report.balanced,
        )
        return report

    async def _repaired(self, outcome: Outcome) -> int:
        """Repairs what ``outcome`` can repair and marks its findings so; how many."""
        if not outcome.repairs:
            return 0
        done = await self._repair(outcome.repairs)
        repaired = 0
        for finding in outcome.findings:
            if outcome.repaired_by(finding, done):
                finding.repaired = True
                repaired += 1
        return repaired

    async def _repair(self, repairs: list[Repair]) -> set[str]:
        """Queues each missing output again (an order with its event first)."""
        done: set[str] = set()
        for item in repairs:
            async with self._pool.acquire() as conn, conn.transaction():
                tx = Transaction(conn, Queue(self._config))
                repair = _repair_order if item.kind == "order" else _repair_refund
                if await repair(tx, item.entity_id):
                    done.add(item.entity_id)
                await tx.queue.flush(conn)
        if done:
            self._on_queued()
        return done


async def _new_findings(
    tx: Transaction, r: tl.RefundRequest, order: asyncpg.Record, known: set[uuid.UUID]
) -> list[Finding]:
    """The refund's checks against the ledger as it is now (its ``order``'s row), but
    for the findings already stored for it (``known``: an accepted one stays accepted)."""
    tickets = await ticket_states(tx.conn, {t.ticket_id for t in r.tickets})
    found = order_mismatch(r, order["event_id"], order["organizer_id"]) + check_refund(r, tickets)
    return [f for f in found if f.id_for(r.id) not in known]


class _InScope(NamedTuple):
    """What the ledger holds in a reconciliation's scope."""

    orders: list[asyncpg.Record]
    refunds: list[asyncpg.Record]
    tickets: list[asyncpg.Record]  # the orders' refunded tickets
    inputs: dict[str, asyncpg.Record]  # the input records' counts, by kind
    open_count: int  # open discrepancies
    # Set when the scope reaches before it: input records taken earlier were purged.
    inputs_purged_before: datetime | None


async def _in_scope(conn: Connection, request: pb.RunReconciliationRequest) -> _InScope:
    """The ledger's rows in the request's scope: one event, or a time range."""
    event_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    if request.WhichOneof("scope") == "event_id":
        event_id = request.event_id
    else:
        start = datetime_of(request.range.start_time, "range.start_time")
        end = datetime_of(request.range.end_time, "range.end_time")
    orders = await conn.fetch(Q.report_orders, event_id, start, end)
    refunds = await conn.fetch(Q.report_refunds, event_id, start, end)
    order_ids = [o["id"] for o in orders]
    tickets = await conn.fetch(Q.report_refunded_tickets, order_ids)
    entity_ids = None
    if event_id is not None:
        entity_ids = [event_id, *order_ids, *(r["id"] for r in refunds)]
    inputs = {r["kind"]: r for r in await conn.fetch(Q.report_inputs, entity_ids, start, end)}
    open_count = await conn.fetchval(Q.open_discrepancies_in_scope, event_id, start, end)
    purged = await _purged_in_scope(conn, event_id, start)
    return _InScope(orders, refunds, tickets, inputs, open_count, purged)


async def _purged_in_scope(
    conn: Connection, event_id: str | None, start: datetime | None
) -> datetime | None:
    """When input records were purged before, if the scope reaches before then: a
    range starting earlier, or an event whose entities were first seen earlier."""
    purged: datetime | None = await conn.fetchval(Q.inputs_purged_before)
    if purged is None:
        return None
    since = start if event_id is None else await conn.fetchval(Q.scope_first_seen, event_id)
    return purged if since is not None and since < purged else None


def _report(
    request: pb.RunReconciliationRequest, outcome: Outcome, ledger: _InScope, repaired: int
) -> pb.ReconciliationReport:
    """The report of a comparison (a new id, made now)."""
    inputs = ledger.inputs
    report = pb.ReconciliationReport(
        id=str(uuid.uuid4()),
        create_time=timestamp(datetime.now(UTC)),
        request=request,
        totals=outcome.totals,
        events=sorted(outcome.events.values(), key=lambda e: e.event_id),
        organizers=sorted(outcome.organizers.values(), key=lambda o: o.organizer_id),
        inputs=pb.InputTotals(
            order_records=_get(inputs, "order", "records"),
            refund_records=_get(inputs, "refund", "records"),
            event_records=_get(inputs, "event", "records"),
            distinct_orders=_get(inputs, "order", "entities"),
            distinct_refunds=_get(inputs, "refund", "entities"),
            approved_refunds=_get(inputs, "refund", "approved"),
        ),
        findings=outcome.findings,
        repaired=repaired,
        balanced=not outcome.findings,
        open_discrepancies=ledger.open_count,
    )
    if ledger.inputs_purged_before is not None:
        report.inputs_purged_before.CopyFrom(timestamp(ledger.inputs_purged_before))
    return report


def _get(inputs: dict[str, asyncpg.Record], kind: str, column: str) -> int:
    row = inputs.get(kind)
    return int(row[column]) if row is not None else 0


async def _lock_order(conn: Connection, order_id: str) -> asyncpg.Record | None:
    row = await conn.fetchrow(Q.get_order, order_id)
    if row is None:
        return None
    await conn.fetchval(Q.lock_keys, [row["event_id"]])
    return await conn.fetchrow(Q.get_order, order_id)


async def _repair_order(tx: Transaction, order_id: str) -> bool:
    order = await _lock_order(tx.conn, order_id)
    if order is None:
        return False
    event_doc = await tx.conn.fetchval(Q.event_doc, order["event_id"])
    if event_doc is None:
        return False  # still waiting for its event
    if not await tx.conn.fetchval(Q.outputs_of, "event", order["event_id"]):
        tx.queue.event(tl.Event.FromString(event_doc))
    tx.queue.order(tl.Order.FromString(order["doc"]))
    if order["delivery"] != "sent":
        await tx.conn.execute(Q.set_order_delivery, order_id, "sent")
    await tx.release_refunds([order_id])
    log.warning("repair.order_queued", order_id=order_id)
    return True


# A refund a repair may send again: one already sent (Vibeapp lacks it), or one waiting
# only for its order to be sent.
REPAIRABLE_REFUND_STATES = frozenset({"sent", "ready"})


async def _repair_refund(tx: Transaction, refund_id: str) -> bool:
    refund = await tx.conn.fetchrow(Q.get_refund, refund_id)
    if refund is None:
        return False
    order = await _lock_order(tx.conn, refund["order_id"])
    if order is None or order["delivery"] != "sent":
        return False
    # Read again under the lock: the comparison's snapshot is older, and the refund may
    # have been withdrawn (rejected, its tickets given back) since.
    refund = await tx.conn.fetchrow(Q.get_refund, refund_id)
    if refund is None or refund["state"] not in REPAIRABLE_REFUND_STATES:
        return False
    r = tl.RefundRequest.FromString(refund["doc"])
    tx.queue.refund(r, tl.Order.FromString(order["doc"]))
    await tx.conn.execute(Q.set_refund_state, refund_id, "sent")
    log.warning("repair.refund_queued", refund_id=refund_id)
    return True


def _range_of(request: pb.RunReconciliationRequest) -> dict[str, str]:
    """A range report's start_time and end_time (RFC 3339); nothing for an event's."""
    if request.WhichOneof("scope") != "range":
        return {}
    return {
        "start_time": request.range.start_time.ToJsonString(),
        "end_time": request.range.end_time.ToJsonString(),
    }


def _purged_of(report: pb.ReconciliationReport) -> dict[str, str]:
    """A report's inputs_purged_before (RFC 3339), when its input totals miss records."""
    if not report.HasField("inputs_purged_before"):
        return {}
    return {"inputs_purged_before": report.inputs_purged_before.ToJsonString()}


def _reconciled(report: pb.ReconciliationReport) -> Alert:
    """The ``integration.cash.reconciled`` event of a report: its totals."""
    t = report.totals
    return Alert(
        RECONCILED_TYPE,
        report.id,
        f"reports/{report.id}",
        {
            "report_id": report.id,
            "event_id": report.request.event_id,
            **_range_of(report.request),
            "balanced": report.balanced,
            "findings": len(report.findings),
            "repaired": report.repaired,
            "orders": t.orders,
            "tickets_sold": t.tickets_sold,
            "sold_amount": t.sold_amount,
            "tickets_refunded": t.tickets_refunded,
            "refunded_amount": t.refunded_amount,
            "orders_sent": t.orders_sent,
            "tickets_sent": t.tickets_sent,
            "tickets_refunded_sent": t.tickets_refunded_sent,
            "amounts": [
                {
                    "currency": a.currency,
                    "sold_amount": a.sold_amount,
                    "refunded_amount": a.refunded_amount,
                }
                for a in t.amounts
            ],
            **_purged_of(report),
        },
        RECONCILED_SCHEMA,
        # Under the RunReconciliation call's trace: its caller sees the event it made.
        traceparent=current_traceparent() or "",
    )
