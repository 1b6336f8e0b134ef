"""Reconcile's refund rules end to end over the real Kafka and PostgreSQL: refunds
Ticketland takes back before they went to Vibeapp, and refunds that do not match
their order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from herald.reconcile.v1 import reconcile_pb2 as pb
from vibe.v1 import vibe_pb2 as vibe

from tests.conftest import Infra
from tests.integration.reconcile_flow import (
    ReconcileFlow,
    event,
    eventually,
    flow_with_ingest,
    order,
    refund,
    unique,
)
from tests.integration.test_webhook_delivery import ingest_events
from tests.integration.test_webhooks_api import fails

pytestmark = pytest.mark.integration


@pytest.fixture
async def flow(infra: Infra, database_url: str, topic: str) -> AsyncIterator[ReconcileFlow]:
    async with flow_with_ingest(infra, database_url, topic) as f:
        yield f


async def discrepancies(flow: ReconcileFlow, **filters: Any) -> list[pb.Discrepancy]:
    reply = await flow.stub.ListDiscrepancies(pb.ListDiscrepanciesRequest(**filters))
    return list(reply.discrepancies)


async def ticket_status(flow: ReconcileFlow, ticket_id: str) -> int:
    return int((await flow.stub.GetTicket(pb.GetTicketRequest(ticket_id=ticket_id))).ticket.status)


async def test_a_held_refund_ticketland_rejects_is_never_sent(flow: ReconcileFlow) -> None:
    """Held for its split, then REJECTED: its discrepancies are settled and accepting
    one (too late) releases nothing."""
    e, o, r = unique("ev"), unique("or"), unique("rf")
    t = "t-" + o
    await flow.send(event(e), order(o, e, {t: 1000}))
    await flow.settled()  # the order first: a refund before it would wait for it
    await flow.send(refund(r, o, e, {t: (1000, 1000, 0, 999)}, updated_at=2))  # split wrong
    await flow.settled()
    held = await discrepancies(flow, refund_id=r)
    assert held
    assert all(d.status == pb.DISCREPANCY_STATUS_OPEN for d in held)

    await flow.send(refund(r, o, e, {t: (1000, 1000, 0, 999)}, status="REJECTED", updated_at=3))
    await flow.settled()
    history = await flow.db(
        "SELECT status FROM reconcile.refund_history WHERE refund_id = $1 ORDER BY source_time", r
    )
    assert [h["status"] for h in history] == ["APPROVED", "REJECTED"]
    settled = await discrepancies(flow, refund_id=r)
    assert {d.status for d in settled} == {pb.DISCREPANCY_STATUS_REJECTED}
    assert all("Ticketland rejected the refund" in d.resolution_note for d in settled)
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await flow.stub.ResolveDiscrepancy(
            pb.ResolveDiscrepancyRequest(id=held[0].id, resolution=pb.DISCREPANCY_STATUS_ACCEPTED)
        )
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await flow.settled()
    assert await flow.outputs("refund", 1, timeout=3) == []
    assert await ticket_status(flow, t) == pb.TICKET_STATUS_ACTIVE


async def test_a_refund_rejected_while_it_waits_for_its_order_is_never_sent(
    flow: ReconcileFlow,
) -> None:
    e, o, r = unique("ev"), unique("or"), unique("rf")
    t = "t-" + o
    await flow.send(event(e))
    await flow.send(refund(r, o, e, {t: (1000, 1000, 0, 0)}, updated_at=2))
    await flow.settled()
    [row] = await flow.db("SELECT state FROM reconcile.refunds WHERE id = $1", r)
    assert row["state"] == "waiting_order"
    await flow.send(refund(r, o, e, {t: (1000, 1000, 0, 0)}, status="REJECTED", updated_at=3))
    await flow.settled()
    await flow.send(order(o, e, {t: 1000}))
    await flow.settled()

    assert [x.key for x in await flow.outputs("order", 1)] == [o.encode()]
    assert await flow.outputs("refund", 1, timeout=3) == []
    assert await ticket_status(flow, t) == pb.TICKET_STATUS_ACTIVE
    [row] = await flow.db("SELECT status, state FROM reconcile.refunds WHERE id = $1", r)
    assert (row["status"], row["state"]) == ("REJECTED", "rejected")


async def test_a_refund_rejected_while_its_order_waits_for_its_event_is_never_sent(
    flow: ReconcileFlow,
) -> None:
    """Approved and checked while its order was parked (the ledger refunded its
    ticket), then REJECTED before the order went: the ticket is active again."""
    e, o, r = unique("ev"), unique("or"), unique("rf")
    t = "t-" + o
    await flow.send(order(o, e, {t: 1000}))
    await flow.send(refund(r, o, e, {t: (1000, 1000, 0, 0)}, updated_at=2))
    await flow.settled()
    assert await ticket_status(flow, t) == pb.TICKET_STATUS_REFUNDED
    await flow.send(refund(r, o, e, {t: (1000, 1000, 0, 0)}, status="REJECTED", updated_at=3))
    await flow.settled()
    await flow.send(event(e))
    await flow.settled()

    assert [x.key for x in await flow.outputs("order", 1)] == [o.encode()]
    assert await flow.outputs("refund", 1, timeout=3) == []
    ticket = (await flow.stub.GetTicket(pb.GetTicketRequest(ticket_id=t))).ticket
    assert (ticket.status, ticket.refund_id) == (pb.TICKET_STATUS_ACTIVE, "")
    assert await discrepancies(flow, refund_id=r) == [], "Vibeapp never had it: no reversal"


async def test_a_held_refund_taken_back_to_in_progress_is_checked_again_when_approved(
    flow: ReconcileFlow,
) -> None:
    """IN_PROGRESS after APPROVED undoes the approval; the operator accepts the finding
    meanwhile; approved again, the refund is checked again and the accepted finding is
    not raised again: it goes."""
    e, o, r = unique("ev"), unique("or"), unique("rf")
    t = "t-" + o
    await flow.send(event(e), order(o, e, {t: 1000}))
    await flow.settled()  # the order first: a refund before it would wait for it
    split_wrong = {"tickets": {t: (1000, 1000, 0, 0)}, "total": (1000, 1000, 0, 1)}
    await flow.send(refund(r, o, e, **split_wrong, updated_at=1))  # type: ignore[arg-type]
    await flow.settled()
    [found] = await discrepancies(flow, refund_id=r)
    await flow.send(
        refund(r, o, e, **split_wrong, status="IN_PROGRESS", updated_at=2)  # type: ignore[arg-type]
    )
    await flow.settled()
    reply = await flow.stub.ResolveDiscrepancy(
        pb.ResolveDiscrepancyRequest(id=found.id, resolution=pb.DISCREPANCY_STATUS_ACCEPTED)
    )
    assert not reply.refund_released, "not approved now"
    await flow.settled()
    assert await flow.outputs("refund", 1, timeout=2) == []

    await flow.send(refund(r, o, e, **split_wrong, updated_at=3))  # type: ignore[arg-type]
    await flow.settled()
    assert [x.key for x in await flow.outputs("refund", 1)] == [r.encode()]
    assert await ticket_status(flow, t) == pb.TICKET_STATUS_REFUNDED
    assert [d.id for d in await discrepancies(flow, refund_id=r)] == [found.id]


async def test_a_refund_naming_another_event_than_its_orders_is_held_and_reported_under_the_order(
    flow: ReconcileFlow,
) -> None:
    e, o, r = unique("ev"), unique("or"), unique("rf")
    t = "t-" + o
    await flow.send(event(e), order(o, e, {t: 1000}))
    await flow.settled()  # the order first: a refund before it would wait for it
    wrong = refund(r, o, "other-" + e, {t: (1000, 800, 100, 100)})
    wrong.organizer_id = "other-org"
    await flow.send(wrong)
    await flow.settled()

    found = await discrepancies(flow, refund_id=r)
    assert [d.kind for d in found] == [pb.DISCREPANCY_KIND_REFUND_EVENT_MISMATCH] * 2
    assert {d.event_id for d in found} == {e}, "filed under the order's event"
    assert any("names event other-" + e in d.description for d in found)
    assert any("names organizer other-org" in d.description for d in found)
    assert await flow.outputs("refund", 1, timeout=3) == []
    assert await ticket_status(flow, t) == pb.TICKET_STATUS_ACTIVE

    async def announced() -> list[dict[str, Any]]:
        events = await ingest_events(flow.database_url, "integration.conflict.detected")
        return [x for x in events if x["refund_id"] == r]

    async def both_announced() -> bool:
        return len(await announced()) == 2

    await eventually(both_announced, 20)
    assert {x["kind"] for x in await announced()} == {"refund_event_mismatch"}

    # Accepted, it goes to Vibeapp under its order's event, and is reported there.
    for d in found:
        reply = await flow.stub.ResolveDiscrepancy(
            pb.ResolveDiscrepancyRequest(id=d.id, resolution=pb.DISCREPANCY_STATUS_ACCEPTED)
        )
    assert reply.refund_released
    await flow.settled()
    [sent] = await flow.outputs("refund", 1)
    assert vibe.Refund.FromString(sent.value).event_id == e
    report = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e))).report
    assert report.balanced, list(report.findings)
    assert (report.totals.refunded_amount, report.totals.tickets_refunded_sent) == (800, 1)
    assert [org.organizer_id for org in report.organizers] == ["org-1"]
    other = (
        await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id="other-" + e))
    ).report
    assert other.totals.refunded_amount == 0
    assert list(other.events) == []


async def test_a_note_or_id_too_long_is_refused_naming_the_field(flow: ReconcileFlow) -> None:
    """Two notes of 3 MiB made every page of ListDiscrepancies too large to send."""
    e, o, r = unique("ev"), unique("or"), unique("rf")
    t = "t-" + o
    await flow.send(event(e), order(o, e, {t: 1000}))
    await flow.settled()  # the order first: a refund before it would wait for it
    await flow.send(refund(r, o, e, {t: (1000, 900, 0, 0)}))  # split wrong: two findings
    await flow.settled()
    found = await discrepancies(flow, refund_id=r)
    for d in found:
        problems = await fails(
            flow.stub.ResolveDiscrepancy(
                pb.ResolveDiscrepancyRequest(
                    id=d.id, resolution=pb.DISCREPANCY_STATUS_ACCEPTED, note="m" * 3 * 2**20
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "at most 2,000" in problems["note"]
    listed = await flow.stub.ListDiscrepancies(pb.ListDiscrepanciesRequest(page_size=100))
    assert {d.status for d in listed.discrepancies} == {pb.DISCREPANCY_STATUS_OPEN}
    reply = await flow.stub.ResolveDiscrepancy(
        pb.ResolveDiscrepancyRequest(
            id=found[0].id, resolution=pb.DISCREPANCY_STATUS_ACCEPTED, note="ж" * 2000
        )
    )
    assert reply.discrepancy.resolution_note == "ж" * 2000, "2,000 characters, any bytes"

    long_id = "x" * 1001
    cases: list[tuple[Any, str]] = [
        (flow.stub.GetTicket(pb.GetTicketRequest(ticket_id=long_id)), "ticket_id"),
        (flow.stub.GetOrder(pb.GetOrderRequest(order_id=long_id)), "order_id"),
        (flow.stub.ListDiscrepancies(pb.ListDiscrepanciesRequest(refund_id=long_id)), "refund_id"),
        (
            flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=long_id)),
            "event_id",
        ),
    ]
    for call, field in cases:
        assert "at most 1,000" in (await fails(call, grpc.StatusCode.INVALID_ARGUMENT))[field]


async def test_a_withdrawn_refund_s_ticket_its_order_dropped_meanwhile_is_cancelled(
    flow: ReconcileFlow,
) -> None:
    """A refund ready to go with its parked order; the order's next version drops the
    ticket (kept: it is refunded); Ticketland then rejects the refund. The ticket went
    back to ACTIVE and stayed counted as the order's, which no longer lists it: the
    reconciliation found counts_differ. Taken out of the sale, it is cancelled."""
    e, o, r = unique("ev"), unique("or"), unique("rf")
    dropped, kept = "a-" + o, "b-" + o
    await flow.send(order(o, e, {dropped: 1000, kept: 500}))  # its event unknown: parked
    await flow.send(refund(r, o, e, {dropped: (1000, 1000, 0, 0)}, updated_at=2))
    await flow.settled()
    assert await ticket_status(flow, dropped) == pb.TICKET_STATUS_REFUNDED
    await flow.send(order(o, e, {kept: 500}, updated_at=3))
    await flow.settled()
    await flow.send(refund(r, o, e, {dropped: (1000, 1000, 0, 0)}, "REJECTED", updated_at=4))
    await flow.settled()
    await flow.send(event(e))
    await flow.settled()

    report = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e))).report
    assert report.balanced, list(report.findings)
    assert (report.totals.tickets_sold, report.totals.tickets_sent) == (1, 1)
    assert report.totals.tickets_refunded == 0
    assert await ticket_status(flow, dropped) == pb.TICKET_STATUS_CANCELLED
    assert len(await flow.outputs("refund", 1, timeout=2)) == 0
