"""Parsing the three envelopes into one Event, and the field names of their errors."""

from __future__ import annotations

import json

import pytest
from herald.cloudevents.v1 import cloudevents_pb2

from herald.runtime.errors import InvalidArgument
from herald.services.ingest import envelope
from herald.services.ingest.event import Envelope, Event
from tests.fixtures.seeds import LEGACY_EXAMPLES, RETURN_CREATED


def fields(exc: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {v.field: v.description for v in exc.value.violations}


def parsed_ok(parsed: envelope.Parsed) -> Event:
    event, problems = parsed
    assert problems == []
    return event


def problems(parsed: envelope.Parsed) -> dict[str, str]:
    return {v.field: v.description for v in parsed[1]}


def test_seed_return_event_maps_seed_spellings_to_cloudevents_attributes() -> None:
    event = parsed_ok(envelope.parse_json(RETURN_CREATED))
    assert event.envelope is Envelope.STRUCTURED_JSON
    assert event.attributes["datacontenttype"] == "application/json"
    assert event.attributes["dataschema"].endswith("returns-event.json")
    assert event.attributes["dataversion"] == "1.0"
    assert event.id == "8a65f0c1-00f4-4f9d-8b3d-3cfa628dc034"
    assert json.loads(event.data)["return_id"] == "ret_501"
    # errors name the attribute as the client spelled it
    assert event.field_name("dataversion") == "data_version"


@pytest.mark.parametrize("name", sorted(LEGACY_EXAMPLES))
def test_legacy_examples_become_cloudevents(name: str) -> None:
    event = parsed_ok(envelope.parse_json(LEGACY_EXAMPLES[name]))
    source = json.loads(LEGACY_EXAMPLES[name])
    assert event.envelope is Envelope.LEGACY_JSON
    assert event.type == source["event_type"]
    assert event.id == source["event_id"]
    assert event.attributes["time"] == source["occurred_at"]
    assert event.attributes["specversion"] == "1.0"
    assert json.loads(event.data) == source["payload"]
    assert event.field_name("data") == "payload"


def test_legacy_missing_fields_are_each_named() -> None:
    got = problems(
        envelope.parse_json('{"event_type": "user_registered", "extra": 1, "payload": []}')
    )
    assert set(got) == {"event_id", "source", "occurred_at", "extra", "payload"}
    assert got["payload"] == "must be a JSON object"
    assert got["extra"] == "unknown field of the legacy envelope"


def test_structured_json_rejects_bad_attribute_names_values_and_specversion() -> None:
    doc = {
        "specversion": "0.3",
        "id": "1",
        "source": "s",
        "type": "t",
        "Bad_Name": "x",
        "nested": {"a": 1},
        "ctl": "a\u0001b",
    }
    got = problems(envelope.parse_json(json.dumps(doc)))
    assert "unsupported specversion" in got["specversion"]
    assert "lowercase" in got["Bad_Name"]
    assert "strings, booleans or integers" in got["nested"]
    assert got["ctl"] == "contains control characters"


def test_not_json_and_not_an_object() -> None:
    with pytest.raises(InvalidArgument) as exc:
        envelope.parse_json("{nope")
    assert "not valid JSON" in fields(exc)["json"]
    with pytest.raises(InvalidArgument) as exc:
        envelope.parse_json('{"hello": 1}')
    assert "neither CloudEvents" in fields(exc)["json"]


@pytest.mark.parametrize(
    ("replace", "by", "field"),
    [
        ('"subject": "', '"subject": "\\ud800', "subject"),  # a lone high surrogate
        ('"return_id": "', '"return_id": "x\\udc00', "data.return_id"),  # a lone low one
        ('"data": {', '"data": {"\\udbff": 1, ', "data.\udbff"),  # in a key
    ],
)
def test_unpaired_surrogate_escapes_are_refused_where_they_are(
    replace: str, by: str, field: str
) -> None:
    text = RETURN_CREATED.replace(replace, by, 1)
    assert text != RETURN_CREATED
    with pytest.raises(InvalidArgument) as exc:
        envelope.parse_json(text)
    assert "surrogate" in fields(exc)[field]


def test_data_nested_too_deeply_to_write_is_refused() -> None:
    # orjson reads 1,000 levels; json cannot write them back (the interpreter's
    # recursion limit): that is the client's data, not a server error
    deep = "[" * 1000 + "]" * 1000
    text = RETURN_CREATED.replace('"data": {', '"data": {"deep": ' + deep + ", ", 1)
    with pytest.raises(InvalidArgument) as exc:
        envelope.parse_json(text)
    assert fields(exc) == {"data": "nested too deeply"}


def test_a_surrogate_pair_escape_is_text() -> None:
    text = RETURN_CREATED.replace('"subject": "', '"subject": "\\ud83d\\ude00 ', 1)
    event = parsed_ok(envelope.parse_json(text))
    assert event.attributes["subject"].startswith("\N{GRINNING FACE} ")


def test_proto_event_attributes_are_typed_to_strings() -> None:
    ce = cloudevents_pb2.CloudEvent(id="e1", source="urn:x", spec_version="1.0", type="t")
    ce.attributes["time"].ce_timestamp.FromJsonString("2024-02-01T10:15:30Z")
    ce.attributes["subject"].ce_string = "returns/1"
    ce.attributes["retries"].ce_integer = 3
    ce.attributes["flag"].ce_boolean = True
    ce.text_data = '{"a": 1}'
    event = parsed_ok(envelope.parse_proto(ce))
    assert event.attributes["time"] == "2024-02-01T10:15:30Z"
    assert event.attributes["retries"] == "3"
    assert event.attributes["flag"] == "true"
    assert event.data == b'{"a": 1}'
    assert event.field_name("time") == "event.attributes[time]"


def test_a_proto_timestamp_attribute_out_of_range_is_named() -> None:
    event = cloudevents_pb2.CloudEvent(id="1", source="/s", spec_version="1.0", type="t")
    event.attributes["time"].ce_timestamp.seconds = 2**62  # beyond year 9999
    _, found = envelope.parse_proto(event)
    assert any(v.field == "event.attributes[time]" for v in found)


def test_proto_missing_required_and_proto_data() -> None:
    ce = cloudevents_pb2.CloudEvent(spec_version="1.0")
    ce.proto_data.Pack(cloudevents_pb2.CloudEventBatch())
    got = problems(envelope.parse_proto(ce))
    assert {"event.id", "event.source", "event.type", "event.proto_data"} <= set(got)


@pytest.mark.parametrize(
    "name", ["Bad-Name", "UPPER", "", "a\x01b", "a_b", "x" * 21, "ok\n", "é", "١"]
)
def test_proto_attribute_names_are_lowercase_ascii_letters_and_digits(name: str) -> None:
    # the JSON form refused these; the Protobuf form put them on Kafka as ce_ headers
    ce = cloudevents_pb2.CloudEvent(id="1", source="/s", spec_version="1.0", type="t")
    ce.attributes[name].ce_string = "v"
    event, found = envelope.parse_proto(ce)
    assert {v.field: v.description for v in found} == {
        f"event.attributes[{name}]": "attribute names are 1-20 lowercase ASCII letters or digits"
    }
    assert name not in event.attributes


def test_proto_attribute_names_of_20_characters_and_the_seed_spellings_are_accepted() -> None:
    ce = cloudevents_pb2.CloudEvent(id="1", source="/s", spec_version="1.0", type="t")
    ce.attributes["x" * 20].ce_string = "v"
    ce.attributes["data_version"].ce_string = "1.0"
    event = parsed_ok(envelope.parse_proto(ce))
    assert event.attributes["x" * 20] == "v"
    assert event.attributes["dataversion"] == "1.0"


def test_a_structured_attribute_name_with_a_final_newline_is_refused() -> None:
    doc = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "subject\n": "x"}
    assert "lowercase" in problems(envelope.parse_json(json.dumps(doc)))["subject\n"]


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("specversion", 1.0, "must be a JSON string"),
        ("id", 42, "must be a JSON string"),
        ("time", True, "must be a JSON string"),
        ("data_schema", 7, "must be a JSON string"),
        ("xrate", 1.5, "integers within 32-bit signed range"),
        ("xbig", 10**29, "integers within 32-bit signed range"),
        ("xhuge", 1e300, "integers within 32-bit signed range"),
        ("xnext", 2**31, "integers within 32-bit signed range"),
        ("xlist", [1], "integers within 32-bit signed range"),
    ],
)
def test_structured_json_attribute_values_follow_the_cloudevents_types(
    key: str, value: object, problem: str
) -> None:
    # "specversion": 1.0 became "1.0", 1e300 "1e+300" and 30 digits a string of them
    doc = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", key: value}
    assert problem in problems(envelope.parse_json(json.dumps(doc)))[key]


def test_structured_json_extension_booleans_and_32_bit_integers_are_kept() -> None:
    doc = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
    extensions = {"xon": True, "xmin": -(2**31), "xmax": 2**31 - 1, "xs": "v"}
    event, problems = envelope.parse_json(json.dumps({**doc, **extensions}))
    assert problems == []
    assert [event.attributes[k] for k in extensions] == ["true", "-2147483648", "2147483647", "v"]


def test_a_dataschema_must_be_an_absolute_uri_and_a_source_holds_no_whitespace() -> None:
    # both were stored and sent as they came
    doc = {"specversion": "1.0", "id": "1", "type": "t", "source": "my source"}
    for bad in ("schemas/order.json", "https://x/a b", ""):
        got = problems(envelope.parse_json(json.dumps({**doc, "dataschema": bad})))
        assert "is not an absolute URI" in got["dataschema"]
        assert got["source"] == "a URI-reference holds no whitespace"
    good = {**doc, "source": "/orders", "dataschema": "urn:schema:order"}
    assert problems(envelope.parse_json(json.dumps(good))) == {}


def test_a_structured_attribute_given_as_null_is_unset() -> None:
    # The JSON format: a null value MUST be treated as unset; both were refused ("must be
    # a JSON string", "extension values are …")
    doc = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": {"a": 1}}
    event = parsed_ok(
        envelope.parse_json(
            json.dumps({**doc, "subject": None, "unsetextension": None, "data_base64": None})
        )
    )
    assert set(event.attributes) == {"specversion", "id", "source", "type"}
    assert json.loads(event.data) == {"a": 1}
    # a required attribute given as null is as missing
    got = problems(envelope.parse_json(json.dumps({**doc, "id": None})))
    assert got == {"id": "required"}


def test_an_empty_subject_or_content_type_is_refused() -> None:
    # They went out as an empty ce_subject or content-type header
    doc = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
    for key, name in (("subject", "subject"), ("datacontenttype", "datacontenttype")):
        got = problems(envelope.parse_json(json.dumps({**doc, key: ""})))
        assert got == {name: "empty: omit it instead"}
    ce = cloudevents_pb2.CloudEvent(id="1", source="/s", spec_version="1.0", type="t")
    ce.attributes["subject"].ce_string = ""
    _, found = envelope.parse_proto(ce)
    assert [(v.field, v.description) for v in found] == [
        ("event.attributes[subject]", "empty: omit it instead")
    ]


def test_a_protobuf_attribute_with_no_value_set_is_refused() -> None:
    # it travelled as an empty ce_ header
    ce = cloudevents_pb2.CloudEvent(id="1", source="/s", spec_version="1.0", type="t")
    ce.attributes["subject"].SetInParent()
    _, found = envelope.parse_proto(ce)
    assert [(v.field, v.description) for v in found] == [
        ("event.attributes[subject]", "no value is set (attr oneof)")
    ]
