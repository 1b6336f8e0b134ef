"""Refund checks against the ledger: pure logic."""

from __future__ import annotations

import uuid

import pytest
from ticketland.v1 import ticketland_pb2 as tl

from herald.services.reconcile.checks import (
    Finding,
    TicketState,
    changed_since,
    check_refund,
    discrepancy_id,
    order_mismatch,
    reversal,
    withdrawal,
)


def money(refund_nominal: int, customer: int, org: int = 0, agent: int = 0) -> tl.Money:
    return tl.Money(refund_nominal=refund_nominal, customer=customer, org=org, agent=agent)


def rticket(ticket_id: str, amount: int = 1_000, price: int = 1_000) -> tl.RefundTicket:
    """A refund ticket whose split adds up."""
    return tl.RefundTicket(
        ticket_id=ticket_id, price=price, nominal=price, money=money(amount, amount - 100, 100)
    )


def refund(*tickets: tl.RefundTicket) -> tl.RefundRequest:
    """An approved refund whose total is the sum of its tickets, split evenly."""
    total = sum(t.money.refund_nominal for t in tickets)
    return tl.RefundRequest(
        id="r1",
        status=tl.RefundRequest.STATUS_APPROVED,
        order_id="o1",
        event_id="e1",
        money=money(total, total - 300, 200, 100),
        tickets=list(tickets),
    )


def ledger(*states: TicketState) -> dict[str, TicketState]:
    return {s.id: s for s in states}


def active(ticket_id: str, price: int = 1_000, order_id: str = "o1") -> TicketState:
    return TicketState(ticket_id, order_id, "active", price)


def kinds(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.kind, f.ticket_id, f.aspect) for f in findings]


def test_a_clean_refund_has_no_findings() -> None:
    r = refund(rticket("t1"), rticket("t2", 600))
    assert check_refund(r, ledger(active("t1"), active("t2"))) == []


def test_a_refund_already_refunded_by_itself_is_clean() -> None:
    # a replay of the same refund finds its own tickets refunded
    state = TicketState("t1", "o1", "refunded", 1_000, refund_id="r1")
    assert check_refund(refund(rticket("t1")), ledger(state)) == []


def test_unknown_ticket() -> None:
    findings = check_refund(refund(rticket("t1"), rticket("t9")), ledger(active("t1")))
    assert kinds(findings) == [("unknown_ticket", "t9", "")]
    assert "t9" in findings[0].description


def test_ticket_not_in_order() -> None:
    findings = check_refund(refund(rticket("t1")), ledger(active("t1", order_id="o2")))
    assert kinds(findings) == [("ticket_not_in_order", "t1", "")]
    assert "o2" in findings[0].description


@pytest.mark.parametrize("refund_id", ["r0", None])
def test_double_refund(refund_id: str | None) -> None:
    state = TicketState("t1", "o1", "refunded", 1_000, refund_id=refund_id)
    findings = check_refund(refund(rticket("t1")), ledger(state))
    assert kinds(findings) == [("double_refund", "t1", "")]


@pytest.mark.parametrize(
    ("status", "kind"), [("used", "used_ticket"), ("cancelled", "cancelled_ticket")]
)
def test_used_or_cancelled_ticket(status: str, kind: str) -> None:
    state = TicketState("t1", "o1", status, 1_000)
    assert kinds(check_refund(refund(rticket("t1")), ledger(state))) == [(kind, "t1", "")]


def test_money_split_mismatch_per_ticket() -> None:
    t = tl.RefundTicket(ticket_id="t1", price=1_000, money=money(800, 500, 200, 50))
    r = refund(t)
    r.money.CopyFrom(money(800, 800))
    findings = check_refund(r, ledger(active("t1")))
    assert kinds(findings) == [("money_mismatch", "t1", "split")]
    assert (findings[0].expected, findings[0].actual) == (800, 750)


def test_money_split_mismatch_of_the_whole_refund() -> None:
    r = refund(rticket("t1"))
    r.money.CopyFrom(money(1_000, 900, 50, 0))
    findings = check_refund(r, ledger(active("t1")))
    assert kinds(findings) == [("money_mismatch", "", "split")]
    assert (findings[0].expected, findings[0].actual) == (1_000, 950)


def test_tickets_do_not_sum_to_the_refund() -> None:
    r = refund(rticket("t1", 400), rticket("t2", 500))
    r.money.CopyFrom(money(1_000, 1_000))
    findings = check_refund(r, ledger(active("t1"), active("t2")))
    assert kinds(findings) == [("money_mismatch", "", "sum")]
    assert (findings[0].expected, findings[0].actual) == (1_000, 900)


def test_refund_above_the_ledgers_price() -> None:
    # the refund's own price claims 5 000, the ledger knows the ticket cost 1 000
    r = refund(rticket("t1", 1_200, price=5_000))
    findings = check_refund(r, ledger(active("t1", price=1_000)))
    assert kinds(findings) == [("refund_above_price", "t1", "")]
    assert (findings[0].expected, findings[0].actual) == (1_000, 1_200)


def test_refund_above_price_of_an_unknown_ticket_uses_the_refunds_price() -> None:
    findings = check_refund(refund(rticket("t9", 1_200, price=1_000)), {})
    assert kinds(findings) == [("unknown_ticket", "t9", ""), ("refund_above_price", "t9", "")]
    assert check_refund(refund(rticket("t9", 1_000, price=1_000)), {})[1:] == []


def test_several_findings_of_one_ticket() -> None:
    state = TicketState("t1", "o2", "used", 1_000)
    findings = check_refund(refund(rticket("t1")), ledger(state))
    assert kinds(findings) == [("ticket_not_in_order", "t1", ""), ("used_ticket", "t1", "")]


def test_discrepancy_ids_are_deterministic_and_distinct_per_aspect() -> None:
    t = tl.RefundTicket(ticket_id="t1", price=1_000, money=money(800, 100))  # split off
    r = refund(t, rticket("t9"))
    r.money.CopyFrom(money(2_000, 1_000))  # split off and not the tickets' sum
    findings = check_refund(r, ledger(active("t1")))
    assert sorted(kinds(findings)) == [
        ("money_mismatch", "", "split"),
        ("money_mismatch", "", "sum"),
        ("money_mismatch", "t1", "split"),
        ("unknown_ticket", "t9", ""),
    ]
    ids = [f.id_for("r1") for f in findings]
    assert len(set(ids)) == len(ids)
    assert ids == [f.id_for("r1") for f in check_refund(r, ledger(active("t1")))]
    assert not set(ids) & {f.id_for("r2") for f in findings}, "another owner, other ids"
    assert all(i.version == 5 for i in ids)


def test_discrepancy_id_is_a_name_based_uuid() -> None:
    a = discrepancy_id("r1", "money_mismatch", "t1", "split")
    assert a == discrepancy_id("r1", "money_mismatch", "t1", "split")
    assert a == Finding("money_mismatch", "any text", "t1", 1, 2, "split").id_for("r1")
    assert isinstance(a, uuid.UUID)
    others = {
        discrepancy_id("r1", "money_mismatch", "t1", "sum"),
        discrepancy_id("r1", "money_mismatch", "t2", "split"),
        discrepancy_id("r1", "refund_above_price", "t1", "split"),
        discrepancy_id("r2", "money_mismatch", "t1", "split"),
    }
    assert a not in others
    assert len(others) == 4


def test_a_ticket_named_twice_in_one_refund_is_a_finding() -> None:
    # Each entry is checked alone and the total is the sum of the entries, so a refund that
    # names t1 twice (2 000 for a 1 000 ticket) comes out clean and pays t1 back twice.
    r = refund(rticket("t1"), rticket("t1"))
    findings = check_refund(r, ledger(active("t1")))
    assert [f for f in findings if f.ticket_id == "t1"] != []


@pytest.mark.parametrize(
    ("status", "state", "found"),
    [
        ("REJECTED", "sent", True),
        ("IN_PROGRESS", "sent", True),
        ("NEW", "sent", True),
        ("NEW", "ready", False),  # not sent yet: withdrawn instead
        ("APPROVED", "sent", False),  # the same refund again
        ("REJECTED", "open", False),  # not decided yet: no refund went anywhere
        ("REJECTED", "held", False),  # held back: Vibeapp has nothing
        ("REJECTED", "rejected", False),
    ],
)
def test_a_refund_going_back_after_it_went_to_vibeapp_is_a_reversal(
    status: str, state: str, found: bool
) -> None:
    r = tl.RefundRequest(id="rf-1", order_id="o-1")
    finding = reversal(r, status, state)
    assert (finding is not None) == found
    if finding is not None:
        assert finding.kind == "refund_reversed"
        assert status in finding.description
        other = reversal(r, "NEW" if status != "NEW" else "REJECTED", state)
        assert other is not None
        assert finding.id_for("rf-1") != other.id_for("rf-1"), "one per status gone back to"


@pytest.mark.parametrize(
    ("status", "state", "now"),
    [
        ("REJECTED", "held", "rejected"),  # held by a discrepancy: never sent
        ("REJECTED", "waiting_order", "rejected"),  # its order may still come: not sent
        ("REJECTED", "ready", "rejected"),  # waiting for its order to go: not sent
        ("IN_PROGRESS", "held", "open"),  # approved again later: checked again
        ("NEW", "waiting_order", "open"),
        ("APPROVED", "held", None),  # the same refund again
        ("REJECTED", "sent", None),  # Vibeapp has it: a reversal instead
        ("REJECTED", "open", None),  # never approved: rejected as usual
        ("REJECTED", "blocked", None),  # an operator already stopped it
    ],
)
def test_a_refund_not_sent_yet_that_ticketland_takes_back_is_withdrawn(
    status: str, state: str, now: str | None
) -> None:
    assert withdrawal(status, state) == now


def test_a_refund_naming_another_event_or_organizer_than_its_order_is_a_finding() -> None:
    r = tl.RefundRequest(id="r1", order_id="o1", event_id="e1", organizer_id="g1")
    assert order_mismatch(r, "e1", "g1") == []
    [event_] = order_mismatch(r, "e2", "g1")
    assert event_.kind == "refund_event_mismatch"
    assert "names event e1" in event_.description
    assert "of event e2" in event_.description
    both = order_mismatch(r, "e2", "g2")
    assert [f.kind for f in both] == ["refund_event_mismatch"] * 2
    assert len({f.id_for("r1") for f in both}) == 2, "event and organizer apart"


def test_every_finding_of_a_refund_in_ticket_order_then_its_totals() -> None:
    bad_split = tl.RefundTicket(ticket_id="t2", price=1_000, money=money(500, 400))
    r = refund(
        rticket("t1", 1_200),  # above its price
        bad_split,  # 400 + 0 + 0 is not 500
        rticket("t9"),  # not in the ledger
        rticket("t1"),  # named twice
        rticket("t3"),  # of another order
    )
    r.money.customer += 1  # the refund's own split no longer adds up
    r.money.refund_nominal -= 1  # nor the tickets' sum
    findings = check_refund(r, ledger(active("t1"), active("t2"), active("t3", order_id="o2")))
    assert [(f.kind, f.ticket_id, f.aspect, f.expected, f.actual) for f in findings] == [
        ("refund_above_price", "t1", "", 1_000, 1_200),
        ("money_mismatch", "t2", "split", 500, 400),
        ("unknown_ticket", "t9", "", 0, 0),
        ("double_refund", "t1", "repeat", 0, 0),
        ("ticket_not_in_order", "t3", "", 0, 0),
        ("money_mismatch", "", "split", 4_699, 4_701),
        ("money_mismatch", "", "sum", 4_699, 4_700),
    ]


def test_a_refund_changed_since_is_what_its_checks_read() -> None:
    before = refund(rticket("t1"))
    stored = before.SerializeToString()
    assert changed_since(None, before), "nothing held before"

    later = tl.RefundRequest.FromString(stored)
    later.updated_at, later.finished_at, later.rejection_reason = 9, 9, "note"
    assert not changed_since(stored, later), "status, times and notes are not checked"

    for change in (
        lambda r: setattr(r.tickets[0].money, "agent", 1),
        lambda r: r.tickets.append(rticket("t2")),
        lambda r: setattr(r.money, "customer", 1),
        lambda r: setattr(r, "order_id", "o2"),
        lambda r: setattr(r, "organizer_id", "g2"),
    ):
        other = tl.RefundRequest.FromString(stored)
        change(other)
        assert changed_since(stored, other), other
