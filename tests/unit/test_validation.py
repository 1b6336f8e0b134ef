"""Validation against the built-in catalog: every class of error names its field."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from herald.cloudevents.v1 import cloudevents_pb2

from herald.runtime.errors import InvalidArgument
from herald.services.ingest import envelope, validation
from herald.services.ingest.builtin import builtin_types
from herald.services.ingest.catalog import Catalog, EventTypeDef, check_definition
from tests.fixtures.seeds import LEGACY_EXAMPLES, RETURN_CREATED

CATALOG = Catalog(builtin_types())


def check(text: str) -> None:
    event, found = envelope.parse_json(text)
    definition = CATALOG.get(event.type, event.data_version)
    versions = CATALOG.versions(event.type) if definition is None else []
    validation.validate(event, definition, versions, found)


def violations(text: str) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as exc:
        check(text)
    return {v.field: v.description for v in exc.value.violations}


def edited(text: str, **changes: Any) -> str:
    doc = json.loads(text)
    for path, value in changes.items():
        target = doc
        *parents, last = path.split("__")
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return json.dumps(doc)


@pytest.mark.parametrize("text", [RETURN_CREATED, *LEGACY_EXAMPLES.values()])
def test_seed_examples_are_valid(text: str) -> None:
    check(text)


def test_every_type_named_in_the_seeds_is_registered() -> None:
    names = {d.name for d in builtin_types()}
    assert {
        "integration.return.created",
        "integration.conflict.detected",
        "integration.cash.reconciled",
        "user_registered",
        "new_film_released",
        "campaign_triggered",
        "message.created",
        "security.scan.completed",
        "system.status.changed",
        "room.member.joined",
    } <= names


def test_unknown_type_and_unknown_version() -> None:
    assert violations(edited(RETURN_CREATED, type="integration.nope"))["type"] == (
        "unknown event type 'integration.nope'"
    )
    got = violations(edited(RETURN_CREATED, data_version="9.9"))
    assert got["data_version"].startswith("unknown data version '9.9'")
    assert "known: 1.0" in got["data_version"]


def test_time_must_be_rfc3339_utc() -> None:
    for bad in ("2024-02-01 10:15:30", "2024-02-01T10:15:30+03:00", "2024-13-01T10:15:30Z"):
        assert "RFC 3339 UTC" in violations(edited(RETURN_CREATED, time=bad))["time"]
    assert "required" in violations(edited(RETURN_CREATED, time=None))["time"]
    check(edited(RETURN_CREATED, time="2024-02-01T10:15:30.123456789+00:00"))


def test_integration_rules_uuid_source_and_required_attributes() -> None:
    got = violations(
        edited(RETURN_CREATED, id="ret-501", source="bitrix", subject=None, data_schema=None)
    )
    assert got["id"] == "'ret-501' is not a UUID"
    assert "does not match" in got["source"]
    assert got["subject"] == "required for integration.return.created"
    # absent: named by its CloudEvents name
    assert got["dataschema"] == "required for integration.return.created"


def test_data_errors_carry_json_paths() -> None:
    text = edited(RETURN_CREATED, data__items__0__qty=0, data__courier_id=None, data__extra=True)
    got = violations(text)
    assert "0 is less than the minimum of 1" in got["data.items[0].qty"]
    assert '"courier_id" is a required property' in got["data.courier_id"]
    assert "Additional properties" in got["data"]


def test_legacy_payload_errors_use_payload_prefix() -> None:
    text = edited(
        LEGACY_EXAMPLES["campaign_triggered"],
        payload__channels=["email", "Push!"],
        payload__campaign_id="not-a-uuid",
        event_id="x",
    )
    got = violations(text)
    assert "does not match" in got["payload.channels[1]"]
    assert 'is not a "uuid"' in got["payload.campaign_id"]
    assert got["event_id"] == "'x' is not a UUID"


def test_non_json_content_type_is_refused() -> None:
    got = violations(edited(RETURN_CREATED, data_content_type="application/xml"))
    assert "must be JSON" in got["data_content_type"]


def test_size_limit_names_the_data_field() -> None:
    event, _ = envelope.parse_json(LEGACY_EXAMPLES["user_registered"])
    with pytest.raises(InvalidArgument) as exc:
        validation.check_size(event, 100)
    assert exc.value.violations[0].field == "payload"
    assert "the limit is 100 bytes" in exc.value.violations[0].description


def test_size_limit_counts_bytes_not_characters() -> None:
    # 300,000 emoji in an attribute (1.2 MB in UTF-8) passed a 1 MB limit, then Kafka
    # refused the record: answered OK, never on herald.events
    event, _ = envelope.parse_json(LEGACY_EXAMPLES["user_registered"])
    plain = event.size()
    emoji = dataclasses.replace(event, attributes={**event.attributes, "xemoji": "😀" * 1000})
    assert emoji.size() == plain + len("xemoji") + 4000, "4 bytes an emoji"
    with pytest.raises(InvalidArgument):
        validation.check_size(emoji, plain + 3000)


def test_latest_version_is_the_default() -> None:
    catalog = Catalog(builtin_types())
    catalog.add(EventTypeDef("user_registered", "1.10", '{"type": "object"}'))
    catalog.add(EventTypeDef("user_registered", "1.9", '{"type": "object"}'))
    latest = catalog.get("user_registered")
    assert latest is not None
    assert latest.data_version == "1.10"
    assert catalog.versions("user_registered") == ["1.0", "1.9", "1.10"]


def test_check_definition_reports_each_field() -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_definition("Bad Name", "v1", '{"type": 12}', "([", ["nope"])
    got = {v.field for v in exc.value.violations}
    assert got == {
        "event_type.name",
        "event_type.data_version",
        "event_type.json_schema",
        "event_type.source_pattern",
        "event_type.required_attributes[0]",
    }


@pytest.mark.parametrize(
    "payload", ['{"amount": NaN}', '{"amount": 1e400}', '{"amount": 1' + "0" * 5000 + "}"]
)
def test_data_that_is_not_json_or_too_long_a_number_is_invalid_argument(payload: str) -> None:
    # NaN and 1e400 were accepted and published as invalid JSON ({"amount":Infinity});
    # 5,000 digits answered INTERNAL, and failed every other event of its batch
    text = LEGACY_EXAMPLES["user_registered"]
    start = text.index('"payload"')
    got = violations(text[:start] + f'"payload": {payload}}}')
    assert "not valid JSON" in got["json"]


@pytest.mark.parametrize(
    ("name", "version", "field"),
    [
        ("order.created\n", "1.0", "event_type.name"),  # `$` let a final newline through
        ("order.created", "1.0\n", "event_type.data_version"),
        ("order.created", "١.٠", "event_type.data_version"),  # `\d`: Arabic-Indic digits
        ("order.created", "１.０", "event_type.data_version"),  # fullwidth digits
        ("order.created", "1.٣", "event_type.data_version"),
    ],
)
def test_event_type_names_and_versions_are_whole_and_ascii(
    name: str, version: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_definition(name, version, '{"type": "object"}', "", [])
    assert [v.field for v in exc.value.violations] == [field]


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ('{"type": "object", "description": "a\\u0000b"}', "'description'"),
        ('{"type": "object", "properties": {"a\\u0000": {}}}', "'properties.a\\x00'"),
        ('{"type": "object", "enum": [{"x": ["ok", "\\u0000"]}]}', "'enum[0].x[1]'"),
    ],
)
def test_a_json_schema_holding_a_nul_character_is_invalid_argument(schema: str, where: str) -> None:
    # PostgreSQL's jsonb refuses \u0000: CreateEventType answered INTERNAL
    with pytest.raises(InvalidArgument) as exc:
        check_definition("order.created", "1.0", schema, "", [])
    [violation] = exc.value.violations
    assert violation.field == "event_type.json_schema"
    assert f"NUL character (\\u0000) at {where}" in violation.description


def test_a_json_schema_with_an_escaped_backslash_before_u0000_is_valid() -> None:
    schema = check_definition(
        "order.created", "1.0", '{"type": "object", "description": "a\\\\u0000b"}', "", []
    )
    assert schema["description"] == "a\\u0000b"


UUID = "8a65f0c1-00f4-4f9d-8b3d-3cfa628dc034"


@pytest.mark.parametrize(
    "ident",
    [
        UUID.replace("-", "") + "----",  # hyphens in the wrong places
        "8a65-f0c100f4-4f9d-8b3d-3cfa628dc034",
        "urn:" + UUID.replace("-", ""),
        "+" + UUID[1:],
        " " + UUID[1:],
        "0x" + UUID[2:],
        "8a65_0c1-00f4-4f9d-8b3d-3cfa628dc034",
        UUID[:-1] + "\n",
        "８a65f0c1-00f4-4f9d-8b3d-3cfa628dc034",  # a fullwidth digit
        "٨a65f0c1-00f4-4f9d-8b3d-3cfa628dc034",  # an Arabic-Indic digit
        UUID + "0",
        UUID[:-1],
    ],
)
def test_an_id_that_must_be_a_uuid_is_the_8_4_4_4_12_hex_form(ident: str) -> None:
    assert violations(edited(RETURN_CREATED, id=ident))["id"] == f"{ident!r} is not a UUID"


@pytest.mark.parametrize("ident", [UUID, UUID.upper(), "00000000-0000-0000-0000-000000000000"])
def test_a_uuid_is_accepted_in_either_case(ident: str) -> None:
    check(edited(RETURN_CREATED, id=ident))


def test_a_field_refused_while_parsing_is_not_refused_again() -> None:
    # a Timestamp out of range was also "required"; bad base64 also `null is not an object`
    ce = cloudevents_pb2.CloudEvent(
        id="1", source="urn:t", spec_version="1.0", type="message.created", text_data="{}"
    )
    ce.attributes["time"].ce_timestamp.seconds = 2**62
    event, found = envelope.parse_proto(ce)
    with pytest.raises(InvalidArgument) as exc:
        validation.validate(event, CATALOG.get("message.created"), [], found)
    assert [v.field for v in exc.value.violations] == ["event.attributes[time]"]

    doc = {
        "specversion": "1.0",
        "id": "1",
        "source": "urn:t",
        "type": "message.created",
        "time": "2025-01-01T00:00:00Z",
        "data_base64": "not base64!",
    }
    event, found = envelope.parse_json(json.dumps(doc))
    with pytest.raises(InvalidArgument) as exc:
        validation.validate(event, CATALOG.get("message.created"), [], found)
    assert [v.field for v in exc.value.violations] == ["data_base64"]


def _proto_data(data: bytes) -> dict[str, str]:
    ce = cloudevents_pb2.CloudEvent(
        id="1", source="urn:t", spec_version="1.0", type="message.created", binary_data=data
    )
    ce.attributes["time"].ce_string = "2025-01-01T00:00:00Z"
    event, found = envelope.parse_proto(ce)
    with pytest.raises(InvalidArgument) as exc:
        validation.validate(event, CATALOG.get("message.created"), [], found)
    return {v.field: v.description for v in exc.value.violations}


def test_protobuf_data_is_utf8_json_of_unicode_text() -> None:
    # Each was accepted and sent on as it came, under content-type application/json:
    # json reads UTF-16 and a byte order mark; a lone surrogate escape is no text
    text = '{"id": "m", "content": "hi"}'
    for data in (text.encode("utf-16"), text.encode("utf-8-sig")):
        got = _proto_data(data)
        assert got == {"event.data": "not valid JSON: not UTF-8 (or a byte order mark)"}
    got = _proto_data(text.encode("utf-16-le"))  # ASCII with NULs between: not JSON
    assert list(got) == ["event.data"]
    assert got["event.data"].startswith("not valid JSON: ")
    got = _proto_data(b'{"id": "m", "content": "a\\ud800b"}')
    assert list(got) == ["event.data.content"]
    assert "unpaired UTF-16 surrogate" in got["event.data.content"]
