"""Reconcile end to end: Ticketland records produced to real Kafka topics, the ledger
in the real PostgreSQL, Vibeapp's topics read back and decoded with the vibe.v1
schema; discrepancies, reports and the events published through ingest."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaProducer
from herald.reconcile.v1 import reconcile_pb2 as pb
from prometheus_client import REGISTRY
from structlog.testing import capture_logs
from ticketland.v1 import ticketland_pb2 as tl
from vibe.v1 import vibe_pb2 as vibe

from herald.runtime import db, kafka
from herald.runtime.backlog import BacklogReporter
from herald.runtime.db import DATABASE_ERRORS
from herald.runtime.kafka_producer import abandoned
from herald.runtime.retention import purge_once
from herald.runtime.rounds import finished
from herald.services.reconcile.app import BEHIND, MIGRATIONS, purges
from herald.services.reconcile.checks import discrepancy_id
from herald.services.reconcile.relay import VibeRelay
from herald.services.reconcile.store import Q
from tests.conftest import Infra
from tests.integration.conftest import end_lock_holders_session, start_ingest
from tests.integration.reconcile_flow import (
    PROTOBUF,
    ReconcileFlow,
    event,
    eventually,
    flow_with_ingest,
    open_flow,
    order,
    refund,
    unique,
)
from tests.integration.test_webhook_delivery import announced_trace, ingest_events
from tests.integration.test_webhooks_api import fails
from tests.kafka_helpers import create_small_topic, headers, read_topic, set_topic_limit

pytestmark = pytest.mark.integration


@pytest.fixture
async def flow(infra: Infra, database_url: str, topic: str) -> AsyncIterator[ReconcileFlow]:
    async with flow_with_ingest(infra, database_url, topic) as f:
        yield f


def check_headers(records: list[Any], content_type: str = "application/x-protobuf") -> None:
    for r in records:
        h = headers(r)
        assert h["content-type"] == content_type
        assert h["schema-version"] == "1.0"
        assert h["application-id"] == "ticketland"


async def discrepancies(flow: ReconcileFlow, **filters: Any) -> list[pb.Discrepancy]:
    reply = await flow.stub.ListDiscrepancies(pb.ListDiscrepanciesRequest(**filters))
    return list(reply.discrepancies)


async def test_event_order_and_refund_reach_vibeapp_decodable_with_headers_and_keys(
    flow: ReconcileFlow,
) -> None:
    e, o, r = unique("ev"), unique("or"), unique("rf")
    await flow.send(event(e))
    await flow.send(order(o, e, {"t1-" + o: 150_000, "t2-" + o: 90_000}))
    await flow.send(refund(r, o, e, {"t1-" + o: (150_000, 140_000, 5_000, 5_000)}))

    [ev_rec] = await flow.outputs("event", 1)
    [or_rec] = await flow.outputs("order", 1)
    [rf_rec] = await flow.outputs("refund", 1)
    check_headers([ev_rec, or_rec, rf_rec])
    assert (ev_rec.key, or_rec.key, rf_rec.key) == (e.encode(), o.encode(), r.encode())

    sent_event = vibe.Event.FromString(ev_rec.value)
    assert sent_event.id == e
    assert sent_event.category == vibe.CATEGORY_CONCERT
    assert sent_event.start_at == 1_767_196_800  # unix seconds, as Vibeapp's schema says
    assert sent_event.organizer_id == "org-1"
    assert sent_event.organizer.legals.type == vibe.Legals.LEGAL_TYPE_RU_LTD
    assert sent_event.venue.city_name == "Moscow"

    sent_order = vibe.Order.FromString(or_rec.value)
    assert sent_order.event_id == e
    assert sent_order.customer.name == "Ivan P"
    assert [t.id for t in sent_order.tickets] == ["t1-" + o, "t2-" + o]
    assert sent_order.tickets[0].price_nominal == 150_000
    assert sent_order.tickets[0].currency == vibe.CURRENCY_RUB

    sent_refund = vibe.Refund.FromString(rf_rec.value)
    assert list(sent_refund.ticket_ids) == ["t1-" + o]
    assert sent_refund.customer.email == "ivan@example.com"

    assert ev_rec.timestamp <= or_rec.timestamp <= rf_rec.timestamp
    t1 = (await flow.stub.GetTicket(pb.GetTicketRequest(ticket_id="t1-" + o))).ticket
    t2 = (await flow.stub.GetTicket(pb.GetTicketRequest(ticket_id="t2-" + o))).ticket
    assert (t1.status, t1.refund_id) == (pb.TICKET_STATUS_REFUNDED, r)
    assert t2.status == pb.TICKET_STATUS_ACTIVE
    got = (await flow.stub.GetOrder(pb.GetOrderRequest(order_id=o))).order
    assert got.delivery == pb.ORDER_DELIVERY_SENT
    assert len(got.tickets) == 2


async def test_an_order_before_its_event_is_parked_then_sent_after_it(
    flow: ReconcileFlow,
) -> None:
    e, o = unique("ev"), unique("or")
    await flow.send(order(o, e, {"t-" + o: 1000}))
    await flow.settled()
    got = (await flow.stub.GetOrder(pb.GetOrderRequest(order_id=o))).order
    assert got.delivery == pb.ORDER_DELIVERY_PARKED
    assert await flow.outputs("order", 1, timeout=1) == []

    await flow.send(event(e))
    [ev_rec] = await flow.outputs("event", 1)
    [or_rec] = await flow.outputs("order", 1)
    assert ev_rec.timestamp <= or_rec.timestamp
    got = (await flow.stub.GetOrder(pb.GetOrderRequest(order_id=o))).order
    assert got.delivery == pb.ORDER_DELIVERY_SENT


async def test_a_sold_order_that_changes_goes_to_vibeapp_again_under_its_key(
    flow: ReconcileFlow,
) -> None:
    e, o = unique("ev"), unique("or")
    await flow.send(event(e), order(o, e, {"a-" + o: 1000}))
    await flow.settled()
    # A ticket scanned: nothing Vibeapp's order carries changed, nothing is sent again.
    await flow.send(order(o, e, {"a-" + o: 1000}, updated_at=2, ticket_status={"a-" + o: "USED"}))
    await flow.settled()
    assert len(await flow.outputs("order", 2, timeout=2)) == 1

    # A ticket added to the sale: Vibeapp gets the order again, with both tickets.
    await flow.send(order(o, e, {"a-" + o: 1000, "b-" + o: 500}, updated_at=3))
    await flow.settled()
    records = await flow.outputs("order", 2)
    assert [r.key for r in records] == [o.encode(), o.encode()]
    assert [t.id for t in vibe.Order.FromString(records[-1].value).tickets] == ["a-" + o, "b-" + o]

    # An older version changes nothing.
    await flow.send(order(o, e, {"a-" + o: 1000}, updated_at=1))
    await flow.settled()
    assert len(await flow.outputs("order", 3, timeout=2)) == 2
    report = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e))).report
    assert report.balanced, list(report.findings)
    assert (report.totals.tickets_sold, report.totals.tickets_sent) == (2, 2)


async def test_a_ticket_taken_out_of_a_sale_is_cancelled_in_the_ledger(
    flow: ReconcileFlow,
) -> None:
    """It stayed active: reconciliation counted it as sold but not sent (a finding that
    was not one), and a refund of it was taken as a refund of a sold ticket."""
    e, o, r = unique("ev"), unique("or"), unique("rf")
    kept, dropped = "a-" + o, "b-" + o
    await flow.send(event(e), order(o, e, {kept: 1000, dropped: 500}))
    await flow.settled()
    await flow.send(order(o, e, {kept: 1000}, updated_at=2))
    await flow.settled()
    ticket = (await flow.stub.GetTicket(pb.GetTicketRequest(ticket_id=dropped))).ticket
    assert ticket.status == pb.TICKET_STATUS_CANCELLED
    report = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e))).report
    assert report.balanced, list(report.findings)
    assert (report.totals.tickets_sold, report.totals.tickets_sent) == (1, 1)
    await flow.send(refund(r, o, e, {dropped: (500, 500, 0, 0)}, updated_at=3))
    await flow.settled()
    [found] = await discrepancies(flow, refund_id=r)
    assert found.kind == pb.DISCREPANCY_KIND_CANCELLED_TICKET


async def test_an_order_republished_without_its_refunded_ticket_still_balances(
    flow: ReconcileFlow,
) -> None:
    """Ticketland drops a ticket it refunded from the order's next version: Vibeapp got
    the ticket (in the order before) and its refund, and the ledger keeps it sold and
    refunded. The reconciliation said counts_differ (2 in the ledger, 1 as sent)."""
    e, o, r = unique("ev"), unique("or"), unique("rf")
    refunded, kept = "a-" + o, "b-" + o
    await flow.send(event(e), order(o, e, {refunded: 1000, kept: 500}))
    await flow.settled()
    await flow.send(refund(r, o, e, {refunded: (1000, 1000, 0, 0)}, updated_at=2))
    await flow.settled()
    await flow.send(order(o, e, {kept: 500}, updated_at=3))
    await flow.settled()

    orders = [vibe.Order.FromString(x.value) for x in await flow.outputs("order", 2)]
    assert [[t.id for t in x.tickets] for x in orders] == [[refunded, kept], [kept]]
    ticket = (await flow.stub.GetTicket(pb.GetTicketRequest(ticket_id=refunded))).ticket
    assert ticket.status == pb.TICKET_STATUS_REFUNDED
    report = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e))).report
    assert report.balanced, list(report.findings)
    t = report.totals
    assert (t.tickets_sold, t.sold_amount, t.tickets_sent) == (2, 1500, 2)
    assert (t.tickets_refunded, t.refunded_amount, t.tickets_refunded_sent) == (1, 1000, 1)


async def test_an_order_republished_without_an_active_ticket_balances_and_a_lost_one_does_not(
    flow: ReconcileFlow,
) -> None:
    """An active ticket dropped is taken out of the sale (cancelled, counted neither as
    sold nor as sent); a ticket the ledger sold that Vibeapp's latest order lacks is
    still a count difference."""
    e, o, r = unique("ev"), unique("or"), unique("rf")
    refunded, dropped, kept = "a-" + o, "b-" + o, "c-" + o
    await flow.send(event(e), order(o, e, {refunded: 1000, dropped: 700, kept: 500}))
    await flow.send(refund(r, o, e, {refunded: (1000, 1000, 0, 0)}, updated_at=2))
    await flow.settled()
    await flow.send(order(o, e, {kept: 500}, updated_at=3))
    await flow.settled()
    report = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e))).report
    assert report.balanced, list(report.findings)
    assert (report.totals.tickets_sold, report.totals.tickets_sent) == (2, 2)

    # Vibeapp's latest order loses the kept ticket (as if a wrong version had gone).
    await flow.db(
        "UPDATE reconcile.outbox SET ticket_ids = '[]' WHERE id = "
        "(SELECT max(id) FROM reconcile.outbox WHERE kind = 'order' AND entity_id = $1)",
        o,
    )
    report = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e))).report
    assert [(f.kind, f.entity_id) for f in report.findings] == [("counts_differ", e)]
    assert (report.totals.tickets_sold, report.totals.tickets_sent) == (2, 1)


async def test_content_an_entity_had_before_goes_again_when_it_returns_to_it(
    flow: ReconcileFlow,
) -> None:
    """An event paused, then active again; a ticket added to a sale, then taken out:
    Vibeapp ends with what Ticketland says last, not with the version in between."""
    e, o = unique("ev"), unique("or")
    await flow.send(event(e), order(o, e, {"a-" + o: 1000}))
    await flow.settled()
    await flow.send(event(e, updated_at=2, status=tl.Event.STATUS_PAUSED))
    await flow.send(order(o, e, {"a-" + o: 1000, "b-" + o: 500}, updated_at=2))
    await flow.settled()
    await flow.send(event(e, updated_at=3), order(o, e, {"a-" + o: 1000}, updated_at=3))
    await flow.settled()

    events = [vibe.Event.FromString(r.value) for r in await flow.outputs("event", 3)]
    assert [ev.status for ev in events] == [
        vibe.EVENT_STATUS_ACTIVE,
        vibe.EVENT_STATUS_PAUSED,
        vibe.EVENT_STATUS_ACTIVE,
    ]
    orders = [vibe.Order.FromString(r.value) for r in await flow.outputs("order", 3)]
    assert [len(x.tickets) for x in orders] == [1, 2, 1]
    # The same content once more (a ticket scanned, an unchanged event) sends nothing.
    await flow.send(event(e, updated_at=4))
    await flow.send(order(o, e, {"a-" + o: 1000}, updated_at=4, ticket_status={"a-" + o: "USED"}))
    await flow.settled()
    assert len(await flow.outputs("event", 4, timeout=2)) == 3
    assert len(await flow.outputs("order", 4, timeout=2)) == 3


async def test_refund_lifecycle_sends_only_the_approved_refund_once(flow: ReconcileFlow) -> None:
    e, o = unique("ev"), unique("or")
    ok, no = unique("rf"), unique("rf")
    t1, t2 = "t1-" + o, "t2-" + o
    await flow.send(event(e), order(o, e, {t1: 1000, t2: 1000}))
    for n, status in enumerate(("NEW", "IN_PROGRESS", "APPROVED"), 1):
        await flow.send(refund(ok, o, e, {t1: (1000, 1000, 0, 0)}, status=status, updated_at=n))
    for n, status in enumerate(("NEW", "REJECTED"), 1):
        await flow.send(refund(no, o, e, {t2: (1000, 1000, 0, 0)}, status=status, updated_at=n))
    await flow.settled()

    sent = await flow.outputs("refund", 1, timeout=5)
    assert [r.key for r in sent] == [ok.encode()]
    history = await flow.db(
        "SELECT status FROM reconcile.refund_history WHERE refund_id = $1 ORDER BY source_time", ok
    )
    assert [h["status"] for h in history] == ["NEW", "IN_PROGRESS", "APPROVED"]
    assert (await flow.stub.GetTicket(pb.GetTicketRequest(ticket_id=t1))).ticket.status == (
        pb.TICKET_STATUS_REFUNDED
    )
    assert (await flow.stub.GetTicket(pb.GetTicketRequest(ticket_id=t2))).ticket.status == (
        pb.TICKET_STATUS_ACTIVE
    )
    # A late IN_PROGRESS (older than the APPROVED) changes nothing.
    await flow.send(refund(ok, o, e, {t1: (1000, 1000, 0, 0)}, status="IN_PROGRESS", updated_at=2))
    await flow.settled()
    assert len(await flow.outputs("refund", 1, timeout=2)) == 1
    [row] = await flow.db("SELECT status, state FROM reconcile.refunds WHERE id = $1", ok)
    assert (row["status"], row["state"]) == ("APPROVED", "sent")


async def test_each_discrepancy_kind_is_stored_published_and_holds_the_refund(
    flow: ReconcileFlow,
) -> None:
    e, o, other = unique("ev"), unique("or"), unique("or")
    used, active, cancelled, second = "u-" + o, "a-" + o, "c-" + other, "s-" + o
    await flow.send(event(e))
    await flow.send(
        order(o, e, {used: 1000, active: 1000, second: 1000}, ticket_status={used: "USED"})
    )
    await flow.send(order(other, e, {cancelled: 1000}, status="CANCELLED"))
    first = unique("rf")
    await flow.send(refund(first, o, e, {second: (1000, 1000, 0, 0)}))  # clean: refunds it
    await flow.settled()  # refunds of other keys may be taken in any order
    cases = {
        "unknown_ticket": ({"nope-" + o: (1000, 1000, 0, 0)}, None),
        "ticket_not_in_order": ({cancelled: (1000, 1000, 0, 0)}, None),
        "double_refund": ({second: (1000, 1000, 0, 0)}, None),
        "used_ticket": ({used: (1000, 1000, 0, 0)}, None),
        "money_mismatch": ({active: (1000, 900, 0, 0)}, None),
        "refund_above_price": ({active: (1500, 1500, 0, 0)}, None),
    }
    refund_of: dict[str, str] = {}
    for kind, (tickets, total) in cases.items():
        refund_of[kind] = unique("rf")
        await flow.send(refund(refund_of[kind], o, e, tickets, total=total))
    cancelled_refund = unique("rf")
    await flow.send(refund(cancelled_refund, other, e, {cancelled: (1000, 1000, 0, 0)}))
    refund_of["cancelled_ticket"] = cancelled_refund
    unknown_order = unique("rf")
    await flow.send(refund(unknown_order, "missing-" + o, e, {active: (1000, 1000, 0, 0)}))
    refund_of["unknown_order"] = unknown_order
    parked = unique("or")
    await flow.send(order(parked, "never-" + e, {"p-" + parked: 10}))
    await flow.settled()

    async def all_found() -> bool:  # unknown_order and parked orders wait 2 s first
        found = await discrepancies(flow, page_size=1000)
        return {d.kind for d in found} >= {
            pb.DISCREPANCY_KIND_UNKNOWN_ORDER,
            pb.DISCREPANCY_KIND_ORDER_PARKED_TOO_LONG,
        }

    await eventually(all_found, 20)
    found = await discrepancies(flow, page_size=1000)
    kinds_of: dict[str, set[str]] = {}
    for d in found:
        assert d.status == pb.DISCREPANCY_STATUS_OPEN
        kind = pb.DiscrepancyKind.Name(d.kind).removeprefix("DISCREPANCY_KIND_").lower()
        kinds_of.setdefault(d.refund_id, set()).add(kind)
    for kind, refund_id in refund_of.items():
        assert kind in kinds_of[refund_id], (kind, kinds_of[refund_id])
        [row] = await flow.db("SELECT state FROM reconcile.refunds WHERE id = $1", refund_id)
        assert row["state"] == "held", kind
    by_refund = {d.refund_id: d for d in found if d.refund_id}
    [money, *_] = [
        d for d in found if d.refund_id == refund_of["money_mismatch"] and d.ticket_id == "a-" + o
    ]
    assert (money.expected_amount, money.actual_amount) == (1000, 900)
    assert first not in by_refund
    [parked_d] = [d for d in found if d.kind == pb.DISCREPANCY_KIND_ORDER_PARKED_TOO_LONG]
    assert parked_d.order_id == parked

    pages, token = [], ""
    while True:
        page = await flow.stub.ListDiscrepancies(
            pb.ListDiscrepanciesRequest(page_size=3, page_token=token)
        )
        assert page.total_size == len(found)
        pages += [d.id for d in page.discrepancies]
        token = page.next_page_token
        if not token:
            break
    assert sorted(pages) == sorted(d.id for d in found), "every one once across pages"

    only_used = await discrepancies(flow, kind=pb.DISCREPANCY_KIND_USED_TICKET)
    assert [d.refund_id for d in only_used] == [refund_of["used_ticket"]]
    sent = await flow.outputs("refund", 1, timeout=3)
    assert [r.key for r in sent] == [first.encode()], "held refunds are not sent"

    async def published() -> bool:
        events = await ingest_events(flow.database_url, "integration.conflict.detected")
        return len(events) >= len(found)

    await eventually(published, 20)
    events = await ingest_events(flow.database_url, "integration.conflict.detected")
    assert {ev["discrepancy_id"] for ev in events} == {d.id for d in found}
    assert len(events) == len(found), "each discrepancy published once"


async def test_a_refund_approved_again_after_its_unknown_ticket_was_accepted_is_sent(
    flow: ReconcileFlow,
) -> None:
    # Held for a ticket the ledger does not know, moved back to IN_PROGRESS, the finding
    # accepted by an operator, then approved again: approving looked the unknown ticket
    # up (KeyError), and the APPROVED record went to the DLQ; the refund was never sent
    e, o = unique("ev"), unique("or")
    t1, ghost = "t1-" + o, "ghost-" + o
    await flow.send(event(e), order(o, e, {t1: 1000}))
    r = unique("rf")
    money = {t1: (1000, 1000, 0, 0), ghost: (0, 0, 0, 0)}
    await flow.send(refund(r, o, e, money, updated_at=1))
    await flow.settled()
    [found] = await discrepancies(flow, refund_id=r)
    assert found.kind == pb.DISCREPANCY_KIND_UNKNOWN_TICKET
    await flow.send(refund(r, o, e, money, status="IN_PROGRESS", updated_at=2))
    await flow.settled()
    await flow.stub.ResolveDiscrepancy(
        pb.ResolveDiscrepancyRequest(id=found.id, resolution=pb.DISCREPANCY_STATUS_ACCEPTED)
    )
    await flow.send(refund(r, o, e, money, updated_at=3))
    await flow.settled()
    sent = await flow.outputs("refund", 1, timeout=10)
    assert [rec.key for rec in sent] == [r.encode()]
    [row] = await flow.db("SELECT state FROM reconcile.refunds WHERE id = $1", r)
    assert row["state"] == "sent"


async def test_resolving_releases_or_blocks_the_held_refund(flow: ReconcileFlow) -> None:
    e, o = unique("ev"), unique("or")
    t1, t2 = "t1-" + o, "t2-" + o
    await flow.send(event(e), order(o, e, {t1: 1000, t2: 1000}))
    accept, reject = unique("rf"), unique("rf")
    await flow.send(refund(accept, o, e, {t1: (1000, 900, 0, 0)}))  # split mismatch
    await flow.send(refund(reject, o, e, {t2: (2000, 2000, 0, 0)}))  # above price
    await flow.settled()
    # The split is wrong for the ticket and for the whole refund: two discrepancies.
    a, a2 = await discrepancies(flow, refund_id=accept)
    [b] = await discrepancies(flow, refund_id=reject)

    reply = await flow.stub.ResolveDiscrepancy(
        pb.ResolveDiscrepancyRequest(id=a2.id, resolution=pb.DISCREPANCY_STATUS_ACCEPTED)
    )
    assert not reply.refund_released, "one discrepancy is still open"
    reply = await flow.stub.ResolveDiscrepancy(
        pb.ResolveDiscrepancyRequest(
            id=a.id, resolution=pb.DISCREPANCY_STATUS_ACCEPTED, note="agent fee waived"
        )
    )
    assert reply.refund_released
    assert reply.discrepancy.status == pb.DISCREPANCY_STATUS_ACCEPTED
    assert reply.discrepancy.resolution_note == "agent fee waived"
    reply = await flow.stub.ResolveDiscrepancy(
        pb.ResolveDiscrepancyRequest(id=b.id, resolution=pb.DISCREPANCY_STATUS_REJECTED)
    )
    assert not reply.refund_released
    await flow.settled()
    sent = await flow.outputs("refund", 1, timeout=3)
    assert [r.key for r in sent] == [accept.encode()]
    assert (await flow.stub.GetTicket(pb.GetTicketRequest(ticket_id=t2))).ticket.status == (
        pb.TICKET_STATUS_ACTIVE
    )

    with pytest.raises(grpc.aio.AioRpcError) as again:
        await flow.stub.ResolveDiscrepancy(
            pb.ResolveDiscrepancyRequest(id=a.id, resolution=pb.DISCREPANCY_STATUS_REJECTED)
        )
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_resolving_each_open_discrepancy_while_paging_skips_none(
    flow: ReconcileFlow,
) -> None:
    """An operator pages through the open discrepancies and resolves each one they see
    (it leaves the filter): every one is on a page, once. Pages by offset skipped one
    page in two. A refund's findings are stored together, at one detected_at: the id
    orders them."""
    e, o = unique("ev"), unique("or")
    tickets = [f"t{n}-{o}" for n in range(7)]
    await flow.send(event(e), order(o, e, dict.fromkeys(tickets, 1000)))
    underpaid = (1000, 900, 0, 0)  # a money_mismatch for each ticket
    await flow.send(refund(unique("rf"), o, e, dict.fromkeys(tickets[:4], underpaid)))
    await flow.send(refund(unique("rf"), o, e, dict.fromkeys(tickets[4:], underpaid)))
    await flow.settled()
    is_open = pb.DISCREPANCY_STATUS_OPEN

    async def all_found() -> bool:
        return len(await discrepancies(flow, status=is_open, page_size=1000)) >= 7

    await eventually(all_found, 20)
    found = [d.id for d in await discrepancies(flow, status=is_open, page_size=1000)]
    [ties] = await flow.db("SELECT count(DISTINCT detected_at) AS n FROM reconcile.discrepancies")
    assert ties["n"] < len(found), "some were found together"

    seen, totals, token = [], [], ""
    while True:
        page = await flow.stub.ListDiscrepancies(
            pb.ListDiscrepanciesRequest(status=is_open, page_size=2, page_token=token)
        )
        totals.append(page.total_size)
        for d in page.discrepancies:
            seen.append(d.id)
            await flow.stub.ResolveDiscrepancy(
                pb.ResolveDiscrepancyRequest(id=d.id, resolution=pb.DISCREPANCY_STATUS_ACCEPTED)
            )
        token = page.next_page_token
        if not token:
            break
    assert seen == found, "newest first, each once"
    assert totals[0] == len(found)
    assert not await discrepancies(flow, status=is_open)


async def test_a_held_refund_is_checked_again_when_released(flow: ReconcileFlow) -> None:
    """Held for its split, then its ticket refunded by another refund: accepting the
    split must not send a second refund of that ticket to Vibeapp."""
    e, o = unique("ev"), unique("or")
    t = "t-" + o
    await flow.send(event(e), order(o, e, {t: 1000}))
    held, other = unique("rf"), unique("rf")
    await flow.send(refund(held, o, e, {t: (1000, 900, 0, 0)}))  # split mismatch: held
    await flow.settled()
    await flow.send(refund(other, o, e, {t: (1000, 1000, 0, 0)}))  # passes: sent
    await flow.settled()
    assert [r.key for r in await flow.outputs("refund", 1)] == [other.encode()]

    for d in await discrepancies(flow, refund_id=held):
        reply = await flow.stub.ResolveDiscrepancy(
            pb.ResolveDiscrepancyRequest(id=d.id, resolution=pb.DISCREPANCY_STATUS_ACCEPTED)
        )
    assert not reply.refund_released, "its ticket went with the other refund meanwhile"
    [double] = await discrepancies(flow, refund_id=held, status=pb.DISCREPANCY_STATUS_OPEN)
    assert double.kind == pb.DISCREPANCY_KIND_DOUBLE_REFUND
    assert double.ticket_id == t
    ticket = (await flow.stub.GetTicket(pb.GetTicketRequest(ticket_id=t))).ticket
    assert ticket.refund_id == other
    await flow.settled()
    sent = await flow.outputs("refund", 2, timeout=3)
    assert [r.key for r in sent] == [other.encode()], "the ticket is refunded once"

    reply = await flow.stub.ResolveDiscrepancy(  # the operator wants it refunded twice
        pb.ResolveDiscrepancyRequest(id=double.id, resolution=pb.DISCREPANCY_STATUS_ACCEPTED)
    )
    assert reply.refund_released, "a finding accepted is not found again"
    sent = await flow.outputs("refund", 2)  # on two partitions: no order between them
    assert sorted(r.key for r in sent) == sorted([other.encode(), held.encode()])


async def test_replaying_every_input_changes_nothing_and_sends_nothing_twice(
    flow: ReconcileFlow,
) -> None:
    e, o = unique("ev"), unique("or")
    records = [
        event(e),
        order(o, e, {"t1-" + o: 1000, "t2-" + o: 1000}),
        refund(unique("rf"), o, e, {"t1-" + o: (1000, 1000, 0, 0)}),
    ]
    await flow.send(*records)
    await flow.settled()
    before = await flow.db("SELECT kind, entity_id, content_hash FROM reconcile.outbox")
    tickets_before = await flow.db("SELECT id, status, refund_id FROM reconcile.tickets")

    # The same topics from the beginning, in a new consumer group…
    replay_group = unique("replay")
    await flow.add_replica(reconcile_group=replay_group)
    # …and the same content published again (new offsets).
    await flow.send(*records)

    async def replayed() -> bool:
        rows = await flow.db("SELECT count(*) AS n FROM reconcile.inputs")
        return bool(rows[0]["n"] == 6)

    await eventually(replayed, 30)
    await flow.settled()
    await asyncio.sleep(1)
    after = await flow.db("SELECT kind, entity_id, content_hash FROM reconcile.outbox")
    assert sorted(map(tuple, after)) == sorted(map(tuple, before))
    assert sorted(
        map(tuple, await flow.db("SELECT id, status, refund_id FROM reconcile.tickets"))
    ) == sorted(map(tuple, tickets_before))
    for kind in ("event", "order", "refund"):
        assert len(await flow.outputs(kind, 1, timeout=2)) == 1, kind


async def test_a_poison_record_goes_to_the_dlq_and_consumption_carries_on(
    flow: ReconcileFlow,
) -> None:
    e, o = unique("ev"), unique("or")
    await flow.send_raw(flow.settings.ticketland_orders_topic, b"\xff\xff not protobuf")
    await flow.send_raw(flow.settings.ticketland_orders_topic, b'{"id": 1', "application/json")
    await flow.send_raw(flow.settings.ticketland_orders_topic, b"{}", "text/csv")
    await flow.send(event(e), order(o, e, {"t-" + o: 1000}))
    [sent] = await flow.outputs("order", 1)
    assert sent.key == o.encode()
    dead = await read_topic(flow.kafka(), flow.settings.dlq_topic, 3)
    assert len(dead) == 3
    reasons = [headers(d)["dlq-reason"] for d in dead]
    assert "not a ticketland.v1.Order" in reasons[0]
    assert "not JSON" in reasons[1]
    assert "unsupported content-type 'text/csv'" in reasons[2]
    for d in dead:
        h = headers(d)
        assert h["dlq-service"] == "reconcile"
        assert h["dlq-topic"] == flow.settings.ticketland_orders_topic
    assert dead[0].value == b"\xff\xff not protobuf"


async def test_replaying_a_poison_record_dead_letters_it_once(flow: ReconcileFlow) -> None:
    e, o = unique("ev"), unique("or")
    await flow.send_raw(flow.settings.ticketland_orders_topic, b"\xff\xff not protobuf")
    await flow.send(event(e), order(o, e, {"t-" + o: 1000}))
    await flow.settled()
    assert len(await read_topic(flow.kafka(), flow.settings.dlq_topic, 1)) == 1

    # The same topics from the beginning, in a new consumer group, on the same ledger.
    replay_group = unique("replay")
    await flow.add_replica(reconcile_group=replay_group)
    flow.settings = flow.settings.model_copy(update={"reconcile_group": replay_group})
    await flow.settled()
    await asyncio.sleep(1)  # what a second dead letter would take to be sent
    dead = await read_topic(flow.kafka(), flow.settings.dlq_topic, 2, timeout=3)
    assert len(dead) == 1, [headers(d)["dlq-reason"] for d in dead]
    assert headers(dead[0])["dlq-offset"] == "0"


async def test_json_inputs_and_json_outputs_follow_the_contract(
    infra: Infra, database_url: str, topic: str
) -> None:
    ingest = await start_ingest(infra, database_url, topic)
    try:
        async with open_flow(
            infra,
            database_url,
            ingest,
            vibe_events_format="json",
            vibe_orders_format="json",
            vibe_refunds_format="json",
        ) as flow:
            e, o, r = unique("ev"), unique("or"), unique("rf")
            await flow.send(event(e, category="standup"), as_json=True)
            await flow.send(order(o, e, {"t-" + o: 2500}), as_json=True)
            await flow.send(refund(r, o, e, {"t-" + o: (2500, 2000, 300, 200)}), as_json=True)
            [ev_rec] = await flow.outputs("event", 1)
            [or_rec] = await flow.outputs("order", 1)
            [rf_rec] = await flow.outputs("refund", 1)
    finally:
        await ingest.stop()
    check_headers([ev_rec, or_rec, rf_rec], "application/json")
    ev = json.loads(ev_rec.value)
    assert ev["category"] == "standup"
    assert ev["status"] == "active"
    assert ev["finish_at"] == 1_767_207_600_000  # unix milliseconds in the JSON form
    assert ev["organizer"] == {
        "id": "org-1",
        "name": "Org One",
        "legals": {"name": "OOO Org", "type": "ru_ltd", "inn": "7700000000"},
    }
    od = json.loads(or_rec.value)
    assert od["number"] == f"N-{o}"
    assert od["customer"] == {
        "email": "ivan@example.com",
        "phone": "+79990000000",
        "first_name": "Ivan",
        "last_name": "P",
    }
    assert od["tickets"][0]["event_id"] == e
    assert od["tickets"][0]["currency"] == "RUB"
    assert json.loads(rf_rec.value) == {"customer": od["customer"], "ticket_ids": ["t-" + o]}


async def test_reconciliation_reports_totals_finds_what_is_missing_and_repairs_it(
    flow: ReconcileFlow,
) -> None:
    e, o1, o2 = unique("ev"), unique("or"), unique("or")
    r = unique("rf")
    await flow.send(event(e), order(o1, e, {"a-" + o1: 1000, "b-" + o1: 500}))
    await flow.send(order(o2, e, {"a-" + o2: 700}))
    await flow.send(refund(r, o1, e, {"a-" + o1: (1000, 800, 100, 100)}))
    await flow.settled()

    report = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e))).report
    assert report.balanced, list(report.findings)
    t = report.totals
    assert (t.orders, t.tickets_sold, t.sold_amount) == (2, 3, 2200)
    assert (t.tickets_refunded, t.refunded_amount, t.tickets_refunded_sent) == (1, 800, 1)
    assert (t.orders_sent, t.tickets_sent) == (2, 3)
    assert [ev.event_id for ev in report.events] == [e]
    assert [org.organizer_id for org in report.organizers] == ["org-1"]
    assert report.inputs.distinct_orders == 2
    assert report.inputs.approved_refunds == 1
    stored = await flow.stub.GetReconciliationReport(
        pb.GetReconciliationReportRequest(id=report.id)
    )
    assert stored.report == report
    now = datetime.now(UTC)
    window = pb.TimeRange()
    window.start_time.FromDatetime(now - timedelta(hours=1))
    window.end_time.FromDatetime(now + timedelta(minutes=1))
    by_time = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(range=window))).report
    assert by_time.balanced, list(by_time.findings)
    assert by_time.totals == report.totals  # this test's database holds only this event
    assert by_time.inputs.order_records == 2

    # Lose o2's output (as if it had never been queued): the report finds it, repair
    # sends it again.
    await flow.db("DELETE FROM reconcile.outbox WHERE entity_id = $1", o2)
    report = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e))).report
    assert not report.balanced
    assert [(f.kind, f.entity_id) for f in report.findings] == [("order_not_sent", o2)]
    repaired = (
        await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e, repair=True))
    ).report
    assert repaired.repaired == 1
    assert [f.kind for f in repaired.findings if f.repaired] == ["order_not_sent"]
    await flow.settled()
    orders = await flow.outputs("order", 3)
    assert sorted(r.key for r in orders) == sorted([o1.encode(), o2.encode(), o2.encode()])
    report = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e))).report
    assert report.balanced, list(report.findings)

    async def announced() -> bool:
        return len(await ingest_events(flow.database_url, "integration.cash.reconciled")) >= 4

    await eventually(announced, 10)
    [first] = [
        ev
        for ev in await ingest_events(flow.database_url, "integration.cash.reconciled")
        if ev["report_id"] == stored.report.id
    ]
    assert (first["sold_amount"], first["refunded_amount"], first["balanced"]) == (2200, 800, True)
    assert first["tickets_sent"] == 3
    assert "start_time" not in first
    [ranged] = [
        ev
        for ev in await ingest_events(flow.database_url, "integration.cash.reconciled")
        if ev["report_id"] == by_time.id
    ]
    assert ranged["start_time"] == window.start_time.ToJsonString()
    assert ranged["end_time"] == window.end_time.ToJsonString()


async def test_a_report_over_several_currencies_totals_each_on_its_own(
    flow: ReconcileFlow,
) -> None:
    """An event selling in roubles and euros: its sums add minor units of both (as
    they always did), and `amounts` has each currency's, sold and refunded; the
    published event carries them too."""
    e, rub, eur, r = unique("ev"), unique("or"), unique("or"), unique("rf")
    euros = order(eur, e, {"t-" + eur: 50})
    euros.tickets[0].currency = "eur"  # as Ticketland may spell it
    await flow.send(event(e), order(rub, e, {"t-" + rub: 1000}), euros)
    await flow.settled()
    await flow.send(refund(r, eur, e, {"t-" + eur: (50, 40, 10, 0)}))
    await flow.settled()

    report = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e))).report
    assert report.balanced, list(report.findings)
    assert (report.totals.sold_amount, report.totals.refunded_amount) == (1050, 40)
    amounts = [(a.currency, a.sold_amount, a.refunded_amount) for a in report.totals.amounts]
    assert amounts == [("EUR", 50, 40), ("RUB", 1000, 0)]
    [ev] = report.events
    assert list(ev.totals.amounts) == list(report.totals.amounts)

    async def published() -> list[dict[str, Any]]:
        events = await ingest_events(flow.database_url, "integration.cash.reconciled")
        return [x for x in events if x["report_id"] == report.id]

    await eventually(lambda: _nonempty(published()), 10)
    [announced] = await published()
    assert announced["amounts"] == [
        {"currency": "EUR", "sold_amount": 50, "refunded_amount": 40},
        {"currency": "RUB", "sold_amount": 1000, "refunded_amount": 0},
    ]


async def _nonempty(found: Awaitable[list[Any]]) -> bool:
    return bool(await found)


async def test_the_reconciled_event_joins_the_trace_of_the_call_that_asked_for_it(
    flow: ReconcileFlow,
) -> None:
    # integration.cash.reconciled started a trace of its own
    trace_id = uuid.uuid4().hex
    e = unique("ev")
    await flow.send(event(e), order(unique("or"), e, {unique("tk"): 1000}))
    await flow.settled()
    await flow.stub.RunReconciliation(
        pb.RunReconciliationRequest(event_id=e),
        metadata=(("traceparent", f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"),),
    )
    reconciled_trace = await announced_trace(
        flow.kafka(), flow.ingest.settings.events_topic, "integration.cash.reconciled"
    )
    assert reconciled_trace == trace_id


async def test_bad_requests_name_the_field(flow: ReconcileFlow) -> None:
    cases: list[tuple[Any, str]] = [
        (flow.stub.GetTicket(pb.GetTicketRequest()), "ticket_id"),
        (flow.stub.GetOrder(pb.GetOrderRequest()), "order_id"),
        (flow.stub.RunReconciliation(pb.RunReconciliationRequest()), "scope"),
        (flow.stub.ResolveDiscrepancy(pb.ResolveDiscrepancyRequest(id="x")), "id"),
        (flow.stub.ResolveDiscrepancy(pb.ResolveDiscrepancyRequest(id="x")), "resolution"),
        (flow.stub.GetReconciliationReport(pb.GetReconciliationReportRequest(id="x")), "id"),
    ]
    for call, field in cases:
        assert field in await fails(call, grpc.StatusCode.INVALID_ARGUMENT)
    await fails(
        flow.stub.GetTicket(pb.GetTicketRequest(ticket_id="nope")), grpc.StatusCode.NOT_FOUND
    )


async def test_outputs_reach_a_cluster_that_wants_scram_sha_512(
    infra: Infra, database_url: str, topic: str
) -> None:
    """Vibeapp's cluster speaks SASL + SCRAM-SHA-512: here the local broker's second
    listener, whose user was created at format time."""
    vibe_kafka = infra.scram_settings()
    ingest = await start_ingest(infra, database_url, topic)
    try:
        async with open_flow(infra, database_url, ingest, vibe_kafka=vibe_kafka) as flow:
            e, o = unique("ev"), unique("or")
            await flow.send(event(e), order(o, e, {"t-" + o: 100}))
            [ev_rec] = await flow.outputs("event", 1)
            [or_rec] = await flow.outputs("order", 1)
    finally:
        await ingest.stop()
    assert vibe.Event.FromString(ev_rec.value).id == e
    assert vibe.Order.FromString(or_rec.value).id == o
    check_headers([ev_rec, or_rec])


async def test_two_replicas_share_the_inputs_and_send_everything_once_in_order(
    flow: ReconcileFlow,
) -> None:
    await flow.add_replica()  # the same consumer group: the partitions are shared
    events = [unique("ev") for _ in range(4)]
    orders = {unique("or"): events[i % 4] for i in range(40)}
    # Orders first (parked), then their events, then a refund per order: every release
    # and refund decision is contended between the two replicas.
    await flow.send(*(order(o, e, {"t-" + o: 100}) for o, e in orders.items()))
    await flow.send(*(event(e) for e in events))
    await flow.send(
        *(refund("rf-" + o, o, e, {"t-" + o: (100, 100, 0, 0)}) for o, e in orders.items())
    )
    await flow.settled(60)

    await sent_once_in_order(flow, events, orders)
    assert await discrepancies(flow) == []


async def sent_once_in_order(
    flow: ReconcileFlow, events: Iterable[str], orders: dict[str, str]
) -> None:
    """Every event, order (``orders``: order id → event id) and refund ``rf-<order>`` is
    on Vibeapp's topics once, each order after its event and each refund after its order."""
    event_ids = sorted(events)
    sent_events = await flow.outputs("event", len(event_ids), timeout=10)
    sent_orders = await flow.outputs("order", len(orders), timeout=10)
    sent_refunds = await flow.outputs("refund", len(orders), timeout=10)
    assert sorted(r.key.decode() for r in sent_events) == event_ids
    assert sorted(r.key.decode() for r in sent_orders) == sorted(orders)
    assert sorted(r.key.decode() for r in sent_refunds) == sorted("rf-" + o for o in orders)
    event_at = {r.key.decode(): r.timestamp for r in sent_events}
    order_at = {r.key.decode(): r.timestamp for r in sent_orders}
    for r in sent_orders:
        assert event_at[orders[r.key.decode()]] <= r.timestamp
    for r in sent_refunds:
        assert order_at[r.key.decode().removeprefix("rf-")] <= r.timestamp


async def test_a_backlog_split_into_concurrent_transactions_is_sent_once_in_order(
    flow: ReconcileFlow,
) -> None:
    """A backlog waiting on Kafka before reconcile starts (orders produced before their
    events), taken with LEDGER_CONCURRENCY=4: every batch is split by event into
    transactions running at once, whose events share organizers. Everything is sent
    once, each order after its event and each refund after its order; no transaction
    failed (a deadlock would log ledger.failed), and no order had to be parked: the
    events were read first."""
    await flow.running.pop().stop(1)
    events = {unique("ev"): f"org-{i % 3}" for i in range(12)}
    orders = {unique("or"): e for i, e in enumerate(list(events) * 10)}
    await flow.send(*(order(o, e, {"t-" + o: 100}) for o, e in orders.items()))
    await flow.send(*(event(e, organizer_id=g) for e, g in events.items()))
    await flow.send(
        *(refund("rf-" + o, o, e, {"t-" + o: (100, 100, 0, 0)}) for o, e in orders.items())
    )
    with capture_logs() as logs:
        await flow.add_replica(ledger_concurrency=4)
        await flow.settled(60)

    await sent_once_in_order(flow, events, orders)
    assert [x for x in logs if x["event"] == "ledger.failed"] == []
    assert [x for x in logs if x["event"] == "order.parked"] == []
    assert await flow.db("SELECT kind FROM reconcile.discrepancies") == []


async def test_what_was_waited_for_settles_its_discrepancy_when_it_arrives(
    flow: ReconcileFlow,
) -> None:
    e = unique("ev")
    parked, late, accepted = unique("or"), unique("or"), unique("or")
    r_late, r_accepted = unique("rf"), unique("rf")
    await flow.send(order(parked, e, {"t-" + parked: 100}))
    await flow.send(refund(r_late, late, e, {"t-" + late: (100, 100, 0, 0)}))
    await flow.send(refund(r_accepted, accepted, e, {"t-" + accepted: (100, 100, 0, 0)}))

    async def three_found() -> bool:  # the park limit is 2 s here
        return len(await discrepancies(flow, status=pb.DISCREPANCY_STATUS_OPEN)) == 3

    await eventually(three_found, 20)
    [for_accepted] = await discrepancies(flow, refund_id=r_accepted)
    assert for_accepted.kind == pb.DISCREPANCY_KIND_UNKNOWN_ORDER
    reply = await flow.stub.ResolveDiscrepancy(
        pb.ResolveDiscrepancyRequest(
            id=for_accepted.id, resolution=pb.DISCREPANCY_STATUS_ACCEPTED, note="coming"
        )
    )
    assert not reply.refund_released, "its order is still unknown: the refund waits"

    # The event and both orders arrive: the parked order goes, and both refunds are
    # checked (clean) and go after their orders.
    await flow.send(event(e))
    await flow.send(order(late, e, {"t-" + late: 100}), order(accepted, e, {"t-" + accepted: 100}))
    await flow.settled()
    sent_orders = await flow.outputs("order", 3)
    sent_refunds = await flow.outputs("refund", 2)
    assert sorted(r.key.decode() for r in sent_orders) == sorted([parked, late, accepted])
    assert sorted(r.key.decode() for r in sent_refunds) == sorted([r_late, r_accepted])
    assert await discrepancies(flow, status=pb.DISCREPANCY_STATUS_OPEN) == []
    settled = {d.kind: d for d in await discrepancies(flow) if d.id != for_accepted.id}
    assert settled[pb.DISCREPANCY_KIND_ORDER_PARKED_TOO_LONG].order_id == parked
    assert "the event arrived" in settled[pb.DISCREPANCY_KIND_ORDER_PARKED_TOO_LONG].resolution_note
    assert settled[pb.DISCREPANCY_KIND_UNKNOWN_ORDER].refund_id == r_late
    assert "the order arrived" in settled[pb.DISCREPANCY_KIND_UNKNOWN_ORDER].resolution_note
    for t in ("t-" + late, "t-" + accepted):
        ticket = (await flow.stub.GetTicket(pb.GetTicketRequest(ticket_id=t))).ticket
        assert ticket.status == pb.TICKET_STATUS_REFUNDED


async def test_a_record_postgresql_refuses_is_dead_lettered_and_the_rest_applied(
    flow: ReconcileFlow,
) -> None:
    e = unique("ev")
    huge = "".join(uuid.uuid4().hex for _ in range(700))  # an id no btree index can hold
    fine = [unique("or") for _ in range(5)]
    await flow.send(event(e))
    await flow.send(order(fine[0], e, {"t-" + fine[0]: 1}), order(huge, e, {"t-x": 1}))
    await flow.send(*(order(o, e, {"t-" + o: 1}) for o in fine[1:]))
    sent = await flow.outputs("order", 5)
    assert sorted(r.key.decode() for r in sent) == sorted(fine)
    [dead] = await read_topic(flow.kafka(), flow.settings.dlq_topic, 1)
    assert dead.key == huge.encode()
    reason = headers(dead)["dlq-reason"]
    assert reason.startswith("the database refused it:"), reason
    assert "index row" in reason, reason
    await flow.settled()


async def test_a_relay_stopped_mid_round_marks_what_kafka_took_before_it_stops(
    infra: Infra, database_url: str
) -> None:
    """A graceful stop (SIGTERM) that lands between Kafka's acknowledgements and the
    marks: the round finishes, so the next relay does not send those records again."""
    pool = await db.create_pool(database_url, 2)
    async with pool.acquire() as conn:
        await db.migrate(conn, db.read_migrations("reconcile", MIGRATIONS))
        topic = f"vibe.events.t{uuid.uuid4().hex[:10]}"
        await conn.executemany(
            """INSERT INTO reconcile.outbox (kind, entity_id, content_hash, topic, key, value,
                                             headers)
               VALUES ('event', $1, 'h', $2, $3, 'v', '[["content-type", "x"]]')""",
            [(f"e{i}", topic, f"e{i}".encode()) for i in range(5)],
        )
    acked = asyncio.Event()
    proceed = asyncio.Event()

    class SlowToMark(VibeRelay):
        async def round(self, producer: AIOKafkaProducer) -> tuple[int, bool]:
            sender = self._sender
            send = sender.send

            async def acknowledged_then_stopped(*args: Any) -> list[BaseException | None]:
                errors = await send(*args)  # Kafka has taken every record…
                acked.set()
                await proceed.wait()  # …and the stop arrives before they are marked
                return errors

            sender.send = acknowledged_then_stopped  # type: ignore[method-assign,assignment]
            return await super().round(producer)

    relay = SlowToMark(pool, partial(kafka.make_producer, infra.kafka_settings()))
    running = asyncio.ensure_future(relay.run())
    try:
        await asyncio.wait_for(acked.wait(), 30)
        running.cancel()
        await asyncio.sleep(0.1)
        proceed.set()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        unsent = await pool.fetchval("SELECT count(*) FROM reconcile.outbox WHERE sent_at IS NULL")
        assert unsent == 0, "what Kafka acknowledged is marked sent"
        assert len(await read_topic(infra.kafka_settings(), topic, 5)) == 5
    finally:
        running.cancel()
        await pool.close()


@pytest.mark.parametrize("ended_by", ["stop", "session"])
async def test_a_relay_round_given_up_never_lands_after_what_the_next_relay_sent(
    infra: Infra, database_url: str, ended_by: str
) -> None:
    """Vibeapp's Kafka does not acknowledge a round in time (its records wait out a 3 s
    linger) and the round ends: a stop cuts it short (its grace is 0.2 s), or its
    database session ends. Either way the relay lock goes and another replica's relay
    sends the outputs. The first round's copies must not land after those (they did,
    on the stopping relay's flush, or later)."""
    pool = await db.create_pool(database_url, 3)
    settings = infra.kafka_settings()
    first_producer = kafka.make_producer(settings, linger_ms=3000)
    try:
        async with pool.acquire() as conn:
            await db.migrate(conn, db.read_migrations("reconcile", MIGRATIONS))
            topic = f"vibe.events.t{uuid.uuid4().hex[:10]}"
            await conn.executemany(
                """INSERT INTO reconcile.outbox (kind, entity_id, content_hash, topic, key,
                                                 value, headers)
                   VALUES ('event', $1, 'h', $2, $3, $4, '[["content-type", "x"]]')""",
                [(f"e{i}", topic, b"k", f"v{i}".encode()) for i in range(3)],
            )
        await first_producer.start()
        await first_producer.partitions_for(topic)  # the records wait on the linger only
        first = VibeRelay(pool, partial(kafka.make_producer, settings))
        if ended_by == "stop":
            cut = asyncio.ensure_future(finished(first.round(first_producer), grace=0.2))
            await asyncio.sleep(0.2)  # the records are with the producer
            cut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cut
        else:
            round_ = asyncio.ensure_future(first.round(first_producer))
            await asyncio.sleep(0.3)  # the records are with the producer
            assert await end_lock_holders_session(database_url) == 1, "it held the lock"
            with contextlib.suppress(*DATABASE_ERRORS):
                await round_

        other = kafka.make_producer(settings)
        await other.start()
        try:
            taking_over = VibeRelay(pool, partial(kafka.make_producer, settings))
            assert await taking_over.round(other) == (3, False)
        finally:
            await other.stop()
        await abandoned(first_producer)  # what the first relay's run does last
        await first_producer.stop()
        await asyncio.sleep(3.5)  # past the linger
        values = [r.value for r in await read_topic(settings, topic, 4, timeout=3)]
        assert values == [b"v0", b"v1", b"v2"], "each once, in order"
    finally:
        await pool.close()


Output = tuple[str, str, str, datetime | None]  # kind, entity id, content hash, refused_at


@contextlib.asynccontextmanager
async def outbox_of(
    infra: Infra, database_url: str, outputs: list[Output]
) -> AsyncIterator[tuple[asyncpg.Pool, AIOKafkaProducer]]:
    """A migrated ledger holding order o1 of event e1 and ``outputs`` queued (topics of
    the test's own), a pool on it and a started producer."""
    pool = await db.create_pool(database_url, 2)
    s = uuid.uuid4().hex[:10]
    producer = kafka.make_producer(infra.kafka_settings())
    try:
        async with pool.acquire() as conn:
            await db.migrate(conn, db.read_migrations("reconcile", MIGRATIONS))
            await conn.execute(
                """INSERT INTO reconcile.orders (id, number, status, event_id, organizer_id,
                                                 doc, delivery)
                   VALUES ('o1', 'N-1', 'DONE', 'e1', 'g1', '', 'sent')"""
            )
            await conn.executemany(
                """INSERT INTO reconcile.outbox (kind, entity_id, content_hash, topic, key,
                                                 value, headers, refused_at)
                   VALUES ($1, $2, $3, $4, $5, $6, '[["content-type", "x"]]', $7)""",
                [
                    (kind, entity, h, f"vibe.{kind}s.t{s}", entity.encode(), h.encode(), at)
                    for kind, entity, h, at in outputs
                ],
            )
        await producer.start()
        yield pool, producer
    finally:
        await producer.stop()
        await pool.close()


async def outbox_rows(pool: asyncpg.Pool) -> list[tuple[str, bool, bool]]:
    """Each output's content hash, whether it was sent and whether it was superseded."""
    rows = await pool.fetch(
        "SELECT content_hash, sent_at IS NOT NULL AS sent,"
        " superseded_at IS NOT NULL AS superseded FROM reconcile.outbox ORDER BY id"
    )
    return [(r["content_hash"], r["sent"], r["superseded"]) for r in rows]


async def test_orders_of_a_refused_event_wait_for_its_later_version_to_be_sent(
    infra: Infra, database_url: str
) -> None:
    """An event refused for good, its order queued, then the event's later version: the
    order waits until the later version went (it went first: taken in id order, the
    later version beyond the round's limit), and the refused one is then superseded."""
    queued: list[Output] = [
        ("event", "e1", "h1", datetime.now(UTC)),
        ("order", "o1", "h", None),
        ("event", "e1", "h2", None),
    ]
    async with outbox_of(infra, database_url, queued) as (pool, producer):
        relay = VibeRelay(pool, partial(kafka.make_producer, infra.kafka_settings()), 1)
        assert await relay.round(producer) == (1, True)
        assert await outbox_rows(pool) == [
            ("h1", False, True),
            ("h", False, False),
            ("h2", True, False),
        ]
        assert await relay.round(producer) == (1, True)
        assert [sent for _, sent, _ in await outbox_rows(pool)] == [False, True, True]


async def test_a_refused_events_later_version_refused_too_is_tried_again_after_its_window(
    infra: Infra, database_url: str
) -> None:
    """Both versions of an event refused, the later one past its retry window (the limit
    raised meanwhile): the later one goes, then the event's order; the first is
    superseded. (The first, replaced, kept the later one from being tried at all, and
    the order waited for ever.)"""
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    queued: list[Output] = [
        ("event", "e1", "h1", long_ago),
        ("event", "e1", "h2", long_ago),
        ("order", "o1", "h", None),
    ]
    async with outbox_of(infra, database_url, queued) as (pool, producer):
        relay = VibeRelay(pool, partial(kafka.make_producer, infra.kafka_settings()))
        await relay.round(producer)
        await relay.round(producer)
        assert await outbox_rows(pool) == [
            ("h1", False, True),
            ("h2", True, False),
            ("h", True, False),
        ]


async def test_a_refused_output_that_goes_on_a_retry_settles_its_discrepancy(
    infra: Infra, database_url: str
) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    async with outbox_of(infra, database_url, [("event", "e1", "h1", long_ago)]) as (
        pool,
        producer,
    ):
        found = discrepancy_id("event/e1", "output_refused", "", "h1")
        await pool.execute(
            "INSERT INTO reconcile.discrepancies (id, kind, event_id, description)"
            " VALUES ($1, 'output_refused', 'e1', 'refused')",
            found,
        )
        relay = VibeRelay(pool, partial(kafka.make_producer, infra.kafka_settings()))
        assert await relay.round(producer) == (1, False)
        row = await pool.fetchrow(
            "SELECT status, resolution_note FROM reconcile.discrepancies WHERE id = $1", found
        )
        assert row is not None
        assert row["status"] == "accepted", "it went to Vibeapp on its retry"
        assert "went to Vibeapp" in row["resolution_note"]


async def test_migration_013_supersedes_what_was_refused_before_a_later_version_went(
    database_url: str,
) -> None:
    migrations = db.read_migrations("reconcile", MIGRATIONS)
    conn = await asyncpg.connect(database_url)
    try:
        await db.migrate(conn, migrations[:12])
        await conn.execute(
            """INSERT INTO reconcile.outbox (kind, entity_id, content_hash, topic, key, value,
                                             headers, refused_at, sent_at)
               VALUES ('event', 'e1', 'h1', 't', 'e1', 'v1', '[]', now(), NULL),
                      ('event', 'e1', 'h2', 't', 'e1', 'v2', '[]', NULL, now()),
                      ('event', 'e2', 'h1', 't', 'e2', 'v1', '[]', now(), NULL)"""
        )
        await db.migrate(conn, migrations)
        rows = await conn.fetch(
            "SELECT entity_id, content_hash, superseded_at IS NOT NULL AS superseded"
            " FROM reconcile.outbox ORDER BY id"
        )
        assert [tuple(r) for r in rows] == [
            ("e1", "h1", True),
            ("e1", "h2", False),
            ("e2", "h1", False),  # nothing later: still refused, retried
        ]
    finally:
        await conn.close()


async def test_outputs_waiting_for_vibeapps_kafka_are_reported_until_the_relay_sends_them(
    infra: Infra, database_url: str
) -> None:
    pool = await db.create_pool(database_url, 2)
    try:
        async with pool.acquire() as conn:
            await db.migrate(conn, db.read_migrations("reconcile", MIGRATIONS))
            topic = f"vibe.events.t{uuid.uuid4().hex[:10]}"
            await conn.executemany(
                """INSERT INTO reconcile.outbox (kind, entity_id, content_hash, topic, key,
                                                 value, headers, queued_at)
                   VALUES ('event', $1, 'h', $2, $3, 'v', '[["content-type", "x"]]',
                           now() - interval '90 seconds')""",
                [(f"e{i}", topic, f"e{i}".encode()) for i in range(3)],
            )
        reporter = BacklogReporter(pool, Q.outbox_backlog, BEHIND)
        with capture_logs() as logs:
            behind = await reporter.once()
        assert behind is not None
        assert behind.pending == 3
        assert 90 <= behind.lag < 120
        assert REGISTRY.get_sample_value("outbox_pending") == 3
        (warning,) = [line for line in logs if line["event"] == "outbox.behind"]
        assert warning["pending"] == 3
        assert "Vibeapp's Kafka" in warning["hint"]

        relay = VibeRelay(pool, partial(kafka.make_producer, infra.kafka_settings()))
        producer = kafka.make_producer(infra.kafka_settings())
        await producer.start()
        try:
            assert (await relay.round(producer))[0] == 3
        finally:
            await producer.stop()
        assert await reporter.once() == (0, 0.0)
        assert REGISTRY.get_sample_value("outbox_lag_seconds") == 0
    finally:
        await pool.close()


async def test_an_output_vibeapps_kafka_refuses_holds_back_only_what_depends_on_it(
    infra: Infra, database_url: str, topic: str
) -> None:
    """Vibeapp's events topic takes 5 kB records: an event with a 20 kB description is
    refused for good. It is set aside and dead-lettered, its order waits, and another
    event's order and refund still go out (the whole relay had stopped at events)."""
    events_topic = f"vibe.events.small{uuid.uuid4().hex[:8]}"
    await create_small_topic(infra.kafka_settings(), events_topic, 5000, 1)
    ingest = await start_ingest(infra, database_url, topic)
    try:
        async with open_flow(
            infra, database_url, ingest, vibe_events_topic=events_topic, refused_retry_seconds=2
        ) as flow:
            big, fine = unique("ev"), unique("ev")
            held, going, back = unique("or"), unique("or"), unique("rf")
            huge = event(big)
            huge.description = "x" * 20_000
            await flow.send(huge, event(fine))
            await flow.send(order(held, big, {"t-" + held: 1000}))
            await flow.send(order(going, fine, {"t-" + going: 1000}))
            await flow.send(refund(back, going, fine, {"t-" + going: (1000, 1000, 0, 0)}))

            assert [r.key for r in await flow.outputs("event", 1)] == [fine.encode()]
            assert [r.key for r in await flow.outputs("order", 1)] == [going.encode()]
            assert [r.key for r in await flow.outputs("refund", 1)] == [back.encode()]
            [dead] = await read_topic(flow.kafka(), flow.settings.dlq_topic, 1)
            h = headers(dead)
            assert h["dlq-service"] == "reconcile"
            assert h["dlq-entity-id"] == big
            assert "MessageSizeTooLarge" in h["dlq-reason"]
            [row] = await flow.db(
                "SELECT refused_at IS NOT NULL AS refused, last_error FROM reconcile.outbox "
                "WHERE kind = 'event' AND entity_id = $1",
                big,
            )
            assert row["refused"]
            assert "MessageSizeTooLarge" in row["last_error"]
            await asyncio.sleep(1.0)
            assert [r.key for r in await flow.outputs("order", 1, timeout=1)] == [going.encode()], (
                "the refused event's order waits: never an order before its event"
            )
            # An operator hears of it: a discrepancy, announced, once per version (it was
            # a log line and a dead letter, again every retry window)
            await asyncio.sleep(2.5)  # refused again after refused_retry_seconds
            [found] = await discrepancies(flow, kind=pb.DISCREPANCY_KIND_OUTPUT_REFUSED)
            assert (found.event_id, found.status) == (big, pb.DISCREPANCY_STATUS_OPEN)
            assert "MessageSizeTooLarge" in found.description

            async def announced() -> bool:
                events = await ingest_events(database_url, "integration.conflict.detected")
                return [e["discrepancy_id"] for e in events] == [found.id]

            await eventually(announced, 10)
    finally:
        await ingest.stop()


async def test_a_refused_output_a_later_version_went_after_is_never_sent(
    infra: Infra, database_url: str, topic: str
) -> None:
    """An event refused for good (a 20 kB description; the topic takes 5 kB), then
    corrected: the corrected version goes at once (not after the retry window, here
    long), and the refused one is set aside for good, not tried again even once the
    topic would take it (Vibeapp would then hold the older content last); its
    discrepancy is settled and its order goes."""
    events_topic = f"vibe.events.small{uuid.uuid4().hex[:8]}"
    await create_small_topic(infra.kafka_settings(), events_topic, 5000, 1)
    ingest = await start_ingest(infra, database_url, topic)
    try:
        async with open_flow(
            infra, database_url, ingest, vibe_events_topic=events_topic, refused_retry_seconds=60
        ) as flow:
            e, o = unique("ev"), unique("or")
            huge = event(e)
            huge.description = "x" * 20_000
            await flow.send(huge)
            await read_topic(flow.kafka(), flow.settings.dlq_topic, 1)  # refused
            await flow.send(event(e, updated_at=2), order(o, e, {"t-" + o: 1000}))

            [sent] = await flow.outputs("event", 1, timeout=15)
            assert vibe.Event.FromString(sent.value).description == "An evening"
            assert [r.key for r in await flow.outputs("order", 1)] == [o.encode()]
            await flow.settled()
            [found] = await discrepancies(flow, kind=pb.DISCREPANCY_KIND_OUTPUT_REFUSED)
            assert found.status == pb.DISCREPANCY_STATUS_ACCEPTED
            assert "or a later version of it, went to Vibeapp" in found.resolution_note

            await set_topic_limit(flow.kafka(), events_topic, 1_000_000)
            await flow.db("UPDATE reconcile.outbox SET refused_at = now() - interval '1 hour'")
            await asyncio.sleep(2)  # past its retry window: a retry would get through now
            events = await flow.outputs("event", 2, timeout=2)
            assert [vibe.Event.FromString(r.value).description for r in events] == ["An evening"], (
                "the older content never reaches Vibeapp"
            )
            dead = await read_topic(flow.kafka(), flow.settings.dlq_topic, 2, timeout=1)
            assert len(dead) == 1, "dead-lettered once, not again every retry window"
    finally:
        await ingest.stop()


async def test_an_upgrade_hands_unpublished_discrepancies_to_the_announcements(
    database_url: str,
) -> None:
    """Migration 005: discrepancies the old worker had not published yet are published
    by the announcements worker, as the same event; published ones are not again."""
    migrations = db.read_migrations("reconcile", MIGRATIONS)
    conn = await asyncpg.connect(database_url)
    try:
        await db.migrate(conn, migrations[:4])
        await conn.execute(
            """INSERT INTO reconcile.discrepancies
                   (id, kind, refund_id, order_id, description, expected_amount, published_at)
               VALUES ('6f1c2a3b-0000-4000-8000-000000000001', 'double_refund', 'rf-1', 'or-1',
                       'owed', 500, NULL),
                      ('6f1c2a3b-0000-4000-8000-000000000002', 'unknown_order', '', 'or-2',
                       'done', 0, now())"""
        )
        assert await db.migrate(conn, migrations[:5]) == [5]
        rows = await conn.fetch("SELECT * FROM reconcile.announcements")
    finally:
        await conn.close()
    [row] = rows
    assert (row["event_type"], row["key"], row["subject"]) == (
        "integration.conflict.detected",
        "6f1c2a3b-0000-4000-8000-000000000001",
        "refunds/rf-1",
    )
    data = json.loads(row["data"])
    assert (data["kind"], data["refund_id"], data["expected_amount"]) == (
        "double_refund",
        "rf-1",
        500,
    )


async def test_a_refund_ticketland_reverses_after_it_was_sent_is_a_discrepancy(
    flow: ReconcileFlow,
) -> None:
    """Vibeapp keeps a refund it was sent; Ticketland setting it REJECTED afterwards was
    only a line in the refund's history."""
    e, o, r = unique("ev"), unique("or"), unique("rf")
    t = "t-" + o
    await flow.send(event(e), order(o, e, {t: 1000}))
    await flow.send(refund(r, o, e, {t: (1000, 1000, 0, 0)}, updated_at=1))
    await flow.settled()
    assert [x.key for x in await flow.outputs("refund", 1)] == [r.encode()]
    reversed_ = refund(r, o, e, {t: (1000, 1000, 0, 0)}, status="REJECTED", updated_at=2)
    await flow.send(reversed_)
    await flow.send(reversed_)  # repeated: still one finding
    await flow.settled()
    [found] = await discrepancies(flow, refund_id=r)
    assert found.kind == pb.DISCREPANCY_KIND_REFUND_REVERSED
    assert found.status == pb.DISCREPANCY_STATUS_OPEN
    assert "then Ticketland set it REJECTED" in found.description
    assert [x.key for x in await flow.outputs("refund", 2, timeout=2)] == [r.encode()]

    async def announced_for_it() -> list[dict[str, Any]]:
        events = await ingest_events(flow.database_url, "integration.conflict.detected")
        return [ev for ev in events if ev["refund_id"] == r]

    async def published() -> bool:
        return bool(await announced_for_it())

    await eventually(published, 20)
    [announced_] = await announced_for_it()
    assert announced_["kind"] == "refund_reversed"


async def test_ledger_lookups_stay_index_probes_while_a_new_ledger_grows(
    database_url: str,
) -> None:
    """Looking up 150 of 50,000 tickets (and orders) by id on tables not analysed yet
    (a new ledger, until autovacuum's first pass) reads them through the index, not the
    whole table (which the planner chose for `id = ANY($1)`: ~10 ms a batch)."""
    conn = await asyncpg.connect(database_url)
    try:
        await db.migrate(conn, db.read_migrations("reconcile", MIGRATIONS))
        ids = [f"x{i}" for i in range(50_000)]
        await conn.execute(
            "INSERT INTO reconcile.tickets (id, order_id, event_id, barcode, price_nominal,"
            " currency, status) SELECT id, 'o', 'e', 'b', 1, 'RUB', 'active'"
            " FROM unnest($1::text[]) AS id",
            ids,
        )
        await conn.execute(
            "INSERT INTO reconcile.orders (id, number, status, event_id, organizer_id, doc,"
            " source_time, delivery) SELECT id, id, 'DONE', 'e', 'g', '', 0, 'sent'"
            " FROM unnest($1::text[]) AS id",
            ids,
        )
        scans = (
            "SELECT sum(seq_scan) FROM pg_stat_user_tables"
            " WHERE relid IN ('reconcile.tickets'::regclass, 'reconcile.orders'::regclass)"
        )
        await conn.execute("SELECT pg_stat_force_next_flush()")
        before = await conn.fetchval(scans)
        tickets = await conn.fetch(Q.tickets_by_id, [*ids[100:250], "unknown"])
        orders = await conn.fetch(Q.orders_by_id, [*ids[100:250], "unknown"])
        await conn.execute("SELECT pg_stat_force_next_flush()")
        after = await conn.fetchval(scans)
    finally:
        await conn.close()
    assert sorted(r["id"] for r in tickets) == sorted(ids[100:250])
    assert sorted(r["id"] for r in orders) == sorted(ids[100:250])
    assert after == before, f"sequential scans {before} -> {after}"


async def test_two_replicas_send_each_entity_s_history_once_while_they_rebalance(
    flow: ReconcileFlow,
) -> None:
    """Events paused and active again, orders whose ticket is added then taken out, sent
    while a second replica joins and the first leaves: each entity's outputs end with
    what Ticketland says last, and no content is sent twice in a row."""
    events = [unique("ev") for _ in range(6)]
    orders = {unique("or"): events[i % 6] for i in range(18)}
    await flow.send(*(event(e) for e in events))
    await flow.send(*(order(o, e, {"a-" + o: 100}) for o, e in orders.items()))
    joined = asyncio.create_task(flow.add_replica())
    for n in range(2, 6):
        status = tl.Event.STATUS_PAUSED if n % 2 == 0 else tl.Event.STATUS_ACTIVE
        await flow.send(*(event(e, updated_at=n, status=status) for e in events))
        extra = {"b-": 50} if n % 2 == 0 else {}
        await flow.send(
            *(
                order(o, e, {"a-" + o: 100, **{p + o: v for p, v in extra.items()}}, updated_at=n)
                for o, e in orders.items()
            )
        )
    await joined
    await flow.running.pop(0).stop(1)
    await flow.settled(60)

    sent_events = await flow.outputs("event", len(events), timeout=5)
    sent_orders = await flow.outputs("order", len(orders), timeout=5)
    history: dict[str, list[bytes]] = {}
    for r in [*sent_events, *sent_orders]:
        history.setdefault(r.key.decode(), []).append(r.value)
    assert sorted(history) == sorted([*events, *orders])
    for key, values in history.items():
        assert all(a != b for a, b in itertools.pairwise(values)), f"{key} sent twice in a row"
    for e in events:
        assert vibe.Event.FromString(history[e][-1]).status == vibe.EVENT_STATUS_ACTIVE
    for o in orders:
        assert len(vibe.Order.FromString(history[o][-1]).tickets) == 1


async def _purge_aged_inputs(flow: ReconcileFlow, days: float = 100) -> dict[str, int]:
    """Ages every input record (and dead-lettered one) by ``days``, then runs the
    service's retention (INPUT_RETENTION_DAYS=90)."""
    await flow.db(
        "UPDATE reconcile.inputs SET received_at = now() - make_interval(days => $1)", days
    )
    await flow.db(
        "UPDATE reconcile.dead_inputs SET dead_at = now() - make_interval(days => $1)", days
    )
    pool = await db.create_pool(flow.database_url, 1)
    try:
        settings = flow.settings.model_copy(update={"input_retention_days": 90})
        return await purge_once(pool, purges(settings), batch=2)
    finally:
        await pool.close()


async def test_a_replay_after_retention_purged_the_inputs_sends_nothing_twice(
    flow: ReconcileFlow,
) -> None:
    """Purged input coordinates no longer recognise a replayed record: each partition
    keeps the offset it was purged up to, and a replay skips what lies at or below it
    (also a record dead-lettered before: it would go to the DLQ again)."""
    e, o, r = unique("ev"), unique("or"), unique("rf")
    await flow.send_raw(flow.settings.ticketland_orders_topic, b"\xff\xff not protobuf")
    await flow.send(event(e), order(o, e, {"a-" + o: 1000}))
    await flow.send(order(o, e, {"a-" + o: 1000, "b-" + o: 500}, updated_at=2))
    await flow.send(refund(r, o, e, {"a-" + o: (1000, 1000, 0, 0)}, updated_at=3))
    await flow.settled()
    assert len(await read_topic(flow.kafka(), flow.settings.dlq_topic, 1)) == 1
    outbox = await flow.db("SELECT kind, entity_id, content_hash FROM reconcile.outbox")
    sent = {kind: len(await flow.outputs(kind, 1)) for kind in ("event", "order", "refund")}

    counts = await _purge_aged_inputs(flow)

    assert (counts["inputs"], counts["dead_inputs"]) == (4, 1)
    assert (await flow.db("SELECT count(*) AS n FROM reconcile.inputs"))[0]["n"] == 0
    assert (await flow.db("SELECT count(*) AS n FROM reconcile.dead_inputs"))[0]["n"] == 0
    # Every input topic from the beginning, in a new consumer group.
    replay_group = unique("replay")
    await flow.add_replica(reconcile_group=replay_group)
    flow.settings = flow.settings.model_copy(update={"reconcile_group": replay_group})
    await flow.settled()
    await asyncio.sleep(1)  # what a second output or dead letter would take to be sent
    after = await flow.db("SELECT kind, entity_id, content_hash FROM reconcile.outbox")
    assert sorted(map(tuple, after)) == sorted(map(tuple, outbox))
    for kind, count in sent.items():
        assert len(await flow.outputs(kind, count + 1, timeout=2)) == count, kind
    assert len(await read_topic(flow.kafka(), flow.settings.dlq_topic, 2, timeout=2)) == 1
    # A new record after the purged ones is taken as ever.
    await flow.send(order(o, e, {"a-" + o: 1000, "b-" + o: 500, "c-" + o: 300}, updated_at=4))
    await flow.settled()
    assert len(await flow.outputs("order", sent["order"] + 1)) == sent["order"] + 1


async def test_a_reconciliation_reaching_before_purged_inputs_says_so(
    flow: ReconcileFlow,
) -> None:
    """The ledger and what Vibeapp was sent are kept: the report is complete but for the
    input totals, which it says miss what was taken before the purge horizon."""
    e, o = unique("ev"), unique("or")
    await flow.send(event(e), order(o, e, {"a-" + o: 1000}))
    await flow.settled()
    for table in ("events", "orders"):  # as if all this had come 100 days ago
        await flow.db(f"UPDATE reconcile.{table} SET first_seen = now() - interval '100 days'")
    await _purge_aged_inputs(flow)

    report = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e))).report
    assert report.balanced, list(report.findings)
    assert (report.totals.orders, report.totals.tickets_sold, report.totals.tickets_sent) == (
        1,
        1,
        1,
    )
    assert report.inputs.order_records == 0
    horizon = report.inputs_purged_before.ToDatetime(tzinfo=UTC)
    assert abs(horizon - (datetime.now(UTC) - timedelta(days=90))) < timedelta(minutes=1)

    def window(days_ago: float) -> pb.RunReconciliationRequest:
        scope = pb.TimeRange()
        scope.start_time.FromDatetime(datetime.now(UTC) - timedelta(days=days_ago))
        scope.end_time.FromDatetime(datetime.now(UTC) + timedelta(minutes=1))
        return pb.RunReconciliationRequest(range=scope)

    old = (await flow.stub.RunReconciliation(window(120))).report
    assert old.balanced, list(old.findings)
    assert old.totals.orders == 1
    assert old.inputs_purged_before == report.inputs_purged_before
    recent = (await flow.stub.RunReconciliation(window(1))).report
    assert not recent.HasField("inputs_purged_before")

    async def announced() -> bool:
        events = await ingest_events(flow.database_url, "integration.cash.reconciled")
        return len(events) >= 3

    await eventually(announced, 10)
    flagged = {
        ev["report_id"]: ev.get("inputs_purged_before")
        for ev in await ingest_events(flow.database_url, "integration.cash.reconciled")
    }
    assert flagged[old.id] == old.inputs_purged_before.ToJsonString()
    assert flagged[recent.id] is None


async def test_a_record_a_crash_cut_off_is_taken_after_a_purge_of_the_later_ones(
    flow: ReconcileFlow,
) -> None:
    """A batch's dead letters (and each of its parts) commit on their own: a crash can
    leave a later record of a partition recorded and an earlier one not taken. If
    reconcile then stays down past INPUT_RETENTION_DAYS, the purge at its start must not
    move the partition's horizon over the record not taken: the replay takes it."""
    e, o = unique("ev"), unique("or")
    await flow.send(event(e))
    await flow.settled()
    await flow.running.pop().stop(1)
    orders = flow.settings.ticketland_orders_topic
    ctype = [("content-type", PROTOBUF.encode())]
    # On one partition (one key): the order, then a record that goes to the DLQ.
    good = order(o, e, {"a-" + o: 1000}).SerializeToString()
    await flow.producer.send_and_wait(orders, good, key=b"k-" + o.encode(), headers=ctype)
    await flow.producer.send_and_wait(orders, b"\xff not protobuf", key=b"k-" + o.encode())
    locker = await asyncpg.connect(flow.database_url)
    try:
        async with locker.transaction():  # the order's transaction waits: cut off
            await locker.execute("LOCK TABLE reconcile.inputs IN ACCESS EXCLUSIVE MODE")
            replica = await flow.add_replica()

            async def dead_lettered() -> bool:
                return bool(await flow.db("SELECT 1 FROM reconcile.dead_inputs"))

            await eventually(dead_lettered, 20)
            await asyncio.sleep(0.5)
            flow.running.remove(replica)
            await replica.stop(0.1)
    finally:
        await locker.close()
    assert not await flow.db("SELECT 1 FROM reconcile.orders WHERE id = $1", o)

    await _purge_aged_inputs(flow)  # down for longer than INPUT_RETENTION_DAYS

    await flow.add_replica()
    await flow.settled()
    assert await flow.db("SELECT 1 FROM reconcile.orders WHERE id = $1", o)
    sent = [vibe.Order.FromString(r.value).id for r in await flow.outputs("order", 1)]
    assert o in sent
    assert len(await read_topic(flow.kafka(), flow.settings.dlq_topic, 2, timeout=2)) == 1


async def test_a_report_past_its_retention_is_not_found_and_the_answer_says_why(
    flow: ReconcileFlow,
) -> None:
    """A purged report answers NOT_FOUND naming REPORT_RETENTION_DAYS, not as if its id
    had never been given."""
    e = unique("ev")
    await flow.send(event(e))
    await flow.settled()
    report = (await flow.stub.RunReconciliation(pb.RunReconciliationRequest(event_id=e))).report
    await flow.db(
        "UPDATE reconcile.reports SET created_at = now() - interval '400 days' WHERE id = $1",
        uuid.UUID(report.id),
    )
    pool = await db.create_pool(flow.database_url, 1)
    try:
        counts = await purge_once(pool, purges(flow.settings))  # REPORT_RETENTION_DAYS=365
    finally:
        await pool.close()
    assert counts["reports"] >= 1

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await flow.stub.GetReconciliationReport(pb.GetReconciliationReportRequest(id=report.id))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    assert "reports are kept 365 days, REPORT_RETENTION_DAYS" in (exc.value.details() or "")
