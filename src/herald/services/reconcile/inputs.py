"""Decoding and validating Ticketland's records (pure: no I/O).

A record is Protobuf (``application/x-protobuf``, also assumed when the header is
missing) or JSON (``application/json``) by its ``content-type`` header. JSON is the
proto3 JSON mapping of the same message; enum values may be given without their
prefix (``"DONE"`` for ``STATUS_DONE``); keys the schema does not know are ignored
(Ticketland may add fields before Herald knows them). Anything that does not decode or validate
raises :class:`BadRecord` with a reason for the dead-letter record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from ticketland.v1 import ticketland_pb2 as tl

from herald.runtime import json_fast

Kind = Literal["event", "order", "refund"]
Input = tl.Event | tl.Order | tl.RefundRequest
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
CURRENCIES = ("USD", "EUR", "RUB", "GBP", "CNY")


class BadRecord(ValueError):
    """A record that cannot be taken; the message is the dead-letter reason."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """A Ticketland record taken from its topic: its kind and its message."""

    kind: Kind
    message: Input

    @property
    def entity_id(self) -> str:
        """The id of the event, order or refund the record is about."""
        return self.message.id


MESSAGES: dict[Kind, type[Input]] = {
    "event": tl.Event,
    "order": tl.Order,
    "refund": tl.RefundRequest,
}


def content_type(headers: Sequence[tuple[str, bytes]]) -> str:
    """The record's content type without parameters (``; charset=…``), lower case."""
    for name, value in headers:
        if name.lower() == "content-type":
            return value.decode("latin-1").split(";")[0].strip().lower()
    return ""


def decode(kind: Kind, headers: Sequence[tuple[str, bytes]], value: bytes | None) -> Decoded:
    """The validated message of a record from the ``kind`` stream."""
    if not value:
        raise BadRecord("empty record value")
    message = MESSAGES[kind]()
    ctype = content_type(headers)
    if ctype in ("", PROTOBUF, "application/protobuf"):
        try:
            message.ParseFromString(value)
        except DecodeError as exc:
            raise BadRecord(f"not a ticketland.v1.{type(message).__name__}: {exc}") from None
    elif ctype == JSON or ctype.endswith("+json"):
        _parse_json(value, message)
    else:
        raise BadRecord(f"unsupported content-type {ctype!r}")
    problems = VALIDATORS[kind](message)
    # A NUL in a text field is a 0 byte in Protobuf, and \u0000 (or a bare 0 byte, if
    # the parser took it) in JSON: a value with neither has none to look for.
    if b"\x00" in value or b"\\u0000" in value:
        problems += _nul_problems(message)
    if problems:
        raise BadRecord("; ".join(problems))
    return Decoded(kind, message)


def _parse_json(value: bytes, message: Message) -> None:
    try:
        doc = json_fast.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRecord(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRecord("JSON value is not an object")
    try:
        json_format.ParseDict(_known(doc, message.DESCRIPTOR), message)
    # Besides ParseError: an enum given as Infinity (OverflowError), text that is not
    # Unicode (a lone surrogate escape: upb raises SystemError over UnicodeEncodeError).
    except (json_format.ParseError, ValueError, TypeError, OverflowError, SystemError) as exc:
        name = message.DESCRIPTOR.name
        raise BadRecord(f"JSON does not match ticketland.v1.{name}: {exc}") from None


def _known(doc: dict[str, Any], descriptor: Any) -> dict[str, Any]:
    """The keys the schema knows (recursively), with ``"DONE"`` → ``"STATUS_DONE"`` for
    enum fields; an unknown enum *value* is left for the parser to refuse."""
    fields = {**descriptor.fields_by_name, **{f.json_name: f for f in descriptor.fields}}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        field = fields.get(key)
        if field is None:
            continue  # a field Ticketland added that this schema does not know yet
        if field.type == FieldDescriptor.TYPE_ENUM:
            out[key] = _enum_value(field, value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            if isinstance(value, list):
                out[key] = [
                    _known(v, field.message_type) if isinstance(v, dict) else v for v in value
                ]
            elif isinstance(value, dict):
                out[key] = _known(value, field.message_type)
            else:
                out[key] = value
        else:
            out[key] = value
    return out


def _enum_value(field: FieldDescriptor, value: Any) -> Any:
    if not isinstance(value, str) or field.enum_type is None:
        return value
    names = field.enum_type.values_by_name
    if value in names:
        return value
    prefix = field.enum_type.values[0].name.removesuffix("UNSPECIFIED")
    candidate = prefix + value.upper()
    return candidate if candidate in names else value


def _names(enum: Any) -> dict[int, str]:
    return {v.number: v.name for v in enum.values}


EVENT_STATUS = _names(tl.Event.DESCRIPTOR.enum_types_by_name["Status"])
ORDER_STATUS = _names(tl.Order.DESCRIPTOR.enum_types_by_name["Status"])
REFUND_STATUS = _names(tl.RefundRequest.DESCRIPTOR.enum_types_by_name["Status"])
TICKET_STATUS = _names(tl.Ticket.DESCRIPTOR.enum_types_by_name["Status"])
LEGAL_TYPE = _names(tl.LegalEntity.DESCRIPTOR.enum_types_by_name["LegalType"])
POLICY = _names(tl.RefundRequest.DESCRIPTOR.enum_types_by_name["Policy"])
REASON_TYPE = _names(tl.RefundRequest.DESCRIPTOR.enum_types_by_name["ReasonType"])


def _unknown(problems: list[str], field: str, value: int, known: dict[int, str]) -> None:
    """Proto3 lets enum numbers the schema does not define through: a value Ticketland
    added later is a bad record here, not a crash further on."""
    if value not in known:
        problems.append(f"{field}: unknown value {value}")


def _stored_text(m: Input) -> list[tuple[str, str]]:
    """The texts the ledger keeps in text columns."""
    if isinstance(m, tl.Event):
        return [("id", m.id), ("name", m.name), ("organizer.id", m.organizer.id),
                ("organizer.name", m.organizer.name)]  # fmt: skip
    head = [("id", m.id), ("event_id", m.event_id), ("organizer_id", m.organizer_id)]
    if isinstance(m, tl.Order):
        return (
            head
            + [("number", m.number)]
            + [
                (f"tickets[{i}].{name}", value)
                for i, t in enumerate(m.tickets)
                for name, value in (("id", t.id), ("barcode", t.barcode), ("currency", t.currency))
            ]
        )
    return (
        head
        + [("order_id", m.order_id)]
        + [(f"tickets[{i}].ticket_id", t.ticket_id) for i, t in enumerate(m.tickets)]
    )


def _nul_problems(m: Input) -> list[str]:
    """PostgreSQL text cannot hold NUL: such a record would stop the consumer for good."""
    return [
        f"{name}: contains a NUL character" for name, value in _stored_text(m) if "\x00" in value
    ]


# Money in minor units: beyond this an amount is surely a mistake, and the sums the
# reconciliation makes of many of them would overflow int64.
MAX_AMOUNT = 10**12


def _amount(problems: list[str], field: str, value: int) -> None:
    if value < 0:
        problems.append(f"{field}: negative")
    elif value > MAX_AMOUNT:
        problems.append(f"{field}: {value} is beyond {MAX_AMOUNT} (minor units)")


def _within(problems: list[str], field: str, value: float, low: float, high: float) -> None:
    """Doubles: NaN and infinities (valid in Protobuf and proto3 JSON) are refused too."""
    if not low <= value <= high:  # False for NaN
        problems.append(f"{field}: {value!r} is not within [{low:g}, {high:g}]")


def _event_problems(e: tl.Event) -> list[str]:
    problems: list[str] = []
    _within(problems, "timezone_offset", e.timezone_offset, -14, 14)
    _within(problems, "venue.lat", e.venue.lat, -90, 90)
    _within(problems, "venue.lon", e.venue.lon, -180, 180)
    _unknown(problems, "status", e.status, EVENT_STATUS)
    _unknown(problems, "organizer.legals.type", e.organizer.legals.type, LEGAL_TYPE)
    if not e.id:
        problems.append("id: required")
    if not e.name:
        problems.append("name: required")
    if not e.organizer.id:
        problems.append("organizer.id: required")
    return problems


def _order_problems(o: tl.Order) -> list[str]:
    problems: list[str] = []
    _unknown(problems, "status", o.status, ORDER_STATUS)
    if not o.id:
        problems.append("id: required")
    if not o.event_id:
        problems.append("event_id: required")
    if o.status == tl.Order.STATUS_UNSPECIFIED:
        problems.append("status: required")
    seen: set[str] = set()
    for i, t in enumerate(o.tickets):
        if not t.id:
            problems.append(f"tickets[{i}].id: required")
        elif t.id in seen:
            problems.append(f"tickets[{i}].id: {t.id!r} appears twice")
        seen.add(t.id)
        if t.event_id and t.event_id != o.event_id:
            problems.append(f"tickets[{i}].event_id: not the order's event {o.event_id!r}")
        _unknown(problems, f"tickets[{i}].status", t.status, TICKET_STATUS)
        _amount(problems, f"tickets[{i}].price_nominal", t.price_nominal)
        if t.currency and t.currency.upper() not in CURRENCIES:
            problems.append(f"tickets[{i}].currency: {t.currency!r} is not one of {CURRENCIES}")
    return problems


def _refund_problems(r: tl.RefundRequest) -> list[str]:
    problems: list[str] = []
    _unknown(problems, "status", r.status, REFUND_STATUS)
    _unknown(problems, "policy", r.policy, POLICY)
    _unknown(problems, "reason_type", r.reason_type, REASON_TYPE)
    if not r.id:
        problems.append("id: required")
    if not r.order_id:
        problems.append("order_id: required")
    if not r.event_id:
        problems.append("event_id: required")
    if r.status == tl.RefundRequest.STATUS_UNSPECIFIED:
        problems.append("status: required")
    if r.status == tl.RefundRequest.STATUS_APPROVED and not r.tickets:
        problems.append("tickets: an approved refund names its tickets")
    _money(problems, "money", r.money)
    for i, t in enumerate(r.tickets):
        if not t.ticket_id:
            problems.append(f"tickets[{i}].ticket_id: required")
        _amount(problems, f"tickets[{i}].price", t.price)
        _amount(problems, f"tickets[{i}].nominal", t.nominal)
        _money(problems, f"tickets[{i}].money", t.money)
    return problems


def _money(problems: list[str], field: str, m: tl.Money) -> None:
    """What is refunded and what the customer gets back cannot be negative; the
    organiser's and agent's shares may be (a commission clawed back), within bounds."""
    _amount(problems, f"{field}.refund_nominal", m.refund_nominal)
    _amount(problems, f"{field}.customer", m.customer)
    for name in ("org", "agent"):
        if abs(getattr(m, name)) > MAX_AMOUNT:
            problems.append(f"{field}.{name}: beyond ±{MAX_AMOUNT} (minor units)")


VALIDATORS: dict[Kind, Any] = {
    "event": _event_problems,
    "order": _order_problems,
    "refund": _refund_problems,
}


STATUS_NAMES: dict[type[Input], dict[int, str]] = {
    tl.Event: {n: name.removeprefix("STATUS_") for n, name in EVENT_STATUS.items()},
    tl.Order: {n: name.removeprefix("STATUS_") for n, name in ORDER_STATUS.items()},
    tl.RefundRequest: {n: name.removeprefix("STATUS_") for n, name in REFUND_STATUS.items()},
}


# A completed sale: what Vibeapp receives (other orders are in progress or void).
SOLD = frozenset({tl.Order.STATUS_EXECUTED, tl.Order.STATUS_DONE})
SOLD_NAMES = frozenset(STATUS_NAMES[tl.Order][n] for n in SOLD)  # as the ledger stores it


def short_status(message: Input) -> str:
    """The record's status without its prefix (``DONE``, ``APPROVED``, ``ACTIVE``)."""
    return STATUS_NAMES[type(message)][message.status]
