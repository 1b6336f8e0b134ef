"""ReconcileService over gRPC: the ledger's tickets and orders, discrepancies, and
reconciliation reports."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import grpc
import structlog
from herald.reconcile.v1 import reconcile_pb2 as pb
from herald.reconcile.v1 import reconcile_pb2_grpc
from ticketland.v1 import ticketland_pb2 as tl

from herald.runtime.errors import FieldViolation, InvalidArgument, NotFound
from herald.runtime.pagination import SortKey, page_of
from herald.runtime.timestamps import datetime_of, timestamp
from herald.services.reconcile.reconciler import Reconciler
from herald.services.reconcile.store import Q

log = structlog.get_logger("herald.reconcile")
Context = grpc.aio.ServicerContext[Any, Any]
# The order of list_discrepancies (its ORDER BY).
DISCREPANCY_ORDER = SortKey(("detected_at", datetime), ("id", uuid.UUID))
TICKET_STATUSES = {
    "active": pb.TICKET_STATUS_ACTIVE,
    "used": pb.TICKET_STATUS_USED,
    "cancelled": pb.TICKET_STATUS_CANCELLED,
    "refunded": pb.TICKET_STATUS_REFUNDED,
}
DELIVERIES = {
    "parked": pb.ORDER_DELIVERY_PARKED,
    "sent": pb.ORDER_DELIVERY_SENT,
    "not_sold": pb.ORDER_DELIVERY_NOT_SOLD,
}
KINDS = {
    pb.DiscrepancyKind.Name(k).removeprefix("DISCREPANCY_KIND_").lower(): k
    for k in pb.DiscrepancyKind.values()
    if k
}
STATUSES = {
    pb.DiscrepancyStatus.Name(s).removeprefix("DISCREPANCY_STATUS_").lower(): s
    for s in pb.DiscrepancyStatus.values()
    if s
}

# Longest note and id an RPC takes: a note is stored and listed with its discrepancy
# (two notes of 3 MiB made a page of ListDiscrepancies larger than gRPC sends); an id
# longer than this names nothing the ledger holds, and a report stores its request.
MAX_NOTE_CHARS = 2_000
MAX_ID_CHARS = 1_000

KIND_NAMES: dict[int, str] = {number: name for name, number in KINDS.items()}
STATUS_NAMES: dict[int, str] = {number: name for name, number in STATUSES.items()}


def ticket_of(row: asyncpg.Record) -> pb.Ticket:
    """The API's Ticket of a ledger row (get_ticket)."""
    return pb.Ticket(
        id=row["id"],
        order_id=row["order_id"],
        event_id=row["event_id"],
        barcode=row["barcode"],
        status=TICKET_STATUSES[row["status"]],
        price_nominal=row["price_nominal"],
        currency=row["currency"],
        refund_id=row["refund_id"] or "",
        updated_time=timestamp(row["updated_at"]),
    )


def discrepancy_of(row: asyncpg.Record) -> pb.Discrepancy:
    """The API's Discrepancy of a ledger row."""
    return pb.Discrepancy(
        id=str(row["id"]),
        kind=KINDS[row["kind"]],
        status=STATUSES[row["status"]],
        refund_id=row["refund_id"],
        order_id=row["order_id"],
        ticket_id=row["ticket_id"],
        event_id=row["event_id"],
        expected_amount=row["expected_amount"],
        actual_amount=row["actual_amount"],
        description=row["description"],
        detect_time=timestamp(row["detected_at"]),
        resolve_time=timestamp(row["resolved_at"]) if row["resolved_at"] else None,
        resolution_note=row["resolution_note"],
    )


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument([FieldViolation(field, "required")])
    return _bounded(value, field, MAX_ID_CHARS)


def _bounded(value: str, field: str, limit: int) -> str:
    """``value`` if it has at most ``limit`` characters."""
    if len(value) > limit:
        raise InvalidArgument(
            [FieldViolation(field, f"{len(value)} characters; at most {limit:,}")]
        )
    return value


class ReconcileServicer(reconcile_pb2_grpc.ReconcileServiceServicer):
    """See the proto's comments."""

    def __init__(
        self, pool: asyncpg.Pool, reconciler: Reconciler, report_retention_days: float = 0
    ) -> None:
        """``report_retention_days``: REPORT_RETENTION_DAYS (0: reports kept for ever)."""
        self._pool = pool
        self._reconciler = reconciler
        self._report_days = report_retention_days

    async def GetTicket(
        self, request: pb.GetTicketRequest, context: Context
    ) -> pb.GetTicketResponse:
        """A ticket as the ledger holds it; NOT_FOUND when it holds none."""
        row = await self._pool.fetchrow(Q.get_ticket, _required(request.ticket_id, "ticket_id"))
        if row is None:
            raise NotFound(f"ticket {request.ticket_id} is not in the ledger")
        return pb.GetTicketResponse(ticket=ticket_of(row))

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        """An order as the ledger holds it, with its tickets; NOT_FOUND when it
        holds none."""
        order_id = _required(request.order_id, "order_id")
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_order, order_id)
            if row is None:
                raise NotFound(f"order {order_id} is not in the ledger")
            tickets = await conn.fetch(Q.order_tickets, order_id)
        doc = tl.Order.FromString(row["doc"])
        return pb.GetOrderResponse(
            order=pb.Order(
                id=row["id"],
                number=row["number"],
                status=row["status"],
                event_id=row["event_id"],
                organizer_id=row["organizer_id"],
                customer_email=doc.customer.email,
                tickets=[ticket_of(t) for t in tickets],
                delivery=DELIVERIES.get(row["delivery"], pb.ORDER_DELIVERY_UNSPECIFIED),
                parked_time=timestamp(row["parked_at"]) if row["parked_at"] else None,
                sent_time=timestamp(row["sent_at"]) if row["sent_at"] else None,
            )
        )

    async def ListDiscrepancies(
        self, request: pb.ListDiscrepanciesRequest, context: Context
    ) -> pb.ListDiscrepanciesResponse:
        """A page of discrepancies, filtered by kind, status and refund."""
        kind = _name(request.kind, KIND_NAMES, "kind")
        status = _name(request.status, STATUS_NAMES, "status")
        refund_id = _bounded(request.refund_id, "refund_id", MAX_ID_CHARS) or None
        query = (kind, status, refund_id)
        page = page_of(request.page_size, request.page_token, *query, key=DISCREPANCY_ORDER)
        rows = await self._pool.fetch(Q.list_discrepancies, *query, *page.cursor, page.limit)
        listing = await page.listing(
            rows, lambda: self._pool.fetchval(Q.count_discrepancies, *query)
        )
        return pb.ListDiscrepanciesResponse(
            discrepancies=[discrepancy_of(r) for r in listing.items],
            total_size=listing.total_size,
            next_page_token=listing.next_page_token,
        )

    async def ResolveDiscrepancy(
        self, request: pb.ResolveDiscrepancyRequest, context: Context
    ) -> pb.ResolveDiscrepancyResponse:
        """Accepts or rejects an open discrepancy, with a note (FAILED_PRECONDITION
        once resolved); whether its refund went to Vibeapp."""
        problems = []
        try:
            discrepancy_id = uuid.UUID(request.id)
        except ValueError:
            problems.append(FieldViolation("id", "not a UUID"))
        if request.resolution not in (
            pb.DISCREPANCY_STATUS_ACCEPTED,
            pb.DISCREPANCY_STATUS_REJECTED,
        ):
            problems.append(
                FieldViolation(
                    "resolution", "DISCREPANCY_STATUS_ACCEPTED or DISCREPANCY_STATUS_REJECTED"
                )
            )
        if len(note := request.note) > MAX_NOTE_CHARS:
            problems.append(
                FieldViolation("note", f"{len(note)} characters; at most {MAX_NOTE_CHARS:,}")
            )
        if problems:
            raise InvalidArgument(problems)
        resolution = (
            "accepted" if request.resolution == pb.DISCREPANCY_STATUS_ACCEPTED else "rejected"
        )
        row, released = await self._reconciler.resolve(discrepancy_id, resolution, request.note)
        log.info(
            "discrepancy.resolved",
            discrepancy_id=request.id,
            resolution=resolution,
            refund_released=released,
        )
        return pb.ResolveDiscrepancyResponse(
            discrepancy=discrepancy_of(row), refund_released=released
        )

    async def RunReconciliation(
        self, request: pb.RunReconciliationRequest, context: Context
    ) -> pb.RunReconciliationResponse:
        """Reconciles a time range or one event (Reconciler.run); its report."""
        scope = request.WhichOneof("scope")
        if scope is None:
            raise InvalidArgument([FieldViolation("scope", "give a range or an event_id")])
        if scope == "range":
            r = request.range
            if not r.HasField("start_time") or not r.HasField("end_time"):
                raise InvalidArgument(
                    [FieldViolation("range", "start_time and end_time are required")]
                )
            start = datetime_of(r.start_time, "range.start_time")
            if datetime_of(r.end_time, "range.end_time") <= start:
                raise InvalidArgument([FieldViolation("range.end_time", "not after start_time")])
        else:
            _required(request.event_id, "event_id")
        report = await self._reconciler.run(request)
        return pb.RunReconciliationResponse(report=report)

    async def GetReconciliationReport(
        self, request: pb.GetReconciliationReportRequest, context: Context
    ) -> pb.GetReconciliationReportResponse:
        """A stored report by its id; NOT_FOUND when there is none."""
        try:
            report_id = uuid.UUID(request.id)
        except ValueError:
            raise InvalidArgument([FieldViolation("id", "not a UUID")]) from None
        blob = await self._pool.fetchval(Q.get_report, report_id)
        if blob is None:
            kept = (
                f" (reports are kept {self._report_days:g} days, REPORT_RETENTION_DAYS: an "
                "older one was purged; its totals went out as integration.cash.reconciled)"
                if self._report_days
                else ""
            )
            raise NotFound(f"report {request.id} does not exist{kept}")
        return pb.GetReconciliationReportResponse(report=pb.ReconciliationReport.FromString(blob))


def _name(value: int, names: dict[int, str], field: str) -> str | None:
    """The ledger's name of an enum filter; None when unspecified (no filter)."""
    if value == 0:
        return None
    if value not in names:
        raise InvalidArgument([FieldViolation(field, f"unknown value {value}")])
    return names[value]
