"""Refund checks against the ledger (pure: no I/O).

An approved refund is checked once, against the ledger's view of its order and
tickets; every finding becomes a stored discrepancy and holds the refund back from
Vibeapp until an operator resolves it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from ticketland.v1 import ticketland_pb2 as tl

# What checking an approved refund can find (order_mismatch and check_refund): a refund
# approved again with other data settles those of its open ones not found again.
RefundCheckKind = Literal[
    "refund_event_mismatch",
    "unknown_ticket",
    "ticket_not_in_order",
    "double_refund",
    "used_ticket",
    "cancelled_ticket",
    "money_mismatch",
    "refund_above_price",
]
Kind = Literal[
    RefundCheckKind,
    "unknown_order",
    "order_parked_too_long",
    "output_refused",
    "refund_reversed",
]
REFUND_CHECK_KINDS: tuple[RefundCheckKind, ...] = get_args(RefundCheckKind)
NAMESPACE = uuid.UUID("6a1c3f0e-2b9d-4e57-8f14-3c0d9b7a5e21")


@dataclass(frozen=True, slots=True)
class TicketState:
    """A ticket as the ledger has it."""

    id: str
    order_id: str
    status: str  # active, used, cancelled, refunded
    price_nominal: int
    refund_id: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """One discrepancy; ``aspect`` tells apart two findings of one kind and ticket."""

    kind: Kind
    description: str
    ticket_id: str = ""
    expected: int = 0
    actual: int = 0
    aspect: str = ""

    def id_for(self, owner: str) -> uuid.UUID:
        """Deterministic: the same finding of the same refund (or order) has one id."""
        return discrepancy_id(owner, self.kind, self.ticket_id, self.aspect)


def discrepancy_id(owner: str, kind: str, ticket_id: str = "", aspect: str = "") -> uuid.UUID:
    """Deterministic: a finding's id from what it is about, so the same finding
    found again is the same discrepancy."""
    return uuid.uuid5(NAMESPACE, f"{owner}/{kind}/{ticket_id}/{aspect}")


def _split(m: tl.Money) -> int:
    return m.customer + m.org + m.agent


def check_refund(refund: tl.RefundRequest, tickets: Mapping[str, TicketState]) -> list[Finding]:
    """What does not add up in ``refund``, whose order is known; ``tickets`` holds the
    ledger's tickets among those the refund names (absent: unknown)."""
    out: list[Finding] = []
    seen: set[str] = set()
    for t in refund.tickets:
        if t.ticket_id in seen:
            out.append(
                Finding(
                    "double_refund",
                    f"ticket {t.ticket_id} appears twice in refund {refund.id}",
                    t.ticket_id,
                    aspect="repeat",
                )
            )
            continue
        seen.add(t.ticket_id)
        out += _refunded_ticket_findings(refund, t, tickets.get(t.ticket_id))
    return out + _total_findings(refund)


def _refunded_ticket_findings(
    refund: tl.RefundRequest, t: tl.RefundTicket, known: TicketState | None
) -> list[Finding]:
    """One ticket of ``refund`` (the first time it is named) against the ledger's
    (``known``; None: not in the ledger), and its money."""
    out: list[Finding] = []
    if known is None:
        out.append(
            Finding("unknown_ticket", f"ticket {t.ticket_id} is not in the ledger", t.ticket_id)
        )
    else:
        out += _ticket_findings(refund, t, known)
    if t.HasField("money") and _split(t.money) != t.money.refund_nominal:
        out.append(
            Finding(
                "money_mismatch",
                f"ticket {t.ticket_id}: customer + org + agent = {_split(t.money)}, "
                f"refund_nominal = {t.money.refund_nominal}",
                t.ticket_id,
                t.money.refund_nominal,
                _split(t.money),
                "split",
            )
        )
    price = known.price_nominal if known is not None else t.price
    if t.money.refund_nominal > price:
        out.append(
            Finding(
                "refund_above_price",
                f"ticket {t.ticket_id}: refund_nominal {t.money.refund_nominal} above its "
                f"price {price}",
                t.ticket_id,
                price,
                t.money.refund_nominal,
            )
        )
    return out


def _total_findings(refund: tl.RefundRequest) -> list[Finding]:
    """The refund's own money: its split, and the sum of every ticket it names (a
    ticket named twice counts twice)."""
    out: list[Finding] = []
    total = refund.money
    tickets_sum = sum(t.money.refund_nominal for t in refund.tickets)
    if _split(total) != total.refund_nominal:
        out.append(
            Finding(
                "money_mismatch",
                f"refund: customer + org + agent = {_split(total)}, "
                f"refund_nominal = {total.refund_nominal}",
                "",
                total.refund_nominal,
                _split(total),
                "split",
            )
        )
    if tickets_sum != total.refund_nominal:
        out.append(
            Finding(
                "money_mismatch",
                f"refund: the tickets' refund_nominal sum to {tickets_sum}, the refund says "
                f"{total.refund_nominal}",
                "",
                total.refund_nominal,
                tickets_sum,
                "sum",
            )
        )
    return out


def order_mismatch(refund: tl.RefundRequest, event_id: str, organizer_id: str) -> list[Finding]:
    """The refund's event and organizer against its order's (``event_id``,
    ``organizer_id``): a refund filed under another event would be reported there."""
    out: list[Finding] = []
    if refund.event_id != event_id:
        out.append(
            Finding(
                "refund_event_mismatch",
                f"refund {refund.id} names event {refund.event_id}, its order "
                f"{refund.order_id} is of event {event_id}",
                aspect="event",
            )
        )
    if refund.organizer_id != organizer_id:
        out.append(
            Finding(
                "refund_event_mismatch",
                f"refund {refund.id} names organizer {refund.organizer_id}, its order "
                f"{refund.order_id} is of organizer {organizer_id}",
                aspect="organizer",
            )
        )
    return out


def _ticket_findings(
    refund: tl.RefundRequest, t: tl.RefundTicket, known: TicketState
) -> list[Finding]:
    out: list[Finding] = []
    if known.order_id != refund.order_id:
        out.append(
            Finding(
                "ticket_not_in_order",
                f"ticket {t.ticket_id} belongs to order {known.order_id}, not {refund.order_id}",
                t.ticket_id,
            )
        )
    if known.status == "refunded" and known.refund_id != refund.id:
        out.append(
            Finding(
                "double_refund",
                f"ticket {t.ticket_id} was already refunded by refund {known.refund_id}",
                t.ticket_id,
            )
        )
    elif known.status == "used":
        out.append(Finding("used_ticket", f"ticket {t.ticket_id} was used", t.ticket_id))
    elif known.status == "cancelled":
        out.append(Finding("cancelled_ticket", f"ticket {t.ticket_id} was cancelled", t.ticket_id))
    return out


def checked_content(refund: tl.RefundRequest) -> tuple[object, ...]:
    """What the refund checks read of a refund (its order, event, organizer, money and
    tickets): two versions that agree on it are checked alike."""
    return (
        refund.order_id,
        refund.event_id,
        refund.organizer_id,
        refund.money.SerializeToString(deterministic=True),
        tuple(t.SerializeToString(deterministic=True) for t in refund.tickets),
    )


def changed_since(before: bytes | None, refund: tl.RefundRequest) -> bool:
    """Whether ``refund`` would be checked otherwise than the version the ledger held
    (``before``, serialized; None: none)."""
    if before is None:
        return True
    return checked_content(tl.RefundRequest.FromString(before)) != checked_content(refund)


# States of an approved refund Vibeapp does not have yet: a newer status takes it back.
UNSENT = frozenset({"waiting_order", "held", "ready"})


def reversal(refund: tl.RefundRequest, status: str, state: str) -> Finding | None:
    """A refund whose newest record says ``status`` after the ledger sent it to Vibeapp
    (``state`` sent): anything but APPROVED is Ticketland going back on a refund
    Vibeapp has. One finding per status it goes back to. (A refund not sent yet is
    withdrawn instead, see :func:`withdrawal`.)"""
    if status == "APPROVED" or state != "sent":
        return None
    return Finding(
        "refund_reversed",
        f"refund {refund.id} was sent to Vibeapp, then Ticketland set it {status}",
        aspect=status,
    )


def withdrawal(status: str, state: str) -> str | None:
    """The state of an approved refund Vibeapp does not have yet (``state`` waiting for
    its order, held by a discrepancy, or ready to go with its order) once its newest
    record says ``status``; None if it stays as it is. REJECTED is final ("rejected":
    never sent); NEW or IN_PROGRESS undo the approval ("open": checked again if it is
    approved again)."""
    if status == "APPROVED" or state not in UNSENT:
        return None
    return "rejected" if status == "REJECTED" else "open"
