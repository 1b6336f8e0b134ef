"""Ingest's input rules through the real service: names, versions, schemas, attribute
names and ids it must refuse as INVALID_ARGUMENT naming the field, and text it must
carry through untouched."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable

import asyncpg
import grpc
import pytest
from grpc_status import rpc_status
from herald.cloudevents.v1 import cloudevents_pb2
from herald.ingest.v1 import ingest_pb2

from herald.runtime.errors import bad_request_of
from herald.services.ingest.catalog import MAX_SCHEMA_BYTES
from herald.services.webhooks.event_types import EventTypeNames
from tests.conftest import Infra
from tests.fixtures.seeds import RETURN_CREATED
from tests.integration.conftest import IngestUnderTest, start_ingest
from tests.integration.test_ingest_publish_rules import structured
from tests.kafka_helpers import headers, read_topic

pytestmark = pytest.mark.integration


async def refused(call: Awaitable[object]) -> dict[str, str]:
    """The field violations of a call that must answer INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    status = rpc_status.from_call(exc.value)
    assert status is not None
    return {v.field: v.description for v in bad_request_of(status)}


def create(name: str, version: str, schema: str) -> ingest_pb2.CreateEventTypeRequest:
    return ingest_pb2.CreateEventTypeRequest(
        event_type=ingest_pb2.EventType(name=name, data_version=version, json_schema=schema)
    )


async def test_event_type_names_and_versions_are_whole_ascii_strings(
    ingest: IngestUnderTest,
) -> None:
    # `$` and `\d`: both were registered
    stub = ingest.stub
    got = await refused(stub.CreateEventType(create("order.created\n", "1.0", "{}")))
    assert set(got) == {"event_type.name"}
    for version in ("١.٠", "1.0\n"):
        got = await refused(stub.CreateEventType(create("order.created", version, "{}")))
        assert set(got) == {"event_type.data_version"}
    created = await stub.CreateEventType(create("order.created", "1.0", "{}"))
    assert created.event_type.name == "order.created"


async def test_a_json_schema_holding_a_nul_character_is_invalid_argument(
    ingest: IngestUnderTest,
) -> None:
    # PostgreSQL's jsonb refuses \u0000: the call answered INTERNAL
    schema = '{"type": "object", "description": "a\\u0000b"}'
    got = await refused(ingest.stub.CreateEventType(create("order.created", "1.0", schema)))
    assert "NUL character" in got["event_type.json_schema"]
    # the same text with the backslash escaped is no NUL
    schema = '{"type": "object", "description": "a\\\\u0000b"}'
    created = await ingest.stub.CreateEventType(create("order.created", "1.0", schema))
    assert json.loads(created.event_type.json_schema)["description"] == "a\\u0000b"


async def test_a_json_schema_holding_a_number_jsonb_cannot_is_invalid_argument(
    ingest: IngestUnderTest,
) -> None:
    # Parsed as 0.0 and accepted, then refused by PostgreSQL: the call answered INTERNAL
    schema = '{"type": "object", "default": 1e-20000}'
    got = await refused(ingest.stub.CreateEventType(create("order.created", "1.0", schema)))
    assert got["event_type.json_schema"].startswith("cannot be stored: ")
    assert "numeric" in got["event_type.json_schema"]
    created = await ingest.stub.CreateEventType(create("order.created", "1.0", "{}"))
    assert created.event_type.data_version == "1.0"  # nothing of the refused one was kept


async def test_protobuf_attribute_names_follow_the_cloudevents_rule(
    ingest: IngestUnderTest,
) -> None:
    # the JSON form refused them; the Protobuf form accepted them
    def event(*names: str) -> ingest_pb2.PublishRequest:
        ce = cloudevents_pb2.CloudEvent(
            id=str(uuid.uuid4()), source="urn:t", spec_version="1.0", type="message.created"
        )
        ce.attributes["time"].ce_timestamp.FromJsonString("2025-01-02T03:04:05Z")
        for name in names:
            ce.attributes[name].ce_string = "v"
        ce.text_data = json.dumps({"message": {"id": "m1", "text": "hi"}})
        return ingest_pb2.PublishRequest(event=ce)

    got = await refused(ingest.stub.Publish(event("Bad-Name", "", "a\x01b", "x" * 21, "ok")))
    rule = "attribute names are 1-20 lowercase ASCII letters or digits"
    assert got == {
        "event.attributes[Bad-Name]": rule,
        "event.attributes[]": rule,
        "event.attributes[a\x01b]": rule,
        f"event.attributes[{'x' * 21}]": rule,
    }
    assert (await ingest.stub.Publish(event("ok", "x" * 20))).event_id


@pytest.mark.parametrize(
    "ident",
    [
        "8a65f0c100f44f9d8b3d3cfa628dc034----",
        "urn:8a65f0c100f44f9d8b3d3cfa628dc034",
        "８a65f0c1-00f4-4f9d-8b3d-3cfa628dc034",
    ],
)
async def test_an_id_that_must_be_a_uuid_is_the_8_4_4_4_12_form(
    ingest: IngestUnderTest, ident: str
) -> None:
    doc = {**json.loads(RETURN_CREATED), "id": ident}
    got = await refused(ingest.stub.Publish(ingest_pb2.PublishRequest(json=json.dumps(doc))))
    assert got == {"id": f"{ident!r} is not a UUID"}


async def test_event_data_holding_a_nul_character_reaches_kafka_intact(
    ingest: IngestUnderTest, infra: Infra, topic: str
) -> None:
    """Data is stored as bytes, not jsonb: \\u0000 in a JSON string is valid data."""
    doc = structured(data={"message": {"id": "m1", "text": "a\u0000b"}})
    response = await ingest.stub.Publish(ingest_pb2.PublishRequest(json=json.dumps(doc)))
    [record] = await read_topic(infra.kafka_settings(), topic, 1)
    assert headers(record)["ce_id"] == response.event_id
    assert json.loads(record.value) == doc["data"]


def event_of(name: str) -> ingest_pb2.PublishRequest:
    doc = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "urn:t",
        "type": name,
        "time": "2025-01-02T03:04:05Z",
        "data": {"x": 1},
    }
    return ingest_pb2.PublishRequest(json=json.dumps(doc))


async def test_a_schema_may_not_reference_files_urls_or_unknown_meta_schemas(
    ingest: IngestUnderTest,
) -> None:
    # a file $ref was read, a URL fetched; an unknown $schema was fetched, then INTERNAL
    stub = ingest.stub
    for ref in ("file:///etc/passwd", "http://127.0.0.1:9/s.json"):
        schema = json.dumps({"properties": {"x": {"$ref": ref}}})
        got = await refused(stub.CreateEventType(create("order.created", "1.0", schema)))
        assert "$ref may only point inside the schema" in got["event_type.json_schema"]
    schema = json.dumps({"$schema": "https://example.com/custom", "type": "object"})
    got = await refused(stub.CreateEventType(create("order.created", "1.0", schema)))
    assert "is not a draft this service knows" in got["event_type.json_schema"]


async def test_a_stored_schema_that_no_longer_compiles_leaves_the_rest_usable(
    infra: Infra, database_url: str, topic: str, ingest: IngestUnderTest
) -> None:
    # stored before refs were refused: ingest could not start at all
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO ingest.event_types (name, data_version, description, json_schema, "
            "id_must_be_uuid, source_pattern, required_attributes) "
            "VALUES ('old.remote', '1.0', '', $1::jsonb, false, '', '{}')",
            json.dumps({"properties": {"x": {"$ref": "http://127.0.0.1:9/s.json"}}}),
        )
    finally:
        await conn.close()
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await ingest.stub.Publish(event_of("old.remote"))  # read on a cache miss
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    restarted = await start_ingest(infra, database_url, topic)
    try:
        stub = restarted.stub
        listed = await stub.ListEventTypes(ingest_pb2.ListEventTypesRequest(name_prefix="old."))
        assert [t.name for t in listed.event_types] == ["old.remote"]
        got = await stub.GetEventType(ingest_pb2.GetEventTypeRequest(name="old.remote"))
        assert "127.0.0.1:9" in got.event_type.json_schema
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.Publish(event_of("old.remote"))
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'old.remote' version '1.0' cannot be used" in (exc.value.details() or "")
        batch = await stub.PublishBatch(
            ingest_pb2.PublishBatchRequest(
                requests=[event_of("old.remote"), event_of("room.created")]
            )
        )
        codes = [r.status.code for r in batch.results]
        assert codes == [grpc.StatusCode.FAILED_PRECONDITION.value[0], 0]
    finally:
        await restarted.stop()


async def test_listing_large_schemas_fits_a_default_client_page_by_page(
    infra: Infra, database_url: str, topic: str
) -> None:
    # 4 MiB of schemas in one page: RESOURCE_EXHAUSTED for a default client (4 MiB), and
    # so for webhooks' CreateWebhook, which lists the catalog 1,000 types a page
    ingest = await start_ingest(infra, database_url, topic, max_schema_bytes=MAX_SCHEMA_BYTES)
    try:
        await _list_large_schemas(ingest)
    finally:
        await ingest.stop()


async def _list_large_schemas(ingest: IngestUnderTest) -> None:
    big = json.dumps({"type": "object", "description": "d" * 250_000})
    names = {f"big.t{i:02}" for i in range(20)}
    for name in names:
        await ingest.stub.CreateEventType(create(name, "1.0", big))
    seen: list[str] = []
    token = ""
    while True:
        page = await ingest.stub.ListEventTypes(
            ingest_pb2.ListEventTypesRequest(name_prefix="big.", page_size=1000, page_token=token)
        )
        assert page.total_size == 20
        assert page.event_types, "a page is never empty"
        seen += [t.name for t in page.event_types]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(names)
    assert names <= await EventTypeNames(ingest.channel, ttl=0).names()


async def test_a_schema_over_max_schema_bytes_is_invalid_argument(
    infra: Infra, database_url: str, topic: str, ingest: IngestUnderTest
) -> None:
    # any size up to 256 KiB was taken: every version's schema is parsed and compiled by
    # every ingest process at start, about 20 times its size in memory
    schema = json.dumps({"type": "object", "description": "d" * 70_000})
    got = await refused(ingest.stub.CreateEventType(create("big.default", "1.0", schema)))
    too_big = f"{len(schema)} bytes of JSON; at most 65536 (MAX_SCHEMA_BYTES)"
    assert got == {"event_type.json_schema": too_big}
    small = await start_ingest(infra, database_url, topic, max_schema_bytes=2048)
    try:
        schema = json.dumps({"type": "object", "description": "d" * 2048})
        got = await refused(small.stub.CreateEventType(create("big.small", "1.0", schema)))
        assert "at most 2048 (MAX_SCHEMA_BYTES)" in got["event_type.json_schema"]
        created = await small.stub.CreateEventType(create("big.small", "1.0", schema[:2000] + '"}'))
        assert created.event_type.name == "big.small"
    finally:
        await small.stop()


async def test_a_full_catalog_answers_resource_exhausted(
    infra: Infra, database_url: str, topic: str
) -> None:
    # CreateEventType had no limit: thousands of large schemas cost every ingest process
    # hundreds of MB at start
    ingest = await start_ingest(infra, database_url, topic, max_event_types=3)
    try:
        stub = ingest.stub
        for n in range(3):  # the built-in types (39) do not count
            await stub.CreateEventType(create("lab.booked", f"{n + 1}.0", "{}"))
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.CreateEventType(create("lab.cancelled", "1.0", "{}"))
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "3 event type versions" in (exc.value.details() or "")
        assert "MAX_EVENT_TYPES" in (exc.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as exc:  # a repeat: still the truth
            await stub.CreateEventType(create("lab.booked", "1.0", "{}"))
        assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
        listed = await stub.ListEventTypes(ingest_pb2.ListEventTypesRequest(name_prefix="lab."))
        assert [t.data_version for t in listed.event_types] == ["1.0", "2.0", "3.0"]
    finally:
        await ingest.stop()


async def test_a_catalog_over_a_lowered_limit_serves_and_says_how_full_it_is(
    infra: Infra, database_url: str, topic: str
) -> None:
    # MAX_EVENT_TYPES lowered below what is stored: the refusal said the catalog held the
    # new limit ("holds 1") while it held 3
    ingest = await start_ingest(infra, database_url, topic, max_event_types=3)
    try:
        for n in range(3):
            await ingest.stub.CreateEventType(create("lab.lowered", f"{n + 1}.0", "{}"))
    finally:
        await ingest.stop()
    ingest = await start_ingest(infra, database_url, topic, max_event_types=1)
    try:
        listed = await ingest.stub.ListEventTypes(
            ingest_pb2.ListEventTypesRequest(name_prefix="lab.lowered")
        )
        assert [t.data_version for t in listed.event_types] == ["1.0", "2.0", "3.0"]
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await ingest.stub.CreateEventType(create("lab.lowered", "4.0", "{}"))
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = exc.value.details() or ""
        assert "holds 3 event type versions" in details, details
        assert "its limit is 1 (MAX_EVENT_TYPES" in details, details
    finally:
        await ingest.stop()
