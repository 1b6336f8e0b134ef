"""Ticketland's messages in Vibeapp's forms (pure: no I/O).

Each output is either the ``vibe.v1`` Protobuf message (Vibeapp's field numbers, plus
new fields for what the JSON form adds) or the contract's JSON form; the format is
chosen per topic. Both forms carry the same information.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ticketland.v1 import ticketland_pb2 as tl
from vibe.v1 import vibe_pb2 as vibe

Format = Literal["protobuf", "json"]
CONTENT_TYPES: dict[Format, str] = {
    "protobuf": "application/x-protobuf",
    "json": "application/json",
}
# fmt: off
JSON_CATEGORIES = frozenset([
    "ballet", "business", "circus", "concert", "development", "excursion", "exhibition",
    "festival", "games", "health", "kids", "movie", "museum", "musical", "party", "show",
    "sport", "standup", "test", "theater", "workshop", "other",
])
# fmt: on
CATEGORY_NAMES = frozenset(vibe.Category.keys())
CURRENCY_NAMES = frozenset(vibe.Currency.keys())
EVENT_STATUSES = {
    tl.Event.STATUS_UNSPECIFIED: "active",
    tl.Event.STATUS_ACTIVE: "active",
    tl.Event.STATUS_PAUSED: "paused",
    tl.Event.STATUS_FINISHED: "finished",
    tl.Event.STATUS_CANCELLED: "cancelled",
}


@dataclass(frozen=True, slots=True)
class Output:
    """One record for Vibeapp: its key, value and headers, and a hash of the content
    (what makes a repeat recognisable)."""

    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    content_hash: str


@dataclass(frozen=True, slots=True)
class Headers:
    """The headers Vibeapp asks for, less the content type (set per format)."""

    schema_version: str = "1.0"
    application_id: str = "ticketland"


def _output(key: str, fmt: Format, body: bytes, headers: Headers) -> Output:
    return Output(
        key.encode(),
        body,
        (
            ("content-type", CONTENT_TYPES[fmt].encode()),
            ("schema-version", headers.schema_version.encode()),
            ("application-id", headers.application_id.encode()),
        ),
        hashlib.sha256(fmt.encode() + b"\0" + body).hexdigest(),
    )


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _optional(**values: Any) -> dict[str, Any]:
    """Only the values that are set (the JSON form's ``?`` fields)."""
    return {k: v for k, v in values.items() if v not in ("", None, 0, 0.0, {})}


def _offset_text(hours: float) -> str:
    sign = "-" if hours < 0 else "+"
    minutes = round(abs(hours) * 60)
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _category(name: str) -> tuple[int, str]:
    """(vibe.v1 Category number, JSON name) of a Ticketland category."""
    lowered = name.strip().lower()
    json_name = lowered if lowered in JSON_CATEGORIES else "other"
    name = f"CATEGORY_{lowered.upper()}"
    # "unspecified" is OTHER in both forms (the JSON form has no such name).
    known = name in CATEGORY_NAMES and name != "CATEGORY_UNSPECIFIED"
    number = vibe.Category.Value(name) if known else vibe.CATEGORY_OTHER
    return number, json_name


# ----------------------------------------------------------------------- events


def event_message(e: tl.Event) -> vibe.Event:
    """Vibeapp's protobuf Event of Ticketland's ``e``."""
    category, json_category = _category(e.category)
    legals = e.organizer.legals
    return vibe.Event(
        id=e.id,
        name=e.name,
        category=category,  # type: ignore[arg-type]
        start_at=e.start_at // 1000,
        finish_at=e.finish_at // 1000,
        organizer_id=e.organizer.id,
        media=e.media,
        # Always, as the JSON form's offset: 0 is UTC, with or without a venue.
        timezone=_offset_text(e.timezone_offset),
        description=e.description,
        venue=vibe.Venue(
            id=e.venue.id,
            name=e.venue.name,
            address=e.venue.address,
            description=e.venue.description,
            zipcode=e.venue.zipcode,
            city_name=e.venue.city,
            lat=e.venue.lat,
            lon=e.venue.lon,
        )
        if e.HasField("venue")
        else None,
        group_id=e.group_id,
        status=vibe.EventStatus.ValueType(e.status or tl.Event.STATUS_ACTIVE),  # same numbers
        offset=e.timezone_offset,
        organizer=vibe.Organizer(
            id=e.organizer.id,
            name=e.organizer.name,
            legals=vibe.Legals(
                name=legals.name,
                type=vibe.Legals.LegalType.ValueType(legals.type),  # the same numbers
                inn=legals.inn,
                ogrn=legals.ogrn,
                address=legals.address,
            )
            if e.organizer.HasField("legals")
            else None,
        ),
        category_name=json_category,
        start_at_ms=e.start_at,
        finish_at_ms=e.finish_at,
    )


def event_json(e: tl.Event) -> dict[str, Any]:
    """Vibeapp's JSON event of Ticketland's ``e`` (empty optional fields left out)."""
    legals = e.organizer.legals
    organizer: dict[str, Any] = {"id": e.organizer.id, "name": e.organizer.name}
    if e.organizer.HasField("legals"):
        legal_type = tl.LegalEntity.LegalType.Name(legals.type).removeprefix("LEGAL_TYPE_")
        organizer["legals"] = _optional(
            name=legals.name,
            type=legal_type.lower() if legals.type else None,
            inn=legals.inn,
            ogrn=legals.ogrn,
            address=legals.address,
        )
    doc: dict[str, Any] = {"id": e.id}
    doc.update(_optional(group_id=e.group_id))
    doc.update(
        name=e.name,
        status=EVENT_STATUSES.get(e.status, "active"),
        category=_category(e.category)[1],
    )
    doc.update(_optional(start_at=e.start_at))
    doc.update(finish_at=e.finish_at, offset=e.timezone_offset)
    doc.update(_optional(media=e.media, description=e.description))
    doc["organizer"] = organizer
    if e.HasField("venue"):
        v = e.venue
        doc["venue"] = {"id": v.id, "name": v.name} | _optional(
            address=v.address,
            description=v.description,
            zipcode=v.zipcode,
            city_name=v.city,
            lat=v.lat,
            lon=v.lon,
        )
    return doc


def event_output(e: tl.Event, fmt: Format, headers: Headers) -> Output:
    """The output of ``e`` for Vibeapp's events topic, in ``fmt``, with ``headers``."""
    body = (
        event_message(e).SerializeToString(deterministic=True)
        if fmt == "protobuf"
        else (_json(event_json(e)))
    )
    return _output(e.id, fmt, body, headers)


# ----------------------------------------------------------------------- orders


def _full_name(c: tl.Customer) -> str:
    return " ".join(p for p in (c.first_name, c.last_name) if p)


def _customer_message(c: tl.Customer) -> vibe.Customer:
    return vibe.Customer(
        email=c.email,
        phone=c.phone,
        name=_full_name(c),
        first_name=c.first_name,
        last_name=c.last_name,
    )


def _customer_json(c: tl.Customer) -> dict[str, Any]:
    return {"email": c.email, "phone": c.phone} | _optional(
        first_name=c.first_name, last_name=c.last_name
    )


def _currency(code: str) -> int:
    name = f"CURRENCY_{code.strip().upper()}"
    return vibe.Currency.Value(name) if name in CURRENCY_NAMES else 0


def order_message(o: tl.Order) -> vibe.Order:
    """Vibeapp's protobuf Order of Ticketland's ``o``: a ticket without its own event
    is the order's."""
    return vibe.Order(
        id=o.id,
        event_id=o.event_id,
        organizer_id=o.organizer_id,
        customer=_customer_message(o.customer),
        tickets=[
            vibe.Order.Ticket(
                id=t.id,
                barcode=t.barcode,
                number=t.number,
                series=t.series,
                row=t.row,
                seat=t.seat,
                category=t.category,
                description=t.description,
                price_nominal=t.price_nominal,
                currency=_currency(t.currency),  # type: ignore[arg-type]
                event_id=t.event_id or o.event_id,
            )
            for t in o.tickets
        ],
        number=o.number,
    )


def order_json(o: tl.Order) -> dict[str, Any]:
    """Vibeapp's JSON order of Ticketland's ``o`` (empty optional fields left out)."""
    return {
        "id": o.id,
        "number": o.number,
        "customer": _customer_json(o.customer),
        "tickets": [
            {"id": t.id, "event_id": t.event_id or o.event_id, "barcode": t.barcode}
            | _optional(number=t.number, series=t.series, row=t.row, seat=t.seat)
            | {"category": t.category}
            | _optional(
                description=t.description,
                price_nominal=t.price_nominal,
                currency=t.currency.upper() if _currency(t.currency) else None,
            )
            for t in o.tickets
        ],
    }


def order_output(o: tl.Order, fmt: Format, headers: Headers) -> Output:
    """The output of ``o`` for Vibeapp's orders topic, in ``fmt``, with ``headers``."""
    body = (
        order_message(o).SerializeToString(deterministic=True)
        if fmt == "protobuf"
        else (_json(order_json(o)))
    )
    return _output(o.id, fmt, body, headers)


# ---------------------------------------------------------------------- refunds


def refund_message(
    r: tl.RefundRequest, customer: tl.Customer, ticket_ids: Sequence[str]
) -> vibe.Refund:
    """Vibeapp's protobuf Refund of ``r``: the order's ``customer`` and the
    ``ticket_ids`` refunded."""
    return vibe.Refund(
        customer=_customer_message(customer),
        ticket_ids=list(ticket_ids),
        id=r.id,
        order_id=r.order_id,
        event_id=r.event_id,
    )


def refund_json(customer: tl.Customer, ticket_ids: Sequence[str]) -> dict[str, Any]:
    """Vibeapp's JSON refund: the order's ``customer`` and the ``ticket_ids`` refunded."""
    return {"customer": _customer_json(customer), "ticket_ids": list(ticket_ids)}


def refund_output(
    r: tl.RefundRequest,
    customer: tl.Customer,
    ticket_ids: Sequence[str],
    fmt: Format,
    headers: Headers,
) -> Output:
    """The output of ``r`` for Vibeapp's refunds topic, in ``fmt``, with ``headers``."""
    body = (
        refund_message(r, customer, ticket_ids).SerializeToString(deterministic=True)
        if fmt == "protobuf"
        else _json(refund_json(customer, ticket_ids))
    )
    return _output(r.id, fmt, body, headers)
