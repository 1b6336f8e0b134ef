"""The reconciliation's comparison of the ledger with what Vibeapp was sent: pure logic.

The rows are shaped like the report_orders, report_refunds and report_refunded_tickets
queries of sql/queries.sql.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from herald.reconcile.v1 import reconcile_pb2 as pb

from herald.services.reconcile.reconciliation import Outcome, Repair, compare

EVENT_SENT = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
ORDER_SENT = EVENT_SENT + timedelta(seconds=5)
REFUND_SENT = EVENT_SENT + timedelta(minutes=10)

Row = dict[str, object]


def order(
    order_id: str = "o1",
    *,
    event_id: str = "e1",
    organizer_id: str = "g1",
    status: str = "EXECUTED",
    delivery: str = "sent",
    tickets: int = 2,
    amount: int = 2_000,
    refunded: int = 0,
    queued: int = 1,
    sent_at: datetime | None = ORDER_SENT,
    tickets_sent: int | None = None,
    event_known: bool = True,
    event_queued: int = 1,
    event_sent_at: datetime | None = EVENT_SENT,
) -> Row:
    """A report_orders row: by default a sold order sent after its event, all tickets."""
    return {
        "id": order_id,
        "event_id": event_id,
        "organizer_id": organizer_id,
        "status": status,
        "delivery": delivery,
        "tickets": tickets,
        "amount": amount,
        "refunded": refunded,
        "queued": queued,
        "sent_at": sent_at,
        "tickets_sent": tickets if tickets_sent is None else tickets_sent,
        "event_known": event_known,
        "event_queued": event_queued,
        "event_sent_at": event_sent_at,
    }


def refund(
    refund_id: str = "r1",
    *,
    order_id: str = "o1",
    event_id: str = "e1",
    organizer_id: str = "g1",
    status: str = "APPROVED",
    state: str = "sent",
    customer: int = 900,
    order_delivery: str | None = "sent",
    queued: int = 1,
    sent_at: datetime | None = REFUND_SENT,
) -> Row:
    """A report_refunds row: by default an approved refund sent to Vibeapp."""
    return {
        "id": refund_id,
        "order_id": order_id,
        "event_id": event_id,
        "organizer_id": organizer_id,
        "status": status,
        "state": state,
        "customer": customer,
        "order_delivery": order_delivery,
        "queued": queued,
        "sent_at": sent_at,
    }


def ticket(
    ticket_id: str = "t1",
    *,
    refund_id: str | None = "r1",
    refunded: bool = True,
    records: int = 1,
    refunds: int = 1,
    event_id: str = "e1",
    organizer_id: str = "g1",
) -> Row:
    """A report_refunded_tickets row: by default refunded in the ledger and sent once."""
    return {
        "id": ticket_id,
        "refund_id": refund_id,
        "refunded": refunded,
        "records": records,
        "refunds": refunds,
        "event_id": event_id,
        "organizer_id": organizer_id,
    }


def kinds(out: Outcome) -> list[tuple[str, str]]:
    return [(f.kind, f.entity_id) for f in out.findings]


def only_orders(*orders: Row) -> Outcome:
    return compare(list(orders), [], [])


# ------------------------------------------------------------------- balanced


def balanced_ledger() -> tuple[list[Row], list[Row], list[Row]]:
    """Two organizers, three events; one ticket of o1 refunded and sent as refunded."""
    orders = [
        order("o1", event_id="e1", tickets=3, amount=3_000, refunded=1),
        order("o2", event_id="e1", tickets=1, amount=1_500),
        order("o3", event_id="e2", tickets=2, amount=800),
        order("o4", event_id="e3", organizer_id="g2", tickets=4, amount=4_000, refunded=2),
    ]
    refunds = [
        refund("r1", order_id="o1", event_id="e1", customer=900),
        refund("r2", order_id="o4", event_id="e3", organizer_id="g2", customer=1_700),
    ]
    tickets = [
        ticket("t1", refund_id="r1", event_id="e1"),
        ticket("t7", refund_id="r2", event_id="e3", organizer_id="g2"),
        ticket("t8", refund_id="r2", event_id="e3", organizer_id="g2"),
    ]
    return orders, refunds, tickets


def test_a_balanced_ledger_has_no_findings_and_no_repairs() -> None:
    out = compare(*balanced_ledger())
    assert out.findings == []
    assert out.repairs == []


def test_a_balanced_ledger_totals_overall() -> None:
    out = compare(*balanced_ledger())
    assert out.totals == pb.Totals(
        orders=4,
        tickets_sold=10,
        sold_amount=9_300,
        tickets_refunded=3,
        refunded_amount=2_600,
        orders_sent=4,
        tickets_sent=10,
        tickets_refunded_sent=3,
    )


def test_a_balanced_ledger_totals_per_event() -> None:
    out = compare(*balanced_ledger())
    assert set(out.events) == {"e1", "e2", "e3"}
    assert out.events["e1"] == pb.EventTotals(
        event_id="e1",
        organizer_id="g1",
        totals=pb.Totals(
            orders=2,
            tickets_sold=4,
            sold_amount=4_500,
            tickets_refunded=1,
            refunded_amount=900,
            orders_sent=2,
            tickets_sent=4,
            tickets_refunded_sent=1,
        ),
    )
    assert out.events["e2"] == pb.EventTotals(
        event_id="e2",
        organizer_id="g1",
        totals=pb.Totals(orders=1, tickets_sold=2, sold_amount=800, orders_sent=1, tickets_sent=2),
    )
    assert out.events["e3"] == pb.EventTotals(
        event_id="e3",
        organizer_id="g2",
        totals=pb.Totals(
            orders=1,
            tickets_sold=4,
            sold_amount=4_000,
            tickets_refunded=2,
            refunded_amount=1_700,
            orders_sent=1,
            tickets_sent=4,
            tickets_refunded_sent=2,
        ),
    )


def test_a_balanced_ledger_totals_per_organizer() -> None:
    out = compare(*balanced_ledger())
    assert set(out.organizers) == {"g1", "g2"}
    assert out.organizers["g1"] == pb.OrganizerTotals(
        organizer_id="g1",
        totals=pb.Totals(
            orders=3,
            tickets_sold=6,
            sold_amount=5_300,
            tickets_refunded=1,
            refunded_amount=900,
            orders_sent=3,
            tickets_sent=6,
            tickets_refunded_sent=1,
        ),
    )
    assert out.organizers["g2"] == pb.OrganizerTotals(
        organizer_id="g2",
        totals=pb.Totals(
            orders=1,
            tickets_sold=4,
            sold_amount=4_000,
            tickets_refunded=2,
            refunded_amount=1_700,
            orders_sent=1,
            tickets_sent=4,
            tickets_refunded_sent=2,
        ),
    )


def test_per_event_and_per_organizer_totals_add_up_to_the_overall_ones() -> None:
    out = compare(*balanced_ledger())
    for field in pb.Totals.DESCRIPTOR.fields_by_name:
        if field == "amounts":  # per currency: see test_amounts_are_also_totalled_per_currency
            continue
        overall = getattr(out.totals, field)
        assert sum(getattr(e.totals, field) for e in out.events.values()) == overall
        assert sum(getattr(g.totals, field) for g in out.organizers.values()) == overall


def test_nothing_in_scope_is_balanced_and_empty() -> None:
    out = compare([], [], [])
    assert out.totals == pb.Totals()
    assert out.events == {}
    assert out.organizers == {}
    assert out.findings == []
    assert out.repairs == []


@pytest.mark.parametrize("status", ["EXECUTED", "DONE"])
def test_executed_and_done_orders_are_sold(status: str) -> None:
    out = only_orders(order(status=status, tickets=2, amount=2_000))
    assert out.totals.orders == 1
    assert out.totals.tickets_sold == 2
    assert out.totals.sold_amount == 2_000
    assert out.findings == []


@pytest.mark.parametrize("status", ["IN_PROGRESS", "CANCELLED", "EXPIRED"])
def test_orders_not_sold_are_not_counted_nor_checked(status: str) -> None:
    # never queued, event unknown: none of it matters for an order that is not a sale
    out = only_orders(
        order(
            "o9",
            status=status,
            delivery="not_sold",
            queued=0,
            sent_at=None,
            event_known=False,
        ),
        order("o1", tickets=2, amount=2_000),
    )
    assert out.totals == pb.Totals(
        orders=1, tickets_sold=2, sold_amount=2_000, orders_sent=1, tickets_sent=2
    )
    assert out.findings == []
    assert out.repairs == []


def test_an_event_with_only_unsold_orders_has_no_totals() -> None:
    out = only_orders(order(status="CANCELLED", delivery="not_sold", queued=0, sent_at=None))
    assert out.events == {}
    assert out.organizers == {}
    assert out.totals == pb.Totals()


def test_refunded_amount_counts_only_sent_refunds_customer_amounts() -> None:
    refunds = [
        refund("r1", state="sent", customer=900),
        refund("r2", state="ready", customer=111, order_delivery="parked", queued=0, sent_at=None),
        refund("r3", state="held", customer=222, queued=0, sent_at=None),
        refund("r4", state="rejected", status="REJECTED", customer=333, queued=0, sent_at=None),
        refund("r5", state="open", status="PENDING", customer=444, queued=0, sent_at=None),
        refund("r6", state="waiting_order", customer=555, queued=0, sent_at=None),
        refund("r7", state="blocked", customer=666, queued=0, sent_at=None),
    ]
    out = compare([], refunds, [])
    assert out.totals.refunded_amount == 900
    assert out.events["e1"].totals.refunded_amount == 900
    assert out.organizers["g1"].totals.refunded_amount == 900
    assert out.findings == []


def test_an_unsent_order_counts_as_sold_not_as_sent() -> None:
    out = only_orders(order("o1", tickets=3, amount=3_000, queued=1, sent_at=None))
    t = out.totals
    assert (t.orders, t.tickets_sold, t.sold_amount) == (1, 3, 3_000)
    assert (t.orders_sent, t.tickets_sent) == (0, 0)


# ------------------------------------------------------------------ orders


def test_order_waiting_for_event() -> None:
    parked = order(
        "o1",
        delivery="parked",
        queued=0,
        sent_at=None,
        event_known=False,
        event_queued=0,
        event_sent_at=None,
    )
    out = only_orders(parked)
    assert kinds(out) == [("order_waiting_for_event", "o1")]
    assert "o1" in out.findings[0].description
    assert "e1" in out.findings[0].description
    assert out.repairs == []  # nothing to send until the event arrives
    assert out.totals.orders == 1
    assert out.totals.orders_sent == 0


def test_order_not_sent_is_repaired_as_an_order() -> None:
    out = only_orders(order("o1", queued=0, sent_at=None))
    assert kinds(out) == [("order_not_sent", "o1")]
    assert "o1" in out.findings[0].description
    assert out.repairs == [Repair("order", "o1")]


def test_an_order_queued_not_sent_is_output_pending() -> None:
    out = only_orders(order("o1", queued=1, sent_at=None))
    assert kinds(out) == [("output_pending", "o1")]
    assert out.repairs == []  # the relay will send it


def test_an_order_sent_before_its_event() -> None:
    out = only_orders(order("o1", sent_at=EVENT_SENT - timedelta(seconds=1)))
    assert kinds(out) == [("order_before_event", "o1")]
    assert "o1" in out.findings[0].description
    assert "e1" in out.findings[0].description
    assert out.repairs == []


@pytest.mark.parametrize("event_queued", [0, 1])
def test_an_order_sent_whose_event_never_was_is_before_its_event(event_queued: int) -> None:
    out = only_orders(order("o1", event_queued=event_queued, event_sent_at=None))
    assert kinds(out) == [("order_before_event", "o1")]


def test_an_order_sent_with_its_event_in_one_batch_is_not_before_it() -> None:
    # the relay marks a whole batch sent at the same instant
    out = only_orders(order("o1", sent_at=EVENT_SENT, event_sent_at=EVENT_SENT))
    assert out.findings == []


def test_each_order_gets_at_most_one_order_finding() -> None:
    # unknown event wins over never queued; never queued over pending
    out = only_orders(
        order("o1", queued=0, sent_at=None, event_known=False, event_sent_at=None),
        order("o2", queued=0, sent_at=None, event_sent_at=None),
        order("o3", queued=1, sent_at=None, event_sent_at=None),
    )
    assert kinds(out) == [
        ("order_waiting_for_event", "o1"),
        ("order_not_sent", "o2"),
        ("output_pending", "o3"),
    ]


# ------------------------------------------------------------------ refunds


def test_a_sent_refund_never_queued_is_repaired_as_a_refund() -> None:
    out = compare([], [refund("r1", state="sent", queued=0, sent_at=None)], [])
    assert kinds(out) == [("refund_not_sent", "r1")]
    assert "r1" in out.findings[0].description
    assert out.repairs == [Repair("refund", "r1")]
    assert out.totals.refunded_amount == 900  # the ledger's side still counts it


def test_a_ready_refund_whose_order_was_sent_is_not_sent() -> None:
    stuck = refund("r1", state="ready", order_delivery="sent", queued=0, sent_at=None)
    out = compare([], [stuck], [])
    assert kinds(out) == [("refund_not_sent", "r1")]
    assert out.repairs == [Repair("refund", "r1")]
    assert out.totals.refunded_amount == 0


@pytest.mark.parametrize("order_delivery", ["parked", None])
def test_a_ready_refund_whose_order_has_not_gone_is_not_a_finding(
    order_delivery: str | None,
) -> None:
    waiting = refund("r1", state="ready", order_delivery=order_delivery, queued=0, sent_at=None)
    out = compare([], [waiting], [])
    assert out.findings == []
    assert out.repairs == []


@pytest.mark.parametrize("state", ["open", "waiting_order", "held", "rejected", "blocked"])
def test_refunds_not_for_vibeapp_are_not_findings(state: str) -> None:
    out = compare([], [refund("r1", state=state, queued=0, sent_at=None)], [])
    assert out.findings == []
    assert out.repairs == []


def test_a_refund_queued_not_sent_is_output_pending() -> None:
    out = compare([], [refund("r1", state="sent", queued=1, sent_at=None)], [])
    assert kinds(out) == [("output_pending", "r1")]
    assert out.repairs == []


# ------------------------------------------------------------------ tickets


def test_a_ticket_sent_as_refunded_that_the_ledger_has_not_refunded() -> None:
    o = order("o1", tickets=2, refunded=0)
    stray = ticket("t1", refund_id=None, refunded=False, records=1)
    out = compare([o], [], [stray])
    assert ("ticket_refund_not_in_ledger", "t1") in kinds(out)
    assert "t1" in out.findings[0].description
    assert out.totals.tickets_refunded == 0
    assert out.totals.tickets_refunded_sent == 1
    assert out.repairs == []


def test_a_ticket_sent_as_refunded_twice() -> None:
    o = order("o1", tickets=2, refunded=1)
    refunds = [refund("r1"), refund("r2", customer=0)]
    twice = ticket("t1", refund_id="r1", records=2, refunds=2)
    out = compare([o], refunds, [twice])
    assert kinds(out) == [("ticket_refund_sent_twice", "t1")]
    assert "t1" in out.findings[0].description
    assert "2 records" in out.findings[0].description
    assert out.totals.tickets_refunded_sent == 1  # one ticket, however many records
    assert out.repairs == []


def test_a_refunded_ticket_sent_once_is_not_a_finding() -> None:
    out = compare([order("o1", refunded=1)], [refund("r1")], [ticket("t1")])
    assert out.findings == []


# ------------------------------------------------------------------ counts


def test_counts_differ_when_fewer_tickets_were_sent_than_sold() -> None:
    out = only_orders(order("o1", tickets=3, tickets_sent=2))
    assert kinds(out) == [("counts_differ", "e1")]
    assert "3 tickets in the ledger" in out.findings[0].description
    assert "2 as sent" in out.findings[0].description
    assert out.repairs == []


@pytest.mark.parametrize(
    ("queued", "kind", "repairs"),
    [(0, "order_not_sent", [Repair("order", "o2")]), (1, "output_pending", [])],
)
def test_an_unsent_order_beside_a_sent_one_is_not_also_a_count_difference(
    queued: int, kind: str, repairs: list[Repair]
) -> None:
    # Alone, an unsent order is reported once (its own finding), not as counts_differ;
    # the sent order's tickets all went, so a sibling sent order must not change that.
    alone = only_orders(order("o2", tickets=3, queued=queued, sent_at=None))
    assert kinds(alone) == [(kind, "o2")]
    out = only_orders(order("o1", tickets=2), order("o2", tickets=3, queued=queued, sent_at=None))
    assert kinds(out) == [(kind, "o2")]
    assert out.repairs == repairs


def test_counts_are_compared_per_event() -> None:
    out = only_orders(
        order("o1", event_id="e1", tickets=2, tickets_sent=3),
        order("o2", event_id="e2", tickets=3, tickets_sent=2),
    )
    # overall 5 sold and 5 sent, yet each event is off
    assert out.totals.tickets_sold == out.totals.tickets_sent
    assert kinds(out) == [("counts_differ", "e1"), ("counts_differ", "e2")]


def test_a_refunded_ticket_its_sent_refund_did_not_carry_is_a_finding() -> None:
    o = order("o1", tickets=2, refunded=2)
    out = compare([o], [refund("r1")], [ticket("t1"), ticket("t2", records=0, refunds=0)])
    assert kinds(out) == [("ticket_refund_not_sent", "t2")]
    assert "r1" in out.findings[0].description
    assert out.totals.tickets_refunded == 2
    assert out.totals.tickets_refunded_sent == 1
    # Repairing r1 (queued again) mends it; repairing another refund does not.
    assert out.repaired_by(out.findings[0], {"r1"})
    assert not out.repaired_by(out.findings[0], {"r2"})


def test_a_refunded_ticket_whose_refund_waits_for_its_order_is_not_a_finding() -> None:
    o = order("o1", tickets=2, refunded=1)
    waiting = refund("r1", state="ready", order_delivery="parked", queued=0, sent_at=None)
    out = compare([o], [waiting], [ticket("t1", records=0, refunds=0)])
    assert kinds(out) == []


def test_a_ticket_not_in_the_ledger_is_reported_once() -> None:
    stray = ticket("t1", refund_id=None, refunded=False)
    out = compare([order("o1")], [], [stray])
    assert kinds(out) == [("ticket_refund_not_in_ledger", "t1")]


def test_refunded_counts_alone_are_not_a_count_difference() -> None:
    # Refunded tickets are checked ticket by ticket (above), not as a count.
    o = order("o1", tickets=3, tickets_sent=2, refunded=1)
    out = compare([o], [], [])
    assert kinds(out) == [("counts_differ", "e1")]


def test_amounts_are_also_totalled_per_currency() -> None:
    """Minor units of different currencies are not added together there: the plain
    sums do (and say so), the amounts per currency do not."""
    rub = {**order("o1", amount=2_000), "amounts": json.dumps({"RUB": 2_000})}
    eur = {**order("o2", event_id="e2", amount=50), "amounts": json.dumps({"EUR": 50})}
    both = {
        **order("o3", amount=1_100, tickets=2),
        "amounts": json.dumps({"RUB": 1_000, "EUR": 100}),
    }
    refunds = [
        {**refund("r1", order_id="o1", customer=900), "currency": "RUB"},
        {**refund("r2", order_id="o2", event_id="e2", customer=40), "currency": "EUR"},
    ]
    out = compare([rub, eur, both], refunds, [])

    def amounts(t: pb.Totals) -> list[tuple[str, int, int]]:
        return [(a.currency, a.sold_amount, a.refunded_amount) for a in t.amounts]

    assert (out.totals.sold_amount, out.totals.refunded_amount) == (3_150, 940)
    assert amounts(out.totals) == [("EUR", 150, 40), ("RUB", 3_000, 900)]
    assert amounts(out.events["e1"].totals) == [("EUR", 100, 0), ("RUB", 3_000, 900)]
    assert amounts(out.events["e2"].totals) == [("EUR", 50, 40)]
    assert amounts(out.organizers["g1"].totals) == amounts(out.totals)


def test_a_refund_whose_currency_is_not_known_is_totalled_under_none() -> None:
    """No ticket gives its currency: its amount is under "", so each currency's refunded
    amounts still add up to refunded_amount."""
    rows = [{**refund("r1", customer=900), "currency": ""}]
    out = compare([{**order(), "amounts": json.dumps({"RUB": 2_000})}], rows, [])
    got = [(a.currency, a.sold_amount, a.refunded_amount) for a in out.totals.amounts]
    assert got == [("", 0, 900), ("RUB", 2_000, 0)]
    assert sum(a.refunded_amount for a in out.totals.amounts) == out.totals.refunded_amount
