"""Publishing through ingest lands events on real Kafka, exactly as specified."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Awaitable

import asyncpg
import grpc
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from herald.cloudevents.v1 import cloudevents_pb2
from herald.ingest.v1 import ingest_pb2
from prometheus_client import REGISTRY

from herald.runtime.errors import InvalidArgument, bad_request_of
from herald.services.ingest import envelope
from herald.services.ingest.dedup import Accepted
from herald.services.ingest.outbox import make_pending
from herald.services.ingest.writer import EventWriter
from tests.conftest import Infra
from tests.fixtures.seeds import LEGACY_EXAMPLES, RETURN_CREATED
from tests.integration.conftest import IngestUnderTest
from tests.integration.test_ingest_durability import big_event
from tests.integration.test_ingest_publish_rules import structured
from tests.kafka_helpers import headers, read_topic

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_seed_return_example_lands_with_binding_headers(
    ingest: IngestUnderTest, infra: Infra, topic: str
) -> None:
    before = (
        REGISTRY.get_sample_value(
            "events_published_total", {"event_type": "integration.return.created"}
        )
        or 0
    )
    metadata = [
        ("idempotency-key", "ret-501-create"),
        ("x-request-id", "req-42"),
        ("x-correlation-id", "corr-7"),
        ("application-id", "bitrix24"),
        ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),
    ]
    response = await ingest.stub.Publish(
        ingest_pb2.PublishRequest(json=RETURN_CREATED), metadata=metadata
    )
    assert response.event_id == "8a65f0c1-00f4-4f9d-8b3d-3cfa628dc034"
    assert not response.duplicate

    [record] = await read_topic(infra.kafka_settings(), topic, 1)
    h = headers(record)
    assert h["ce_specversion"] == "1.0"
    assert h["ce_id"] == "8a65f0c1-00f4-4f9d-8b3d-3cfa628dc034"
    assert h["ce_source"] == "urn:mastermobile:integration:bitrix24"
    assert h["ce_type"] == "integration.return.created"
    assert h["ce_time"] == "2024-02-01T10:15:30Z"
    assert h["ce_subject"] == "returns/ret_501"
    assert h["ce_dataschema"] == "https://api.mastermobile.app/schemas/returns-event.json"
    assert h["ce_dataversion"] == "1.0"
    assert h["content-type"] == "application/json"
    assert h["schema-version"] == "1.0"
    assert h["application-id"] == "bitrix24"
    assert h["x-request-id"] == "req-42"
    assert h["x-correlation-id"] == "corr-7"
    assert h["idempotency-key"] == "ret-501-create"
    # the trace of Publish continues into the record: same trace id, a new span
    version, trace_id, span_id, _ = h["traceparent"].split("-")
    assert (version, trace_id) == ("00", TRACE_ID)
    assert span_id != "00f067aa0ba902b7"
    assert record.key == b"returns/ret_501"
    assert json.loads(record.value) == json.loads(RETURN_CREATED)["data"]

    # the official CloudEvents SDK's Kafka binding reads the record
    event = from_binary_event(
        KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
    )
    assert event.get_id() == response.event_id
    assert event.get_type() == "integration.return.created"
    assert event.get_subject() == "returns/ret_501"
    assert event.get_time() is not None
    assert event.get_extension("dataversion") == "1.0"
    data = event.get_data()
    assert isinstance(data, dict)
    assert data["items"][0]["sku"] == "SKU-1001"

    after = REGISTRY.get_sample_value(
        "events_published_total", {"event_type": "integration.return.created"}
    )
    assert after == before + 1


async def test_legacy_examples_are_accepted_verbatim(
    ingest: IngestUnderTest, infra: Infra, topic: str
) -> None:
    for text in LEGACY_EXAMPLES.values():
        await ingest.stub.Publish(ingest_pb2.PublishRequest(json=text))
    records = await read_topic(infra.kafka_settings(), topic, 3)
    by_type = {headers(r)["ce_type"]: r for r in records}
    assert set(by_type) == set(LEGACY_EXAMPLES)
    for name, text in LEGACY_EXAMPLES.items():
        source = json.loads(text)
        record = by_type[name]
        h = headers(record)
        assert h["ce_id"] == source["event_id"]
        assert h["ce_source"] == source["source"]
        assert h["ce_time"] == source["occurred_at"]
        assert h["schema-version"] == "1.0"  # no version given: the latest registered
        assert record.key == source["event_id"].encode()
        assert json.loads(record.value) == source["payload"]


async def test_cloudevents_protobuf_envelope(
    ingest: IngestUnderTest, infra: Infra, topic: str
) -> None:
    ce = cloudevents_pb2.CloudEvent(
        id=str(uuid.uuid4()), source="urn:katya:api", spec_version="1.0", type="message.created"
    )
    ce.attributes["time"].ce_timestamp.FromJsonString("2025-01-02T03:04:05Z")
    ce.attributes["partitionkey"].ce_string = "room-9"
    ce.text_data = json.dumps({"message": {"id": "m1", "text": "hi"}})
    response = await ingest.stub.Publish(ingest_pb2.PublishRequest(event=ce))
    [record] = await read_topic(infra.kafka_settings(), topic, 1)
    assert headers(record)["ce_id"] == response.event_id == ce.id
    assert headers(record)["ce_partitionkey"] == "room-9"
    assert record.key == b"room-9"


async def test_an_event_near_the_size_limit_reaches_kafka_whole(
    ingest: IngestUnderTest, infra: Infra, topic: str
) -> None:
    # MAX_EVENT_BYTES (1,000,000 by default) must fit Kafka's own limits on the way out:
    # the producer's max request, a batch of its own, the broker's message size
    ce = big_event("room-1", "x" * 990_000)
    response = await ingest.stub.Publish(ingest_pb2.PublishRequest(event=ce))
    [record] = await read_topic(infra.kafka_settings(), topic, 1)
    assert headers(record)["ce_id"] == response.event_id == ce.id
    assert record.value == ce.text_data.encode()


async def test_values_too_long_to_store_are_invalid_argument_not_a_failed_commit(
    ingest: IngestUnderTest,
) -> None:
    # A 9,000-character random id or source exceeded what PostgreSQL indexes: INTERNAL,
    # and every other call in the same group commit failed with it
    async def publish(field: str, value: str, key: str = "") -> grpc.aio.AioRpcError:
        doc = structured(
            time="2026-11-22T10:00:00Z",
            data={"message": {"id": "m", "text": "t"}},
            **{field: value},
        )
        metadata = [("idempotency-key", key)] if key else []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ingest.stub.Publish(
                ingest_pb2.PublishRequest(json=json.dumps(doc)), metadata=metadata
            )
        return caught.value

    long = os.urandom(4500).hex()
    for field, value, key, named in (
        ("id", long, "", "id"),
        ("source", "urn:" + long, "", "source"),
        # (1,000 bytes: gRPC itself may refuse metadata over 8 KiB)
        ("id", str(uuid.uuid4()), os.urandom(500).hex(), "idempotency-key"),
    ):
        error = await publish(field, value, key)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(error)
        assert status is not None
        assert named in [v.field for v in bad_request_of(status)]

    # an unknown type of 5,000 characters is echoed clipped: the error fits the trailers
    # a client takes (8 KiB), where it had become the client's RESOURCE_EXHAUSTED
    error = await publish("type", "message." + "c" * 5000)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown event type" in (error.details() or "")
    assert len(error.details() or "") <= 1000

    # and a good call goes through
    good = ingest_pb2.PublishRequest(json=LEGACY_EXAMPLES["user_registered"])
    assert (await ingest.stub.Publish(good)).event_id


async def test_an_event_type_too_long_to_store_is_invalid_argument(
    ingest: IngestUnderTest,
) -> None:
    letters = "".join(chr(ord("a") + b % 26) for b in os.urandom(9000))
    for name, version in ((letters, "1.0"), ("warehouse.moved", "1." + "7" * 9000)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ingest.stub.CreateEventType(
                ingest_pb2.CreateEventTypeRequest(
                    event_type=ingest_pb2.EventType(
                        name=name, data_version=version, json_schema='{"type": "object"}'
                    )
                )
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_one_event_the_database_refuses_fails_only_itself(
    ingest: IngestUnderTest, database_url: str
) -> None:
    """The safety net behind validation: a group commit PostgreSQL refuses for one
    event's data stores the others and refuses that one alone."""
    good, _ = envelope.parse_json(LEGACY_EXAMPLES["user_registered"])
    bad = good.with_attribute("id", os.urandom(4500).hex())  # past validation's limit
    items = [
        make_pending(e.with_attribute("dataversion", "1.0"), "t", {}, None, "app")
        for e in (good, bad)
    ]
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        stored, refused = await EventWriter(pool).write(items)
    finally:
        await pool.close()
    assert stored == Accepted(good.id, False)
    assert isinstance(refused, InvalidArgument)
    assert "the database refused it" in refused.violations[0].description


async def rejected(
    ingest: IngestUnderTest,
    request: ingest_pb2.PublishRequest,
    metadata: tuple[tuple[str, str], ...] = (),
) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await ingest.stub.Publish(request, metadata=metadata)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    status = rpc_status.from_call(exc.value)
    assert status is not None
    return {v.field: v.description for v in bad_request_of(status)}


async def test_each_class_of_bad_input_is_invalid_argument_with_fields(
    ingest: IngestUnderTest,
) -> None:
    doc = json.loads(RETURN_CREATED)
    # attributes
    bad = {**doc, "time": "yesterday", "id": "nope", "specversion": "0.3"}
    got = await rejected(ingest, ingest_pb2.PublishRequest(json=json.dumps(bad)))
    assert {"time", "specversion"} <= set(got)
    # unknown type / version
    got = await rejected(
        ingest, ingest_pb2.PublishRequest(json=json.dumps({**doc, "type": "integration.unknown"}))
    )
    assert got == {"type": "unknown event type 'integration.unknown'"}
    got = await rejected(
        ingest, ingest_pb2.PublishRequest(json=json.dumps({**doc, "data_version": "7.0"}))
    )
    assert "unknown data version" in got["data_version"]
    # data against the schema, several at once
    data = {**doc["data"], "items": [{"sku": "", "qty": "one"}]}
    got = await rejected(ingest, ingest_pb2.PublishRequest(json=json.dumps({**doc, "data": data})))
    assert set(got) == {"data.items[0].sku", "data.items[0].qty"}
    # not JSON, empty request, oversized
    assert "json" in await rejected(ingest, ingest_pb2.PublishRequest(json="{oops"))
    assert "envelope" in await rejected(ingest, ingest_pb2.PublishRequest())
    huge = {**doc, "data": {**doc["data"], "status": "x" * 1_100_000}}
    got = await rejected(ingest, ingest_pb2.PublishRequest(json=json.dumps(huge)))
    assert "the limit is 1000000 bytes" in got["data"]
    # data nested deeper than the JSON Schema validator reads (was INTERNAL)
    deep = RETURN_CREATED.replace(
        '"data": {', '"data": {"deep": ' + "[" * 600 + "]" * 600 + ", ", 1
    )
    got = await rejected(ingest, ingest_pb2.PublishRequest(json=deep))
    assert "data" in got
    # an unpaired surrogate escape: valid JSON, not Unicode text (was INTERNAL)
    lone = RETURN_CREATED.replace('"return_id": "', '"return_id": "\\udc00', 1)
    got = await rejected(ingest, ingest_pb2.PublishRequest(json=lone))
    assert "surrogate" in got["data.return_id"]


async def test_a_nul_character_is_invalid_argument_naming_the_field(
    ingest: IngestUnderTest,
) -> None:
    # PostgreSQL cannot store U+0000 in text; the request is refused, not INTERNAL
    async def refused_fields(call: Awaitable[object]) -> list[str]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
        status = rpc_status.from_call(exc.value)
        assert status is not None
        return [v.field for v in bad_request_of(status)]

    stub = ingest.stub
    got = await refused_fields(stub.GetEventType(ingest_pb2.GetEventTypeRequest(name="a\x00b")))
    assert got == ["name"]
    got = await refused_fields(
        stub.ListEventTypes(ingest_pb2.ListEventTypesRequest(name_prefix="\x00"))
    )
    assert got == ["name_prefix"]


async def test_a_type_registered_while_paging_repeats_nothing(ingest: IngestUnderTest) -> None:
    """Types registered meanwhile that sort before the page just read neither repeat
    the last item nor shift the next page (by offset, they did)."""

    async def register(name: str, version: str = "1.0") -> None:
        await ingest.stub.CreateEventType(
            ingest_pb2.CreateEventTypeRequest(
                event_type=ingest_pb2.EventType(
                    name=name, data_version=version, json_schema='{"type": "object"}'
                )
            )
        )

    for name in ("paged.b", "paged.d", "paged.f"):
        await register(name)
    await register("paged.d", "2.0")
    seen, totals, token = [], [], ""
    while True:
        page = await ingest.stub.ListEventTypes(
            ingest_pb2.ListEventTypesRequest(name_prefix="paged.", page_size=2, page_token=token)
        )
        seen += [(t.name, t.data_version) for t in page.event_types]
        totals.append(page.total_size)
        await register(f"paged.a{len(totals)}")  # before every page read
        token = page.next_page_token
        if not token:
            break
    assert seen == [("paged.b", "1.0"), ("paged.d", "1.0"), ("paged.d", "2.0"), ("paged.f", "1.0")]
    assert totals == [4, 5]


async def test_idempotent_replay_and_key_misuse(
    ingest: IngestUnderTest, infra: Infra, topic: str
) -> None:
    key = (("idempotency-key", "k-" + uuid.uuid4().hex),)
    request = ingest_pb2.PublishRequest(json=LEGACY_EXAMPLES["user_registered"])
    first = await ingest.stub.Publish(request, metadata=key)
    again = await ingest.stub.Publish(request, metadata=key)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.event_id == first.event_id

    other = json.loads(LEGACY_EXAMPLES["user_registered"])
    other["event_id"] = str(uuid.uuid4())
    got = await rejected(ingest, ingest_pb2.PublishRequest(json=json.dumps(other)), key)
    assert "already used with a different request" in got["idempotency-key"]

    # no key: the same id from the same source is a duplicate; other content is refused
    no_key = await ingest.stub.Publish(request)
    assert no_key.duplicate
    changed = json.loads(LEGACY_EXAMPLES["user_registered"])
    changed["payload"]["locale"] = "en"
    got = await rejected(ingest, ingest_pb2.PublishRequest(json=json.dumps(changed)))
    assert "already accepted with other content" in got["event_id"]

    records = await read_topic(infra.kafka_settings(), topic, 1, timeout=5)
    assert len(records) == 1, "a replay must not reach Kafka twice"


async def test_a_retry_whose_json_data_lists_its_keys_in_another_order_is_a_replay(
    ingest: IngestUnderTest, infra: Infra, topic: str
) -> None:
    # JSON objects are unordered: a retry rebuilt from a parsed copy (a client's jsonb
    # column reorders keys) was refused as "a different request"
    name = f"reorder.t{uuid.uuid4().hex[:8]}"
    await ingest.stub.CreateEventType(
        ingest_pb2.CreateEventTypeRequest(
            event_type=ingest_pb2.EventType(
                name=name, data_version="1.0", json_schema='{"type": "object"}'
            )
        )
    )

    def doc(event_id: str, data: str) -> ingest_pb2.PublishRequest:
        head = (
            f'{{"specversion": "1.0", "id": "{event_id}", "source": "urn:shop", '
            f'"type": "{name}", "time": "2026-11-22T10:00:00Z", "data": '
        )
        return ingest_pb2.PublishRequest(json=head + data + "}")

    written = '{"order": {"id": 7, "lines": [1, 2.50]}, "paid": true}'
    reordered = '{ "paid" : true, "order": {"lines": [1, 2.5], "id": 7} }'
    key = (("idempotency-key", "k-" + uuid.uuid4().hex),)
    with_key = str(uuid.uuid4())
    first = await ingest.stub.Publish(doc(with_key, written), metadata=key)
    again = await ingest.stub.Publish(doc(with_key, reordered), metadata=key)
    assert (first.duplicate, again.duplicate, again.event_id) == (False, True, with_key)
    changed = '{"paid": false, "order": {"lines": [1, 2.5], "id": 7}}'
    got = await rejected(ingest, doc(with_key, changed), key)
    assert "already used with a different request" in got["idempotency-key"]
    one = '{"paid": 1, "order": {"lines": [1, 2.5], "id": 7}}'  # 1 is not true
    got = await rejected(ingest, doc(with_key, one), key)
    assert "already used with a different request" in got["idempotency-key"]

    by_id = str(uuid.uuid4())  # no key: the same id from the same source
    await ingest.stub.Publish(doc(by_id, written))
    assert (await ingest.stub.Publish(doc(by_id, reordered))).duplicate

    batch_key = (("idempotency-key", "b-" + uuid.uuid4().hex),)
    in_batch = [str(uuid.uuid4()) for _ in range(3)]
    await ingest.stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(requests=[doc(i, written) for i in in_batch]),
        metadata=batch_key,
    )
    replay = await ingest.stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(requests=[doc(i, reordered) for i in in_batch]),
        metadata=batch_key,
    )
    assert [(r.event_id, r.duplicate) for r in replay.results] == [(i, True) for i in in_batch]

    # A retry the rules have changed for since (a newer data version, the default now,
    # whose schema it fails) is still answered as its first call was.
    await ingest.stub.CreateEventType(
        ingest_pb2.CreateEventTypeRequest(
            event_type=ingest_pb2.EventType(
                name=name, data_version="2.0", json_schema='{"type": "object", "required": ["v2"]}'
            )
        )
    )
    late = await ingest.stub.Publish(doc(with_key, reordered), metadata=key)
    assert (late.event_id, late.duplicate) == (with_key, True)

    records = await read_topic(infra.kafka_settings(), topic, 5, timeout=5)
    assert sorted(headers(r)["ce_id"] for r in records) == sorted([with_key, by_id, *in_batch])
    assert {r.value for r in records} == {b'{"order":{"id":7,"lines":[1,2.5]},"paid":true}'}, (
        "the first call's data"
    )


async def test_publish_batch_results_per_item(
    ingest: IngestUnderTest, infra: Infra, topic: str
) -> None:
    items = []
    for i in range(1000):
        doc = json.loads(LEGACY_EXAMPLES["user_registered"])
        doc["event_id"] = str(uuid.UUID(int=i + 1))
        if i % 100 == 7:
            doc["payload"]["locale"] = "bad locale"
        items.append(ingest_pb2.PublishRequest(json=json.dumps(doc)))
    response = await ingest.stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(requests=items), metadata=(("idempotency-key", "b1"),)
    )
    assert len(response.results) == 1000
    bad = [i for i, r in enumerate(response.results) if r.status.code != 0]
    assert bad == [i for i in range(1000) if i % 100 == 7]
    assert bad_request_of(response.results[7].status)[0].field == "payload.locale"
    assert response.results[0].event_id == str(uuid.UUID(int=1))

    replay = await ingest.stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(requests=items), metadata=(("idempotency-key", "b1"),)
    )
    assert all(r.duplicate for r in replay.results if r.status.code == 0)
    records = await read_topic(infra.kafka_settings(), topic, 990, timeout=30)
    assert len(records) == 990
    for r in records:  # each record names the key its event was stored by
        i = uuid.UUID(headers(r)["ce_id"]).int - 1
        assert headers(r)["idempotency-key"] == f"b1:{i}"

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await ingest.stub.PublishBatch(ingest_pb2.PublishBatchRequest(requests=items + items[:1]))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_server_reflection_lists_the_service(ingest: IngestUnderTest) -> None:
    def list_services() -> list[str]:  # what grpcurl does, with the sync client
        with grpc.insecure_channel(f"127.0.0.1:{ingest.running.port}") as channel:
            return list(ProtoReflectionDescriptorDatabase(channel).get_services())

    services = await asyncio.to_thread(list_services)
    assert "herald.ingest.v1.IngestService" in services
    assert "grpc.health.v1.Health" in services


async def test_the_record_carries_the_idempotency_key_of_the_request_field(
    ingest: IngestUnderTest, infra: Infra, topic: str
) -> None:
    doc = json.loads(LEGACY_EXAMPLES["user_registered"])
    doc["event_id"] = str(uuid.uuid4())
    request = ingest_pb2.PublishRequest(json=json.dumps(doc), idempotency_key="field-key-1")
    await ingest.stub.Publish(request, metadata=(("idempotency-key", "metadata-key"),))
    [record] = await read_topic(infra.kafka_settings(), topic, 1)
    assert headers(record)["idempotency-key"] == "field-key-1"


async def test_every_event_carries_an_x_request_id_one_of_its_own_when_none_was_sent(
    ingest: IngestUnderTest, infra: Infra, topic: str
) -> None:
    """Seed 001: every event includes X-Request-Id (for its logs and trace)."""

    def user_registered(i: int) -> ingest_pb2.PublishRequest:
        doc = json.loads(LEGACY_EXAMPLES["user_registered"])
        doc["event_id"] = str(uuid.UUID(int=i + 1))
        return ingest_pb2.PublishRequest(json=json.dumps(doc))

    await ingest.stub.Publish(user_registered(0))
    await ingest.stub.Publish(user_registered(1))
    await ingest.stub.Publish(user_registered(2), metadata=(("x-request-id", "req-given"),))
    batch = [user_registered(3), user_registered(4)]
    await ingest.stub.PublishBatch(ingest_pb2.PublishBatchRequest(requests=batch))
    records = await read_topic(infra.kafka_settings(), topic, 5)
    by_event = {uuid.UUID(headers(r)["ce_id"]).int - 1: headers(r) for r in records}
    ids = [by_event[i].get("x-request-id") for i in range(5)]
    assert all(ids), ids
    assert ids[2] == "req-given", "a given one is kept"
    assert len({ids[0], ids[1], ids[3]}) == 3, "one of its own per call"
    assert ids[3] == ids[4], "a batch's items share their call's"


async def test_concurrent_batches_sharing_keys_in_any_order_all_succeed(
    ingest: IngestUnderTest, infra: Infra, topic: str
) -> None:
    """Two clients retrying the same events with the same keys, in different orders, at
    the same moment: each item is stored once and every call answers OK (PostgreSQL
    deadlocked on the keys' index and the calls answered INTERNAL)."""
    docs = []
    for _ in range(300):
        doc = json.loads(LEGACY_EXAMPLES["user_registered"])
        doc["event_id"] = str(uuid.uuid4())
        docs.append(
            ingest_pb2.PublishRequest(json=json.dumps(doc), idempotency_key=doc["event_id"])
        )

    async def publish(order: list[ingest_pb2.PublishRequest]) -> list[str]:
        reply = await ingest.stub.PublishBatch(ingest_pb2.PublishBatchRequest(requests=order))
        assert [r.status.code for r in reply.results] == [0] * len(order)
        return [r.event_id for r in reply.results]

    for _ in range(5):
        rounds = [docs, docs[::-1], docs[1::2] + docs[::2], docs[::-1]]
        await asyncio.gather(*(publish(order) for order in rounds))
    records = await read_topic(infra.kafka_settings(), topic, 300, timeout=30)
    assert sorted(headers(r)["ce_id"] for r in records) == sorted(
        json.loads(d.json)["event_id"] for d in docs
    )
