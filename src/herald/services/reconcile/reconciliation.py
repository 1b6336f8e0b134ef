"""Comparing the ledger with what Vibeapp was sent and with the inputs (pure: the rows
come from sql/queries.sql's report_* queries)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from herald.reconcile.v1 import reconcile_pb2 as pb

from herald.runtime import json_fast
from herald.services.reconcile.inputs import SOLD_NAMES

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Repair:
    """Something to queue again: ``kind`` order or refund, and its id."""

    kind: str
    entity_id: str


@dataclass(slots=True)
class Outcome:
    """The report's contents, and what ``repair`` would queue again."""

    totals: pb.Totals = field(default_factory=pb.Totals)
    events: dict[str, pb.EventTotals] = field(default_factory=dict)
    organizers: dict[str, pb.OrganizerTotals] = field(default_factory=dict)
    findings: list[pb.Finding] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)
    # Per event: the ledger's tickets of the orders that were sent.
    sold_of_sent: dict[str, int] = field(default_factory=dict)
    # ticket_refund_not_sent findings: the refund whose repair mends each (ticket id).
    mended_by: dict[str, str] = field(default_factory=dict)

    def repaired_by(self, finding: pb.Finding, done: set[str]) -> bool:
        """Whether repairing the entities ``done`` mended ``finding``."""
        return finding.entity_id in done or self.mended_by.get(finding.entity_id) in done

    def find(self, kind: str, entity_id: str, description: str, repair: str = "") -> None:
        self.findings.append(pb.Finding(kind=kind, entity_id=entity_id, description=description))
        if repair:
            self.repairs.append(Repair(repair, entity_id))

    def _add(self, event_id: str, organizer_id: str, **amounts: int) -> None:
        ev = self.events.setdefault(
            event_id, pb.EventTotals(event_id=event_id, organizer_id=organizer_id)
        )
        org = self.organizers.setdefault(
            organizer_id, pb.OrganizerTotals(organizer_id=organizer_id)
        )
        for totals in (self.totals, ev.totals, org.totals):
            for name, value in amounts.items():
                setattr(totals, name, getattr(totals, name) + value)

    def _add_money(
        self, event_id: str, organizer_id: str, currency: str, sold: int = 0, refunded: int = 0
    ) -> None:
        """Adds to the per-currency amounts (after :meth:`_add` made the event's row)."""
        for totals in (
            self.totals,
            self.events[event_id].totals,
            self.organizers[organizer_id].totals,
        ):
            held = next((a for a in totals.amounts if a.currency == currency), None)
            if held is None:
                held = totals.amounts.add(currency=currency)
            held.sold_amount += sold
            held.refunded_amount += refunded

    def sort_amounts(self) -> None:
        """Each totals' currencies in code order."""
        every = [self.totals] + [e.totals for e in self.events.values()]
        for totals in every + [o.totals for o in self.organizers.values()]:
            totals.amounts.sort(key=lambda a: a.currency)


def compare(orders: Sequence[Row], refunds: Sequence[Row], tickets: Sequence[Row]) -> Outcome:
    """Totals per event and organizer, and every finding (see ``Finding.kind``)."""
    out = Outcome()
    for o in orders:
        _order(out, o)
    for r in refunds:
        _refund(out, r)
    refund_states = {r["id"]: r["state"] for r in refunds}
    for ticket in tickets:
        _ticket(out, ticket, refund_states)
    out.sort_amounts()
    # Orders that went: did Vibeapp get as many tickets as the ledger has for them?
    # (An order that did not go has its own finding.)
    for ev in out.events.values():
        sold = out.sold_of_sent.get(ev.event_id, 0)
        if ev.totals.tickets_sent != sold:
            out.find(
                "counts_differ",
                ev.event_id,
                f"event {ev.event_id}: its sent orders have {sold} tickets in the ledger, "
                f"{ev.totals.tickets_sent} as sent to Vibeapp",
            )
    return out


def _order(out: Outcome, o: Row) -> None:
    if o["status"] not in SOLD_NAMES:
        return
    sent = o["sent_at"] is not None
    out._add(
        o["event_id"],
        o["organizer_id"],
        orders=1,
        tickets_sold=o["tickets"],
        sold_amount=o["amount"],
        tickets_refunded=o["refunded"],
        orders_sent=int(sent),
        tickets_sent=o["tickets_sent"] if sent else 0,
    )
    for currency, amount in _amounts(o.get("amounts")).items():
        out._add_money(o["event_id"], o["organizer_id"], currency, sold=amount)
    if sent:
        out.sold_of_sent[o["event_id"]] = out.sold_of_sent.get(o["event_id"], 0) + o["tickets"]
    if not o["event_known"]:
        out.find(
            "order_waiting_for_event",
            o["id"],
            f"order {o['id']} is parked: event {o['event_id']} has not arrived",
        )
    elif not o["queued"]:
        out.find("order_not_sent", o["id"], f"order {o['id']} was never queued", "order")
    elif not sent:
        out.find("output_pending", o["id"], f"order {o['id']} is queued, not sent yet")
    elif o["event_sent_at"] is None or o["event_sent_at"] > o["sent_at"]:
        out.find(
            "order_before_event",
            o["id"],
            f"order {o['id']} was sent before its event {o['event_id']}",
        )


def _refund(out: Outcome, r: Row) -> None:
    if r["state"] == "sent":
        out._add(r["event_id"], r["organizer_id"], refunded_amount=r["customer"])
        if "currency" in r:  # '' when no ticket of it (or of its order) gives one
            out._add_money(r["event_id"], r["organizer_id"], r["currency"], refunded=r["customer"])
    should_go = r["state"] == "sent" or (r["state"] == "ready" and r["order_delivery"] == "sent")
    if should_go and not r["queued"]:
        out.find("refund_not_sent", r["id"], f"refund {r['id']} was never queued", "refund")
    elif r["queued"] and r["sent_at"] is None:
        out.find("output_pending", r["id"], f"refund {r['id']} is queued, not sent yet")


def _ticket(out: Outcome, t: Row, refund_states: Mapping[str, str]) -> None:
    records = t["records"]
    if records:
        out._add(t["event_id"], t["organizer_id"], tickets_refunded_sent=1)
    if not t["refunded"]:
        out.find(
            "ticket_refund_not_in_ledger",
            t["id"],
            f"ticket {t['id']} was sent to Vibeapp as refunded; the ledger has it otherwise",
        )
    elif records > 1:
        out.find(
            "ticket_refund_sent_twice",
            t["id"],
            f"ticket {t['id']} was sent as refunded in {records} records ({t['refunds']} refunds)",
        )
    elif records == 0 and refund_states.get(t["refund_id"]) == "sent":
        out.mended_by[t["id"]] = t["refund_id"]  # the refund's repair sends it again
        out.find(
            "ticket_refund_not_sent",
            t["id"],
            f"ticket {t['id']} is refunded by refund {t['refund_id']}, which is marked sent, "
            "but no refund record sent to Vibeapp names it",
        )


def _amounts(value: str | None) -> dict[str, int]:
    """An order's sold amount per currency (report_orders' jsonb, as text; absent: none)."""
    if value is None:
        return {}
    return {str(k): int(v) for k, v in json_fast.loads(value).items()}
