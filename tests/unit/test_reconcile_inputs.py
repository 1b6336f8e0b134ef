"""Decoding and validating Ticketland's records: pure logic."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format
from ticketland.v1 import ticketland_pb2 as tl

from herald.services.reconcile.inputs import BadRecord, Kind, decode, short_status

Headers = list[tuple[str, bytes]]
JSON_CT: Headers = [("content-type", b"application/json")]
PROTOBUF_CT: Headers = [("content-type", b"application/x-protobuf")]


def event() -> tl.Event:
    return tl.Event(
        id="e1",
        name="Swan Lake",
        status=tl.Event.STATUS_ACTIVE,
        category="ballet",
        start_at=1_700_000_000_000,
        organizer=tl.Organizer(
            id="org1",
            name="Bolshoi",
            legals=tl.LegalEntity(name="Bolshoi LLC", type=tl.LegalEntity.LEGAL_TYPE_RU_LTD),
        ),
        venue=tl.Venue(id="v1", name="Main stage", lat=55.76, lon=37.62),
    )


def order() -> tl.Order:
    return tl.Order(
        id="o1",
        number="A-42",
        status=tl.Order.STATUS_DONE,
        event_id="e1",
        customer=tl.Customer(email="a@example.com", phone="+79990000000"),
        tickets=[
            tl.Ticket(id="t1", event_id="e1", price_nominal=150_000, currency="RUB"),
            tl.Ticket(id="t2", price_nominal=150_000, currency="RUB"),
        ],
    )


def refund() -> tl.RefundRequest:
    return tl.RefundRequest(
        id="r1",
        status=tl.RefundRequest.STATUS_APPROVED,
        order_id="o1",
        event_id="e1",
        policy=tl.RefundRequest.POLICY_LAW_RU_193,
        money=tl.Money(refund_nominal=100, customer=100),
        tickets=[tl.RefundTicket(ticket_id="t1", price=100, money=tl.Money(refund_nominal=100))],
    )


def as_json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def order_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "o1",
        "status": "DONE",
        "event_id": "e1",
        "tickets": [{"id": "t1", "price_nominal": 100, "currency": "RUB"}],
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def refund_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": "r1", "status": "NEW", "order_id": "o1", "event_id": "e1"}
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


# ------------------------------------------------------------------- protobuf


@pytest.mark.parametrize(
    ("kind", "message"),
    [("event", event()), ("order", order()), ("refund", refund())],
)
def test_protobuf_round_trip(kind: Kind, message: tl.Event | tl.Order | tl.RefundRequest) -> None:
    decoded = decode(kind, PROTOBUF_CT, message.SerializeToString())
    assert decoded.kind == kind
    assert decoded.message == message
    assert decoded.entity_id == message.id


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("other", b"x")],
        [("Content-Type", b"application/x-protobuf; proto=ticketland.v1.Order")],
        [("content-type", b"application/protobuf")],
    ],
    ids=["missing", "other-header-only", "with-parameter", "application/protobuf"],
)
def test_protobuf_without_or_with_variant_content_type(headers: Headers) -> None:
    assert decode("order", headers, order().SerializeToString()).message == order()


@pytest.mark.parametrize("value", [b"\xff\xff\xff", b"garbage", b"\x0a\xff"])
def test_garbage_protobuf_is_a_bad_record(value: bytes) -> None:
    with pytest.raises(BadRecord, match=r"not a ticketland\.v1\.Order"):
        decode("order", PROTOBUF_CT, value)


@pytest.mark.parametrize("value", [None, b""])
def test_an_empty_value_is_a_bad_record(value: bytes | None) -> None:
    with pytest.raises(BadRecord, match="empty"):
        decode("order", [], value)


def test_an_unsupported_content_type_is_a_bad_record() -> None:
    with pytest.raises(BadRecord, match="unsupported content-type 'text/plain'"):
        decode("order", [("content-type", b"text/plain")], as_json(order_doc()))


# ----------------------------------------------------------------------- JSON


def test_json_with_snake_case_keys() -> None:
    doc = {
        "id": "o1",
        "number": "A-42",
        "status": "STATUS_DONE",
        "event_id": "e1",
        "organizer_id": "org1",
        "customer": {"email": "a@example.com", "first_name": "Anna"},
        "tickets": [{"id": "t1", "event_id": "e1", "price_nominal": "150000"}],
        "created_at": 1_700_000_000_000,
    }
    message = decode("order", JSON_CT, as_json(doc)).message
    assert isinstance(message, tl.Order)
    assert (message.id, message.event_id, message.organizer_id) == ("o1", "e1", "org1")
    assert message.status == tl.Order.STATUS_DONE
    assert message.customer.first_name == "Anna"
    assert message.tickets[0].price_nominal == 150_000
    assert message.created_at == 1_700_000_000_000


def test_json_with_lower_camel_keys_equals_the_snake_case_form() -> None:
    camel = {
        "id": "o1",
        "status": "DONE",
        "eventId": "e1",
        "organizerId": "org1",
        "customer": {"firstName": "Anna", "lastName": "K"},
        "tickets": [{"id": "t1", "eventId": "e1", "priceNominal": 150000}],
    }
    snake = {
        "id": "o1",
        "status": "DONE",
        "event_id": "e1",
        "organizer_id": "org1",
        "customer": {"first_name": "Anna", "last_name": "K"},
        "tickets": [{"id": "t1", "event_id": "e1", "price_nominal": 150000}],
    }
    assert decode("order", JSON_CT, as_json(camel)) == decode("order", JSON_CT, as_json(snake))


@pytest.mark.parametrize("status", ["DONE", "done", "STATUS_DONE", 3])
def test_json_enums_with_or_without_prefix(status: str | int) -> None:
    message = decode("order", JSON_CT, as_json(order_doc(status=status))).message
    assert message.status == tl.Order.STATUS_DONE


def test_json_enums_without_prefix_in_nested_and_refund_messages() -> None:
    doc = {
        "id": "e1",
        "name": "Swan Lake",
        "status": "active",
        "organizer": {"id": "org1", "legals": {"type": "RU_LTD"}},
    }
    message = decode("event", JSON_CT, as_json(doc)).message
    assert isinstance(message, tl.Event)
    assert message.status == tl.Event.STATUS_ACTIVE
    assert message.organizer.legals.type == tl.LegalEntity.LEGAL_TYPE_RU_LTD

    refund_json: dict[str, Any] = {
        "id": "r1",
        "status": "APPROVED",
        "orderId": "o1",
        "eventId": "e1",
        "policy": "LAW_RU_193",
        "reasonType": "at_will",
        "tickets": [{"ticketId": "t1"}],
    }
    r = decode("refund", JSON_CT, as_json(refund_json)).message
    assert isinstance(r, tl.RefundRequest)
    assert r.status == tl.RefundRequest.STATUS_APPROVED
    assert r.policy == tl.RefundRequest.POLICY_LAW_RU_193
    assert r.reason_type == tl.RefundRequest.REASON_TYPE_AT_WILL


@pytest.mark.parametrize(
    "ctype",
    [
        b"application/json; charset=utf-8",
        b"Application/JSON;charset=UTF-8",
        b" application/json ",
        b"application/vnd.ticketland+json",
    ],
)
def test_json_content_type_variants(ctype: bytes) -> None:
    decoded = decode("order", [("Content-Type", ctype)], as_json(order_doc()))
    assert decoded.message.id == "o1"


def test_json_and_protobuf_forms_decode_to_the_same_message() -> None:
    doc = {
        "id": "o1",
        "number": "A-42",
        "status": "DONE",
        "eventId": "e1",
        "customer": {"email": "a@example.com", "phone": "+79990000000"},
        "tickets": [
            {"id": "t1", "eventId": "e1", "priceNominal": 150000, "currency": "RUB"},
            {"id": "t2", "priceNominal": 150000, "currency": "RUB"},
        ],
    }
    assert decode("order", JSON_CT, as_json(doc)) == decode(
        "order", [], order().SerializeToString()
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"[1, 2]", "not an object"),
        (b"[]", "not an object"),
        (b'"o1"', "not an object"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (as_json(order_doc(tickets="t1")), r"does not match ticketland\.v1\.Order"),
        (as_json(order_doc(status="SHIPPED")), r"does not match ticketland\.v1\.Order"),
    ],
    ids=["array", "empty-array", "string", "broken", "binary", "wrong-type", "unknown-enum"],
)
def test_json_that_does_not_decode_is_a_bad_record(value: bytes, reason: str) -> None:
    with pytest.raises(BadRecord, match=reason):
        decode("order", JSON_CT, value)


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kind", "doc", "reason"),
    [
        ("event", {"name": "n", "organizer": {"id": "org1"}}, "id: required"),
        ("event", {"id": "e1", "organizer": {"id": "org1"}}, "name: required"),
        ("event", {"id": "e1", "name": "n"}, r"organizer\.id: required"),
        ("order", order_doc(id=None), "id: required"),
        ("order", order_doc(event_id=None), "event_id: required"),
        ("order", order_doc(status=None), "status: required"),
        ("order", order_doc(tickets=[{"price_nominal": 1}]), r"tickets\[0\]\.id: required"),
        (
            "order",
            order_doc(tickets=[{"id": "t1"}, {"id": "t2"}, {"id": "t1"}]),
            r"tickets\[2\]\.id: 't1' appears twice",
        ),
        (
            "order",
            order_doc(tickets=[{"id": "t1", "event_id": "e2"}]),
            r"tickets\[0\]\.event_id: not the order's event 'e1'",
        ),
        (
            "order",
            order_doc(tickets=[{"id": "t1", "price_nominal": -1}]),
            r"tickets\[0\]\.price_nominal: negative",
        ),
        (
            "order",
            order_doc(tickets=[{"id": "t1", "currency": "JPY"}]),
            r"tickets\[0\]\.currency: 'JPY' is not one of",
        ),
        ("refund", refund_doc(id=None), "id: required"),
        ("refund", refund_doc(order_id=None), "order_id: required"),
        ("refund", refund_doc(event_id=None), "event_id: required"),
        ("refund", refund_doc(status=None), "status: required"),
        (
            "refund",
            refund_doc(status="APPROVED"),
            "tickets: an approved refund names its tickets",
        ),
        ("refund", refund_doc(tickets=[{"price": 1}]), r"tickets\[0\]\.ticket_id: required"),
    ],
)
def test_validation_rules(kind: Kind, doc: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadRecord, match=reason):
        decode(kind, JSON_CT, as_json(doc))


def test_validation_applies_to_protobuf_records_too() -> None:
    o = order()
    o.tickets[1].id = "t1"
    with pytest.raises(BadRecord, match="appears twice"):
        decode("order", [], o.SerializeToString())


def test_every_problem_is_in_the_reason() -> None:
    doc = order_doc(id=None, event_id=None, tickets=[{"id": "t1", "price_nominal": -5}])
    with pytest.raises(BadRecord) as caught:
        decode("order", JSON_CT, as_json(doc))
    reason = str(caught.value)
    assert reason.split("; ") == [
        "id: required",
        "event_id: required",
        "tickets[0].price_nominal: negative",
    ]


@pytest.mark.parametrize(
    ("kind", "doc"),
    [
        ("order", order_doc(tickets=[{"id": "t1", "currency": "rub"}])),  # any case
        ("order", order_doc(tickets=[{"id": "t1", "event_id": "e1"}])),  # the order's event
        ("order", order_doc(tickets=[])),
        ("refund", refund_doc()),  # not approved yet: no tickets needed
        ("refund", refund_doc(status="REJECTED")),
    ],
    ids=["lower-case-currency", "same-event", "no-tickets", "new-refund", "rejected-refund"],
)
def test_valid_records_are_taken(kind: Kind, doc: dict[str, Any]) -> None:
    assert decode(kind, JSON_CT, as_json(doc)).entity_id == doc["id"]


@pytest.mark.parametrize(
    ("message", "expected"),
    [(order(), "DONE"), (refund(), "APPROVED"), (event(), "ACTIVE")],
)
def test_short_status(message: tl.Event | tl.Order | tl.RefundRequest, expected: str) -> None:
    assert short_status(message) == expected


@pytest.mark.parametrize("form", ["protobuf", "json"])
def test_a_status_number_outside_the_enum_is_a_bad_record(form: str) -> None:
    # Proto3 enums are open: status 9 decodes from the wire (and from a JSON number) and
    # passes validation, after which short_status() fails with KeyError instead of the
    # record going to the dead letters.
    o = order()
    o.status = tl.Order.Status.ValueType(9)
    if form == "protobuf":
        headers, value = PROTOBUF_CT, o.SerializeToString()
    else:
        headers, value = JSON_CT, as_json(order_doc(status=9))
    with pytest.raises(BadRecord, match="status"):
        short_status(decode("order", headers, value).message)


@pytest.mark.parametrize("as_json", [False, True])
def test_a_nul_character_in_a_stored_text_is_a_bad_record(as_json: bool) -> None:
    # PostgreSQL text cannot hold NUL: the ledger would refuse the batch for ever.
    bad = tl.Order(
        id="o\x001", event_id="e1", status=tl.Order.STATUS_DONE, tickets=[tl.Ticket(id="t\x00")]
    )
    headers: list[tuple[str, bytes]] = []
    value = bad.SerializeToString()
    if as_json:
        headers = [("content-type", b"application/json")]
        value = json.dumps(json_format.MessageToDict(bad)).encode()
        assert b"\\u0000" in value
    with pytest.raises(BadRecord, match=r"id: contains a NUL character") as caught:
        decode("order", headers, value)
    assert "tickets[0].id: contains a NUL character" in str(caught.value)


def test_json_keys_the_schema_does_not_know_yet_are_ignored() -> None:
    doc = {
        "id": "e1",
        "name": "Show",
        "organizer": {"id": "g1", "name": "Org", "rating": 5},
        "new_field": {"x": [1, 2]},
    }
    decoded = decode("event", JSON_CT, json.dumps(doc).encode())
    assert isinstance(decoded.message, tl.Event)
    assert (decoded.message.id, decoded.message.organizer.name) == ("e1", "Org")


@pytest.mark.parametrize(
    "document",
    [
        b'{"id": "o1", "status": Infinity}',  # an enum as a float json accepts
        b'{"id": "o1", "status": "\\ud800"}',  # a lone surrogate where an enum goes
        b'{"id": "o1", "customer": "\\ud800"}',  # and where a message goes
        b'{"id": "o1", "tickets": [{"status": -Infinity}]}',
    ],
)
def test_json_protobuf_cannot_take_is_a_bad_record(document: bytes) -> None:
    # These had escaped as OverflowError / SystemError and crashed the consumer
    # (Infinity is not JSON at all: refused as such)
    with pytest.raises(BadRecord, match=r"does not match ticketland\.v1\.Order|not JSON"):
        decode("order", [("content-type", b"application/json")], document)


@pytest.mark.parametrize("offset", ["Infinity", "-Infinity", "NaN", 15.0])
def test_a_non_finite_or_impossible_timezone_offset_is_a_bad_record(offset: str | float) -> None:
    # Valid in proto3 JSON and Protobuf doubles; Infinity crashed the consumer (the whole
    # service, again after every restart) while building Vibeapp's event
    doc: dict[str, Any] = {"id": "ev-1", "name": "Show", "organizer": {"id": "org-1"}}
    doc["timezone_offset"] = offset
    with pytest.raises(BadRecord, match="timezone_offset"):
        decode("event", JSON_CT, as_json(doc))
    message = event()
    message.timezone_offset = float(offset)
    with pytest.raises(BadRecord, match="timezone_offset"):
        decode("event", PROTOBUF_CT, message.SerializeToString())


def test_amounts_beyond_any_real_price_are_bad_records() -> None:
    # 5e18 per ticket was accepted; two of them overflowed the reconciliation's int64
    # totals and every RunReconciliation over that period answered INTERNAL
    huge = order()
    huge.tickets[0].price_nominal = 5 * 10**18
    with pytest.raises(BadRecord, match=r"tickets\[0\].price_nominal"):
        decode("order", PROTOBUF_CT, huge.SerializeToString())
    negative = refund()
    negative.money.customer = -1000
    with pytest.raises(BadRecord, match=r"money\.customer: negative"):
        decode("refund", PROTOBUF_CT, negative.SerializeToString())
    clawback = refund()
    clawback.money.agent = -50  # an agent's commission taken back: allowed
    assert decode("refund", PROTOBUF_CT, clawback.SerializeToString()).message == clawback
