"""Publish's rules through the real service: what it refuses per item, before any
database access, and what an accepted event looks like on Kafka."""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from herald.cloudevents.v1 import cloudevents_pb2
from herald.ingest.v1 import ingest_pb2
from structlog.testing import capture_logs

from herald.runtime.errors import bad_request_of
from tests.conftest import Infra
from tests.integration.conftest import IngestUnderTest
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def structured(**changes: Any) -> dict[str, Any]:
    """A valid structured-JSON message.created event, with ``changes``."""
    doc: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "urn:t",
        "type": "message.created",
        "time": "2025-01-02T03:04:05Z",
        "data": {"message": {"id": "m1", "text": "hi"}},
    }
    return {**doc, **changes}


def as_json(doc: dict[str, Any], key: str = "") -> ingest_pb2.PublishRequest:
    return ingest_pb2.PublishRequest(json=json.dumps(doc), idempotency_key=key)


def violations(status: status_pb2.Status) -> dict[str, str]:
    assert status.code == INVALID, status.message
    return {v.field: v.description for v in bad_request_of(status)}


async def test_a_nul_in_an_attribute_or_key_is_refused_per_item(ingest: IngestUnderTest) -> None:
    # PostgreSQL refused the NUL (in the type's catalog lookup, or the key's insert):
    # Publish answered INTERNAL and PublishBatch failed every item of the call
    proto = cloudevents_pb2.CloudEvent(
        id=str(uuid.uuid4()), source="urn:t", spec_version="1.0", type="message.\x00created"
    )
    proto.attributes["time"].ce_string = "2025-01-02T03:04:05Z"
    proto.text_data = "{}"
    batch = await ingest.stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(
            requests=[
                as_json(structured()),
                as_json(structured(type="a\u0000b")),
                ingest_pb2.PublishRequest(event=proto),
                as_json(structured(), key="k\x00"),
                as_json(structured(dataversion="1\u0000")),
            ]
        )
    )
    first, *refused = batch.results
    assert first.status.code == 0
    assert first.event_id
    nul = "contains a NUL character"
    assert nul in violations(refused[0].status)["type"]
    assert nul in violations(refused[1].status)["event.type"]
    assert nul in violations(refused[2].status)["idempotency-key"]
    assert nul in violations(refused[3].status)["dataversion"]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await ingest.stub.Publish(as_json(structured(type="a\u0000b")))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_event_whose_kafka_record_is_too_large_is_refused(
    ingest: IngestUnderTest,
) -> None:
    # subject 400 KB + data 400 KB: under MAX_EVENT_BYTES as data plus attributes, but
    # the record (key = subject, ce_subject, data) is 1.2 MB: accepted, then dead-lettered
    doc = structured(subject="s" * 400_000, data={"message": {"id": "m1", "text": "a" * 400_000}})
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await ingest.stub.Publish(as_json(doc))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "event too large: its record is 1200" in (exc.value.details() or "")
    doc = structured(subject="s" * 300_000, data={"message": {"id": "m1", "text": "a" * 300_000}})
    assert (await ingest.stub.Publish(as_json(doc))).event_id


async def test_batch_items_and_publish_keep_their_own_idempotency_keys(
    ingest: IngestUnderTest,
) -> None:
    # a batch item's derived key "K:0" was the Publish key "K:0": the second event was
    # refused as a different request under the same key
    stub = ingest.stub
    first, second = structured(), structured()
    published = await stub.Publish(as_json(first), metadata=[("idempotency-key", "k1:0")])
    batch = await stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(requests=[as_json(second)]),
        metadata=[("idempotency-key", "k1")],
    )
    [item] = batch.results
    assert item.status.code == 0, item.status.message
    assert not item.duplicate
    assert item.event_id == second["id"] != published.event_id

    third, fourth = structured(), structured()
    batch = await stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(requests=[as_json(third)]),
        metadata=[("idempotency-key", "k2")],
    )
    published = await stub.Publish(as_json(fourth), metadata=[("idempotency-key", "k2:0")])
    assert not published.duplicate
    assert published.event_id == fourth["id"]
    # each scope still deduplicates its own retries
    again = await stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(requests=[as_json(third)]),
        metadata=[("idempotency-key", "k2")],
    )
    assert again.results[0].duplicate
    assert (await stub.Publish(as_json(fourth), metadata=[("idempotency-key", "k2:0")])).duplicate


async def test_a_rejected_event_is_logged_with_its_id_type_key_and_outcome(
    ingest: IngestUnderTest,
) -> None:
    # event.rejected named only the key and the violations
    doc = structured(time="yesterday")
    with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError):
        await ingest.stub.Publish(as_json(doc), metadata=[("idempotency-key", "k-rejected")])
    [line] = [line for line in logs if line["event"] == "event.rejected"]
    assert line["event_id"] == doc["id"]
    assert line["type"] == "message.created"
    assert line["idempotency_key"] == "k-rejected"
    assert line["outcome"] == "invalid"
    assert any(v.startswith("time:") for v in line["violations"])


async def test_a_content_type_in_capitals_reaches_kafka_in_lower_case(
    infra: Infra, ingest: IngestUnderTest, topic: str
) -> None:
    """Media types are case-insensitive, but the cloudevents SDK compares the header as
    written: with ``Application/JSON`` it handed consumers the data as text."""
    doc = structured(datacontenttype="Application/JSON; charset=UTF-8")
    await ingest.stub.Publish(as_json(doc))
    [record] = await read_topic(infra.kafka_settings(), topic, 1)
    headers = dict(record.headers)
    assert headers["content-type"] == b"application/json; charset=UTF-8"


async def test_an_implied_content_type_is_said_on_the_record_and_a_retry_still_matches(
    infra: Infra, ingest: IngestUnderTest, topic: str
) -> None:
    """No datacontenttype (the JSON format implies application/json): the record had no
    content-type header, which the spec asks for when an event changes binding."""
    doc = structured(subject=None, dataversion=None)  # nulls: unset
    first = await ingest.stub.Publish(as_json(doc, key="k-implied"))
    again = await ingest.stub.Publish(as_json(doc, key="k-implied"))
    assert (first.duplicate, again.duplicate) == (False, True)
    [record] = await read_topic(infra.kafka_settings(), topic, 1)
    headers = dict(record.headers)
    assert headers["content-type"] == b"application/json"
    assert "ce_subject" not in headers


@pytest.mark.parametrize("reused_first", [True, False])
async def test_an_event_repeated_under_another_key_in_one_batch_has_its_own_outcome(
    ingest: IngestUnderTest, reused_first: bool
) -> None:
    # Two items of one batch with the same event, one under a key already used for
    # another request and one under a new key: the second took the first's refusal
    # (the event was not stored), or, the other way round, the reused key's item was
    # called a duplicate; the outcome depended on the items' order
    stub = ingest.stub
    old = f"old-{uuid.uuid4()}"
    await stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(requests=[as_json(structured(), key=old)])
    )
    event = structured()
    requests = [as_json(event, key=old), as_json(event, key=f"new-{uuid.uuid4()}")]
    order = [0, 1] if reused_first else [1, 0]
    batch = await stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(requests=[requests[i] for i in order])
    )
    reused, fresh = (batch.results[order.index(i)] for i in (0, 1))
    assert "idempotency-key" in violations(reused.status)
    assert fresh.status.code == 0, fresh.status.message
    assert fresh.event_id == event["id"]
    assert not fresh.duplicate, "stored by this item: the other was refused"


async def test_a_key_under_which_a_batch_repeated_an_event_is_kept(
    ingest: IngestUnderTest,
) -> None:
    # The second item's key was never recorded: a different request under it was taken
    stub = ingest.stub
    event = structured()
    first, second = f"a-{uuid.uuid4()}", f"b-{uuid.uuid4()}"
    batch = await stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(
            requests=[as_json(event, key=first), as_json(event, key=second)]
        )
    )
    assert [(r.status.code, r.event_id, r.duplicate) for r in batch.results] == [
        (0, event["id"], False),
        (0, event["id"], True),
    ]
    other = await stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(requests=[as_json(structured(), key=second)])
    )
    assert "idempotency-key" in violations(other.results[0].status), "another request"
    again = await stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(requests=[as_json(event, key=second)])
    )
    assert again.results[0].duplicate, "the same request again"
    assert again.results[0].event_id == event["id"]
