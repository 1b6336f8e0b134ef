"""Ticketland's messages in Vibeapp's forms: wire compatibility and the JSON contract."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from ticketland.v1 import ticketland_pb2 as tl
from vibe.v1 import vibe_pb2 as vibe

from herald.services.reconcile.vibe import (
    Format,
    Headers,
    Output,
    event_json,
    event_message,
    event_output,
    order_json,
    order_message,
    order_output,
    refund_json,
    refund_message,
    refund_output,
)

# ------------------------------------------------- Vibeapp's published schema
# contracts/vibe.md, "Protobuf form": message -> (number, field, type). A type is a
# scalar, an enum or message named here, or "repeated <type>". OrderTicket is Order.Ticket
# and TicketStatus is Ticket.Status (names do not travel on the wire).

VIBEAPP: dict[str, tuple[tuple[int, str, str], ...]] = {
    "Event": (
        (1, "id", "string"),
        (2, "name", "string"),
        (3, "category", "Category"),
        (4, "start_at", "int64"),
        (5, "finish_at", "int64"),
        (6, "organizer_id", "string"),
        (7, "media", "string"),
        (8, "timezone", "string"),
        (9, "description", "string"),
        (10, "venue", "Venue"),
    ),
    "Venue": (
        (1, "name", "string"),
        (2, "address", "string"),
        (3, "description", "string"),
        (4, "zipcode", "string"),
        (5, "city_name", "string"),
        (6, "lat", "double"),
        (7, "lon", "double"),
    ),
    "Organizer": ((1, "id", "string"), (2, "name", "string"), (3, "legals", "Legals")),
    "Legals": (
        (1, "name", "string"),
        (2, "type", "LegalType"),
        (3, "inn", "string"),
        (4, "ogrn", "string"),
        (5, "address", "string"),
    ),
    "Order": (
        (1, "id", "string"),
        (2, "event_id", "string"),
        (3, "organizer_id", "string"),
        (4, "customer", "Customer"),
        (5, "tickets", "repeated OrderTicket"),
    ),
    "Customer": ((1, "email", "string"), (2, "phone", "string"), (3, "name", "string")),
    "OrderTicket": (
        *(
            (n, f, "string")
            for n, f in enumerate(
                ("id", "barcode", "number", "series", "row", "seat", "category", "description"),
                start=1,
            )
        ),
        (9, "price_nominal", "int64"),
        (10, "currency", "Currency"),
    ),
    "Refund": ((1, "customer", "Customer"), (2, "ticket_ids", "repeated string")),
    "Ticket": (
        (1, "id", "string"),
        (2, "status", "TicketStatus"),
        (3, "barcode", "string"),
        (4, "customer", "Customer"),
        (5, "event_id", "string"),
        (6, "organizer_id", "string"),
        (7, "number", "string"),
        (8, "series", "string"),
        (9, "row", "string"),
        (10, "seat", "string"),
        (11, "category", "string"),
        (12, "order_id", "string"),
        (13, "description", "string"),
        (14, "price_nominal", "int64"),
        (15, "currency", "Currency"),
    ),
}
# fmt: off
CATEGORIES = [
    "UNSPECIFIED", "BALLET", "BUSINESS", "CONCERT", "DEVELOPMENT", "EXCURSION", "EXHIBITION",
    "FESTIVAL", "HEALTH", "KIDS", "MOVIE", "MUSEUM", "PARTY", "SHOW", "SPORT", "TEST",
    "THEATER", "OTHER",
]
# fmt: on
# enum -> (prefix of Herald's value names, Vibeapp's values by number)
VIBEAPP_ENUMS: dict[str, tuple[str, dict[int, str]]] = {
    "Category": ("CATEGORY_", dict(enumerate(CATEGORIES))),
    "Currency": ("CURRENCY_", dict(enumerate(["UNSPECIFIED", "USD", "EUR", "RUB", "GBP", "CNY"]))),
    "LegalType": ("LEGAL_TYPE_", dict(enumerate(["UNSPECIFIED", "RU_LP", "RU_LTD", "EN_LTD"]))),
    "TicketStatus": (
        "STATUS_",
        dict(enumerate(["UNSPECIFIED", "ACTIVE", "USED", "CANCELLED", "REFUNDED"])),
    ),
}
HERALD: dict[str, Descriptor | EnumDescriptor] = {
    "Event": vibe.Event.DESCRIPTOR,
    "Venue": vibe.Venue.DESCRIPTOR,
    "Organizer": vibe.Organizer.DESCRIPTOR,
    "Legals": vibe.Legals.DESCRIPTOR,
    "Order": vibe.Order.DESCRIPTOR,
    "Customer": vibe.Customer.DESCRIPTOR,
    "OrderTicket": vibe.Order.Ticket.DESCRIPTOR,
    "Refund": vibe.Refund.DESCRIPTOR,
    "Ticket": vibe.Ticket.DESCRIPTOR,
    "Category": vibe.Category.DESCRIPTOR,
    "Currency": vibe.Currency.DESCRIPTOR,
    "LegalType": vibe.Legals.LegalType.DESCRIPTOR,
    "TicketStatus": vibe.Ticket.Status.DESCRIPTOR,
}
FIELD = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    "string": FieldDescriptor.TYPE_STRING,
    "int64": FieldDescriptor.TYPE_INT64,
    "double": FieldDescriptor.TYPE_DOUBLE,
}


def herald_type(field: FieldDescriptor) -> str:
    """``field`` of vibe_pb2 written the way VIBEAPP writes types."""
    names = {d.full_name: name for name, d in HERALD.items()}
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        kind = names.get(field.message_type.full_name, field.message_type.full_name)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        kind = names.get(field.enum_type.full_name, field.enum_type.full_name)
    else:
        kind = {v: k for k, v in SCALARS.items()}.get(field.type, f"type {field.type}")
    return f"repeated {kind}" if field.is_repeated else kind


def vibeapp_classes() -> dict[str, type[Message]]:
    """Message classes built from Vibeapp's schema alone: what Vibeapp's consumer has."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="vibeapp_published.proto", package="vibeapp", syntax="proto3"
    )
    for name, (_, values) in VIBEAPP_ENUMS.items():
        enum = fdp.enum_type.add(name=name)
        for number, value in values.items():
            enum.value.add(name=f"{name.upper()}_{value}", number=number)
    for name, fields in VIBEAPP.items():
        message = fdp.message_type.add(name=name)
        for number, field, spec in fields:
            repeated = spec.startswith("repeated ")
            kind = spec.removeprefix("repeated ")
            f = message.field.add(
                name=field,
                number=number,
                label=FIELD.LABEL_REPEATED if repeated else FIELD.LABEL_OPTIONAL,
            )
            if kind in SCALARS:
                f.type = SCALARS[kind]  # type: ignore[assignment]
            else:
                f.type = FIELD.TYPE_ENUM if kind in VIBEAPP_ENUMS else FIELD.TYPE_MESSAGE
                f.type_name = f".vibeapp.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"vibeapp.{name}"))
        for name in VIBEAPP
    }


VIBEAPP_CLASSES = vibeapp_classes()


# ---------------------------------------------------------------- samples


def event(**changes: Any) -> tl.Event:
    e = tl.Event(
        id="e1",
        group_id="g1",
        name="Лебединое озеро",
        status=tl.Event.STATUS_PAUSED,
        category="Ballet",
        start_at=1_700_000_000_123,
        finish_at=1_700_007_200_999,
        timezone_offset=3.0,
        media="https://img.example/e1.png",
        description="Act I",
        organizer=tl.Organizer(
            id="org1",
            name="Bolshoi",
            legals=tl.LegalEntity(
                name="Bolshoi LLC",
                type=tl.LegalEntity.LEGAL_TYPE_RU_LTD,
                inn="7700000000",
                ogrn="1027700000000",
                address="Moscow",
            ),
        ),
        venue=tl.Venue(
            id="v1",
            name="Main stage",
            address="Teatralnaya sq. 1",
            description="Historic",
            zipcode="125009",
            city="Moscow",
            lat=55.76,
            lon=37.62,
        ),
    )
    for name, value in changes.items():
        setattr(e, name, value)
    return e


def minimal_event() -> tl.Event:
    return tl.Event(id="e1", name="N", finish_at=5_000, organizer=tl.Organizer(id="org1"))


CUSTOMER = tl.Customer(
    email="a@example.com", phone="+79990000000", first_name="Anna", last_name="Karenina"
)


def order() -> tl.Order:
    return tl.Order(
        id="o1",
        number="A-42",
        status=tl.Order.STATUS_DONE,
        event_id="e1",
        organizer_id="org1",
        customer=CUSTOMER,
        tickets=[
            tl.Ticket(
                id="t1",
                event_id="e1",
                barcode="b1",
                number="1",
                series="AA",
                row="5",
                seat="12",
                category="Parterre",
                description="Front",
                price_nominal=150_000,
                currency="rub",
            ),
            tl.Ticket(id="t2", barcode="b2", category="Balcony", currency="XYZ"),
        ],
    )


def refund() -> tl.RefundRequest:
    return tl.RefundRequest(
        id="r1", status=tl.RefundRequest.STATUS_APPROVED, order_id="o1", event_id="e1"
    )


def outputs(fmt: Format, headers: Headers | None = None) -> list[Output]:
    h = headers or Headers()
    return [
        event_output(event(), fmt, h),
        order_output(order(), fmt, h),
        refund_output(refund(), CUSTOMER, ["t1", "t2"], fmt, h),
    ]


# -------------------------------------------------------- wire compatibility


@pytest.mark.parametrize("name", list(VIBEAPP))
def test_vibe_v1_keeps_vibeapps_field_numbers_and_types(name: str) -> None:
    descriptor = HERALD[name]
    assert isinstance(descriptor, Descriptor)
    expected = {field: (number, kind) for number, field, kind in VIBEAPP[name]}
    actual = {
        field: (
            descriptor.fields_by_name[field].number,
            herald_type(descriptor.fields_by_name[field]),
        )
        for field in expected
        if field in descriptor.fields_by_name
    }
    assert actual == expected
    new_numbers = {f.number for f in descriptor.fields if f.name not in expected}
    assert not new_numbers & {number for number, _, _ in VIBEAPP[name]}, "numbers reused"


@pytest.mark.parametrize("name", list(VIBEAPP_ENUMS))
def test_vibe_v1_enums_keep_vibeapps_numbers(name: str) -> None:
    prefix, values = VIBEAPP_ENUMS[name]
    descriptor = HERALD[name]
    assert isinstance(descriptor, EnumDescriptor)
    assert {v.number: v.name.removeprefix(prefix) for v in descriptor.values} == values


def test_vibeapps_own_schema_reads_heralds_event() -> None:
    out = event_output(event(category="concert"), "protobuf", Headers())
    e = VIBEAPP_CLASSES["Event"].FromString(out.value)
    assert json.loads(json_of(e)) == {
        "id": "e1",
        "name": "Лебединое озеро",
        "category": "CATEGORY_CONCERT",
        "startAt": "1700000000",
        "finishAt": "1700007200",
        "organizerId": "org1",
        "media": "https://img.example/e1.png",
        "timezone": "UTC+03:00",
        "description": "Act I",
        "venue": {
            "name": "Main stage",
            "address": "Teatralnaya sq. 1",
            "description": "Historic",
            "zipcode": "125009",
            "cityName": "Moscow",
            "lat": 55.76,
            "lon": 37.62,
        },
    }


def test_vibeapps_own_schema_reads_heralds_order_and_refund() -> None:
    o = VIBEAPP_CLASSES["Order"].FromString(order_output(order(), "protobuf", Headers()).value)
    assert json.loads(json_of(o)) == {
        "id": "o1",
        "eventId": "e1",
        "organizerId": "org1",
        "customer": {"email": "a@example.com", "phone": "+79990000000", "name": "Anna Karenina"},
        "tickets": [
            {
                "id": "t1",
                "barcode": "b1",
                "number": "1",
                "series": "AA",
                "row": "5",
                "seat": "12",
                "category": "Parterre",
                "description": "Front",
                "priceNominal": "150000",
                "currency": "CURRENCY_RUB",
            },
            {"id": "t2", "barcode": "b2", "category": "Balcony"},
        ],
    }
    out = refund_output(refund(), CUSTOMER, ["t1", "t2"], "protobuf", Headers())
    r = VIBEAPP_CLASSES["Refund"].FromString(out.value)
    assert json.loads(json_of(r)) == {
        "customer": {"email": "a@example.com", "phone": "+79990000000", "name": "Anna Karenina"},
        "ticketIds": ["t1", "t2"],
    }


def json_of(message: Message) -> str:
    return json_format.MessageToJson(message)


# ------------------------------------------------------------ Protobuf form


def test_event_message_times_in_seconds_and_milliseconds() -> None:
    m = event_message(event())
    assert (m.start_at, m.finish_at) == (1_700_000_000, 1_700_007_200)
    assert (m.start_at_ms, m.finish_at_ms) == (1_700_000_000_123, 1_700_007_200_999)


@pytest.mark.parametrize(
    ("category", "number", "name"),
    [
        ("concert", vibe.CATEGORY_CONCERT, "concert"),
        ("Theater", vibe.CATEGORY_THEATER, "theater"),
        (" other ", vibe.CATEGORY_OTHER, "other"),
        ("circus", vibe.CATEGORY_OTHER, "circus"),  # a JSON category without a number
        ("standup", vibe.CATEGORY_OTHER, "standup"),
        ("opera", vibe.CATEGORY_OTHER, "other"),  # unknown to both forms
        ("unspecified", vibe.CATEGORY_OTHER, "other"),  # was CATEGORY_UNSPECIFIED vs "other"
    ],
)
def test_event_message_category(category: str, number: int, name: str) -> None:
    m = event_message(event(category=category))
    assert m.category == number
    assert m.category_name == name
    assert m.category_name == event_json(event(category=category))["category"]


@pytest.mark.parametrize(
    ("offset", "text"),
    [(3.0, "UTC+03:00"), (0.0, "UTC+00:00"), (5.5, "UTC+05:30"), (-3.5, "UTC-03:30")],
)
def test_event_message_timezone(offset: float, text: str) -> None:
    m = event_message(event(timezone_offset=offset))
    assert m.timezone == text
    assert m.offset == offset
    bare = minimal_event()
    bare.timezone_offset = offset
    assert event_message(bare).timezone == text, "with or without a venue"


def test_event_message_new_fields() -> None:
    m = event_message(event())
    assert m.group_id == "g1"
    assert m.status == vibe.EVENT_STATUS_PAUSED
    assert m.organizer.id == m.organizer_id == "org1"
    assert m.organizer.legals.type == vibe.Legals.LEGAL_TYPE_RU_LTD
    assert (m.organizer.legals.inn, m.organizer.legals.ogrn) == ("7700000000", "1027700000000")
    assert m.venue.id == "v1"
    assert not event_message(minimal_event()).HasField("venue")


def test_order_message() -> None:
    m = order_message(order())
    assert (m.id, m.event_id, m.organizer_id, m.number) == ("o1", "e1", "org1", "A-42")
    assert (m.customer.name, m.customer.first_name, m.customer.last_name) == (
        "Anna Karenina",
        "Anna",
        "Karenina",
    )
    assert [t.currency for t in m.tickets] == [vibe.CURRENCY_RUB, vibe.CURRENCY_UNSPECIFIED]
    assert [t.event_id for t in m.tickets] == ["e1", "e1"], "the order's event by default"
    assert m.tickets[0].price_nominal == 150_000


def test_refund_message() -> None:
    m = refund_message(refund(), CUSTOMER, ["t1", "t2"])
    assert list(m.ticket_ids) == ["t1", "t2"]
    assert (m.id, m.order_id, m.event_id) == ("r1", "o1", "e1")
    assert m.customer.name == "Anna Karenina"


# ---------------------------------------------------------------- JSON form


def test_event_json_has_the_contracts_keys() -> None:
    assert event_json(event()) == {
        "id": "e1",
        "group_id": "g1",
        "name": "Лебединое озеро",
        "status": "paused",
        "category": "ballet",
        "start_at": 1_700_000_000_123,
        "finish_at": 1_700_007_200_999,
        "offset": 3.0,
        "media": "https://img.example/e1.png",
        "description": "Act I",
        "organizer": {
            "id": "org1",
            "name": "Bolshoi",
            "legals": {
                "name": "Bolshoi LLC",
                "type": "ru_ltd",
                "inn": "7700000000",
                "ogrn": "1027700000000",
                "address": "Moscow",
            },
        },
        "venue": {
            "id": "v1",
            "name": "Main stage",
            "address": "Teatralnaya sq. 1",
            "description": "Historic",
            "zipcode": "125009",
            "city_name": "Moscow",
            "lat": 55.76,
            "lon": 37.62,
        },
    }


def test_event_json_omits_empty_optional_keys() -> None:
    assert event_json(minimal_event()) == {
        "id": "e1",
        "name": "N",
        "status": "active",
        "category": "other",
        "finish_at": 5_000,
        "offset": 0.0,
        "organizer": {"id": "org1", "name": ""},
    }
    e = minimal_event()
    e.venue.CopyFrom(tl.Venue(id="v1", name="Hall"))
    assert event_json(e)["venue"] == {"id": "v1", "name": "Hall"}


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (tl.Event.STATUS_ACTIVE, "active"),
        (tl.Event.STATUS_PAUSED, "paused"),
        (tl.Event.STATUS_FINISHED, "finished"),
        (tl.Event.STATUS_CANCELLED, "cancelled"),
    ],
)
def test_event_json_status(status: tl.Event.Status.ValueType, name: str) -> None:
    assert event_json(event(status=status))["status"] == name


@pytest.mark.parametrize(
    ("category", "name"),
    [("CIRCUS", "circus"), ("Stand-up", "other"), ("", "other"), ("Workshop", "workshop")],
)
def test_event_json_category(category: str, name: str) -> None:
    assert event_json(event(category=category))["category"] == name


def test_order_json_has_the_contracts_keys() -> None:
    assert order_json(order()) == {
        "id": "o1",
        "number": "A-42",
        "customer": {
            "email": "a@example.com",
            "phone": "+79990000000",
            "first_name": "Anna",
            "last_name": "Karenina",
        },
        "tickets": [
            {
                "id": "t1",
                "event_id": "e1",
                "barcode": "b1",
                "number": "1",
                "series": "AA",
                "row": "5",
                "seat": "12",
                "category": "Parterre",
                "description": "Front",
                "price_nominal": 150_000,
                "currency": "RUB",  # upper case
            },
            # the order's event; no price; an unknown currency is left out
            {"id": "t2", "event_id": "e1", "barcode": "b2", "category": "Balcony"},
        ],
    }


def test_refund_json_has_the_contracts_keys() -> None:
    assert refund_json(tl.Customer(email="a@example.com", phone="+7"), ["t1"]) == {
        "customer": {"email": "a@example.com", "phone": "+7"},
        "ticket_ids": ["t1"],
    }


def test_json_output_is_utf8_json_of_the_form() -> None:
    out = event_output(event(), "json", Headers())
    assert json.loads(out.value.decode("utf-8")) == event_json(event())
    assert "Лебединое".encode() in out.value, "not \\u-escaped"


# -------------------------------------------------------------------- outputs


@pytest.mark.parametrize("fmt", ["protobuf", "json"])
def test_every_output_has_key_and_headers(fmt: Format) -> None:
    content_type = {"protobuf": b"application/x-protobuf", "json": b"application/json"}[fmt]
    keys = [out.key for out in outputs(fmt)]
    assert keys == [b"e1", b"o1", b"r1"]
    for out in outputs(fmt, Headers(schema_version="2.1", application_id="tl-prod")):
        assert dict(out.headers) == {
            "content-type": content_type,
            "schema-version": b"2.1",
            "application-id": b"tl-prod",
        }
    for out in outputs(fmt):
        assert dict(out.headers)["schema-version"] == b"1.0"
        assert dict(out.headers)["application-id"] == b"ticketland"


def test_content_hash_is_stable_and_tells_formats_and_content_apart() -> None:
    protobuf, json_ = outputs("protobuf"), outputs("json")
    assert [o.content_hash for o in protobuf] == [o.content_hash for o in outputs("protobuf")]
    assert [o.content_hash for o in json_] == [o.content_hash for o in outputs("json")]
    hashes = {o.content_hash for o in protobuf + json_}
    assert len(hashes) == 6
    changed = event_output(event(name="Other"), "protobuf", Headers())
    assert changed.content_hash != protobuf[0].content_hash
