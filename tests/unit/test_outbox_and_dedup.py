"""The Kafka record built for an event, what the relay may mark, batch dedup."""

from __future__ import annotations

import hashlib
import json

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from herald.runtime import cloudevents_kafka as binding
from herald.runtime.errors import InvalidArgument
from herald.runtime.kafka_batches import rows_to_mark
from herald.services.ingest import dedup, envelope
from herald.services.ingest.event import Envelope, Event
from herald.services.ingest.outbox import (
    LANES,
    IdempotencyKey,
    headers_of,
    make_pending,
)
from tests.fixtures.seeds import RETURN_CREATED, USER_REGISTERED


@pytest.mark.parametrize("subject", ["", "s", "s" * 200, "😀" * 100_000])
def test_the_record_size_is_an_upper_bound_of_what_kafka_counts(subject: str) -> None:
    # the size checked was data plus attributes once; the record repeats the key and
    # prefixes every header: accepted events were too large for Kafka
    doc = {**json.loads(RETURN_CREATED), "subject": subject}
    event, _ = envelope.parse_json(json.dumps(doc))
    row = make_pending(
        event, "t", {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}, None, "a"
    ).row
    kafka = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        row.key, row.value, headers_of(row.headers_json)
    )
    assert kafka <= row.size <= kafka + 200
    assert row.size > event.size() + len(subject.encode())


def test_record_follows_the_cloudevents_kafka_binding() -> None:
    event, _ = envelope.parse_json(RETURN_CREATED)
    pending = make_pending(event, "herald.events", {"x-request-id": "req-1"}, None, "bitrix24")
    headers = {k: v.decode() for k, v in headers_of(pending.row.headers_json)}
    assert headers["ce_id"] == event.id
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_type"] == "integration.return.created"
    assert headers["ce_subject"] == "returns/ret_501"
    assert headers["ce_time"] == "2024-02-01T10:15:30Z"
    assert headers["ce_dataschema"].endswith("returns-event.json")
    assert headers["content-type"] == "application/json"
    assert headers["schema-version"] == "1.0"
    assert headers["application-id"] == "bitrix24"
    assert headers["x-request-id"] == "req-1"
    assert "ce_datacontenttype" not in headers
    assert pending.row.key == b"returns/ret_501"  # subject, as no partitionkey
    assert json.loads(pending.row.value)["order_id"] == "order_1001"
    assert 0 <= pending.row.lane < LANES


def test_key_prefers_partitionkey_then_subject_then_id() -> None:
    base = {"id": "i", "source": "s", "type": "t", "specversion": "1.0"}
    assert binding.encode(binding.BinaryEvent(base, b""))[0] == b"i"
    assert binding.encode(binding.BinaryEvent({**base, "subject": "sub"}, b""))[0] == b"sub"
    with_pk = {**base, "subject": "sub", "partitionkey": "pk"}
    assert binding.encode(binding.BinaryEvent(with_pk, b""))[0] == b"pk"


def test_decode_round_trip_and_rejects_non_cloudevents() -> None:
    attrs = {
        "id": "i",
        "source": "s",
        "type": "t",
        "specversion": "1.0",
        "datacontenttype": "application/json",
    }
    _, value, headers = binding.encode(binding.BinaryEvent(attrs, b"{}", {"traceparent": "tp"}))
    decoded = binding.decode(headers, value)
    assert decoded.attributes == attrs
    assert decoded.extra == {"traceparent": "tp"}
    with pytest.raises(ValueError, match="ce_specversion"):
        binding.decode([("content-type", b"application/json")], b"{}")


def test_decode_keeping_reads_any_case_and_any_number_of_header_names() -> None:
    headers = [
        ("CE_Id", b"i"),
        ("ce_source", b"s"),
        ("Ce_Type", b"t"),
        ("ce_specversion", b"1.0"),
        ("Content-Type", b"application/json"),
        ("TraceParent", b"tp"),
        # More distinct names than the name cache holds: every one still decoded.
        *[(f"x-made-up-{i}", str(i).encode()) for i in range(3000)],
    ]
    decoded, kept = binding.decode_keeping(headers, b"{}", frozenset({"traceparent"}))
    assert decoded.attributes == {
        "id": "i",
        "source": "s",
        "type": "t",
        "specversion": "1.0",
        "datacontenttype": "application/json",
    }
    assert decoded.extra["traceparent"] == "tp"
    assert decoded.extra["x-made-up-2999"] == "2999"
    assert len(decoded.extra) == 3001
    kept_names = ["CE_Id", "ce_source", "Ce_Type", "ce_specversion", "TraceParent"]
    assert [name for name, _ in kept] == kept_names, "ce_* and forwarded ones, as they came"
    again, _ = binding.decode_keeping(headers, b"{}", frozenset())
    assert again == decoded
    with pytest.raises(ValueError, match="not UTF-8"):
        binding.decode_keeping([*headers[:4], ("ce_subject", b"\xff")], b"", frozenset())


def test_rows_after_a_failed_row_of_the_same_key_stay_unmarked() -> None:
    keys = [b"a", b"b", b"a", b"c", b"b"]
    acked = [False, True, True, True, True]
    # a failed first: its later row stays; b and c are independent
    assert rows_to_mark(keys, acked) == [1, 3, 4]
    assert rows_to_mark(keys, [True] * 5) == [0, 1, 2, 3, 4]


def test_batch_plan_followers_and_refusals() -> None:
    event, _ = envelope.parse_json(USER_REGISTERED)
    other, _ = envelope.parse_json(USER_REGISTERED.replace("Mozilla/5.0", "curl"))
    key = IdempotencyKey("k1", "Publish", "auth_service")
    items = [
        make_pending(event, "t", {}, key, "a"),
        make_pending(event, "t", {}, key, "a"),  # same key, same request
        make_pending(other, "t", {}, key, "a"),  # same key, other request
        make_pending(other, "t", {}, None, "a"),  # same id+source, other content
        make_pending(event, "t", {}, None, "a"),  # same id+source, same content
    ]
    plan = dedup.plan(items)
    assert plan.leaders == [0]
    assert plan.followers == {1: 0, 4: 0}
    assert set(plan.refused) == {2, 3}
    outcomes: list[dedup.Outcome | None] = [dedup.Accepted(event.id, False), None, None, None, None]
    resolved = dedup.resolve_followers(outcomes, plan)
    assert resolved[1] == dedup.Accepted(event.id, True)
    assert resolved[4] == dedup.Accepted(event.id, True)
    refused = resolved[2]
    assert isinstance(refused, InvalidArgument)
    assert refused.violations[0].field == "idempotency-key"
    refused = resolved[3]
    assert isinstance(refused, InvalidArgument)
    assert refused.violations[0].field == "event_id"


def test_an_event_repeated_under_another_key_is_written_after_the_rest() -> None:
    event, _ = envelope.parse_json(USER_REGISTERED)
    other, _ = envelope.parse_json(USER_REGISTERED.replace("Mozilla/5.0", "curl"))
    k1, k2 = (IdempotencyKey(k, "Publish", "auth_service") for k in ("k1", "k2"))
    items = [
        make_pending(event, "t", {}, k1, "a"),
        make_pending(event, "t", {}, k1, "a"),  # same key: follows (plan)
        make_pending(event, "t", {}, k2, "a"),  # same event, another key: later
        make_pending(other, "t", {}, None, "a"),  # same event id, no key: later
        make_pending(event, "t", {}, k2, "a"),  # the deferred item's key: later too
    ]
    assert dedup.deferred(items) == {2, 3, 4}
    # Written later, the deferred items among themselves: the first leads again.
    assert dedup.deferred([items[2], items[3], items[4]]) == {1}
    assert dedup.deferred([items[2], items[4]]) == set()


def test_a_key_first_used_by_a_deferred_item_decides_later_items_under_it() -> None:
    # [X(k1, E), Y(k2, E), Z(k2, other event)]: Z led the first round and took k2, so Y,
    # the first request under k2, was refused as a reused key
    event, _ = envelope.parse_json(USER_REGISTERED)
    other, _ = envelope.parse_json(USER_REGISTERED.replace("6a9f7f26", "7a9f7f26"))
    assert other.id != event.id
    k1, k2 = (IdempotencyKey(k, "Publish", "auth_service") for k in ("k1", "k2"))
    items = [
        make_pending(event, "t", {}, k1, "a"),
        make_pending(event, "t", {}, k2, "a"),
        make_pending(other, "t", {}, k2, "a"),
    ]
    assert dedup.rounds(items) == [[0], [1, 2]]


def test_rounds_are_one_for_a_plain_group_and_bounded_for_many_keys_of_one_event() -> None:
    event, _ = envelope.parse_json(USER_REGISTERED)
    keys = [IdempotencyKey(f"k{n}", "Publish", "auth_service") for n in range(300)]
    assert dedup.rounds([make_pending(event, "t", {}, keys[0], "a")] * 3) == [[0, 1, 2]]
    many = [make_pending(event, "t", {}, key, "a") for key in keys]
    assert dedup.rounds(many) == [[n] for n in range(300)]  # no recursion: a loop


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"id": "1", "source": "urn:x", "type": "a.b", "specversion": "1.0"},
        {"id": 'quote " and \\ backslash', "über": "ü € 😀 \u2028 \x01 \udc80", "a": ""},
    ],
)
def test_a_fingerprint_is_what_stored_fingerprints_were_made_of(
    attributes: dict[str, str],
) -> None:
    """Fingerprints stored before must still match a retry: json.dumps of the sorted
    attributes, a NUL, the data."""
    event = Event(attributes, b'{"n": 1}', Envelope.STRUCTURED_JSON)
    expected = hashlib.sha256(
        json.dumps(sorted(attributes.items())).encode() + b"\0" + b'{"n": 1}'
    ).digest()
    assert event.fingerprint() == expected


def _binary(data: bytes, content_type: str, **attributes: str) -> Event:
    base = {"specversion": "1.0", "id": "e1", "source": "urn:s", "type": "t"}
    if content_type:
        base["datacontenttype"] = content_type
    return Event({**base, **attributes}, data, Envelope.PROTOBUF)


@pytest.mark.parametrize(
    ("first", "retry", "content_type", "same"),
    [
        (b'{"a":1,"b":[1,2]}', b'{"b": [1, 2], "a": 1}', "application/json", True),
        (b'{"a":{"x":1,"y":2}}', b'{"a":{"y":2,"x":1}}', "application/cloudevents+json", True),
        (b'{"a":"\\u00e9"}', '{"a":"é"}'.encode(), "application/json; charset=utf-8", True),
        (b'{"a":1.50}', b'{"a":1.5}', "application/json", True),
        (b'{"a":1,"b":2}', b'{"a":1,"b":3}', "application/json", False),
        (b'{"a":1}', b'{"a":true}', "application/json", False),  # equal in Python
        (b'{"a":1}', b'{"a":1.0}', "application/json", False),
        (b"[1,2]", b"[2,1]", "application/json", False),  # arrays are ordered
        (b'{"a":1,"b":2}', b'{"b":2,"a":1}', "text/plain", False),  # not JSON data
        (b'{"a":1,"b":2}', b'{"b":2,"a":1}', "", True),  # none: validated as JSON
        (b'{"a":1,"b":2}', b'{"b":2,"a":1}', "text/json", True),  # was False: as validated
        (b'{"a":NaN}', b'{"a": NaN}', "application/json", False),
        (b'{"a":1}', b'{"a":1', "application/json", False),
    ],
)
def test_a_retry_differing_only_in_how_its_json_is_written_repeats_the_request(
    first: bytes, retry: bytes, content_type: str, same: bool
) -> None:
    stored = _binary(first, content_type)
    assert dedup.reformatted(_binary(retry, content_type), first, stored.fingerprint()) is same


def test_a_reformatted_retry_must_repeat_the_attributes_exactly() -> None:
    stored = _binary(b'{"a":1,"b":2}', "application/json")
    retry = _binary(b'{"b":2,"a":1}', "application/json", subject="other")
    assert not dedup.reformatted(retry, stored.data, stored.fingerprint())
    same_bytes = _binary(b'{"a":1,"b":2}', "application/json")
    assert not dedup.reformatted(same_bytes, stored.data, stored.fingerprint()), (
        "the same bytes are the fingerprint's to judge"
    )


def test_json_envelope_data_is_json_whatever_its_content_type_says() -> None:
    first, _ = envelope.parse_json(json.dumps({**json.loads(RETURN_CREATED)}))
    doc = json.loads(RETURN_CREATED)
    doc["data"] = dict(reversed(list(doc["data"].items())))
    retry, _ = envelope.parse_json(json.dumps(doc))
    assert retry.data != first.data
    assert dedup.reformatted(retry, first.data, first.fingerprint())
