"""Nothing accepted is lost: relay crashes, Kafka outages, several relays at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import defaultdict
from functools import partial

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from herald.cloudevents.v1 import cloudevents_pb2
from herald.ingest.v1 import ingest_pb2
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from herald.runtime import kafka
from herald.runtime.backlog import BacklogReporter
from herald.runtime.db import DATABASE_ERRORS
from herald.runtime.rounds import finished
from herald.services.ingest.app import BEHIND
from herald.services.ingest.catalog import EventTypeDef, check_definition
from herald.services.ingest.catalog_store import CatalogStore
from herald.services.ingest.outbox import LANES
from herald.services.ingest.relay import Relay
from herald.services.ingest.relay_app import open_pool
from herald.services.ingest.settings import IngestSettings
from herald.services.ingest.writer import Q
from tests.conftest import Infra
from tests.fixtures.seeds import LEGACY_EXAMPLES
from tests.integration.conftest import IngestUnderTest, end_lock_holders_session, start_ingest
from tests.kafka_helpers import create_small_topic, headers, read_topic

pytestmark = pytest.mark.integration


def event_json(key: str, seq: int) -> str:
    """A valid user_registered event; ``subject`` is the Kafka key (ordering)."""
    doc = json.loads(LEGACY_EXAMPLES["user_registered"])
    structured = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "auth_service",
        "type": "user_registered",
        "time": "2025-11-14T12:34:56Z",
        "subject": key,
        "seq": seq,
        "data": doc["payload"],
    }
    return json.dumps(structured)


async def pending_rows(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM ingest.outbox WHERE published_at IS NULL"
        )
        return count
    finally:
        await conn.close()


async def relay_until(infra: Infra, database_url: str, left: int, batch_size: int = 1000) -> None:
    """Relay rounds until at most ``left`` rows are pending (15 s at most)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    make = partial(kafka.make_producer, infra.kafka_settings())
    relay = Relay(pool, make, batch_size=batch_size)
    await relay.start_producer()
    try:
        async with asyncio.timeout(15):
            while await pending_rows(database_url) > left:
                await relay.relay_once()
    finally:
        await relay.stop()
        await pool.close()


async def test_relay_killed_between_send_and_mark_repeats_with_same_ce_id(
    infra: Infra, database_url: str, topic: str
) -> None:
    service = await start_ingest(infra, database_url, topic, relay_enabled=False)
    try:
        ids = [
            (
                await service.stub.Publish(ingest_pb2.PublishRequest(json=event_json("k", i)))
            ).event_id
            for i in range(20)
        ]
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        assert pool is not None
        make = partial(kafka.make_producer, infra.kafka_settings())

        class DiesAfterSend(Relay):
            async def _send(self, rows: list[asyncpg.Record]) -> list[BaseException | None]:
                await super()._send(rows)  # Kafka has acknowledged every record…
                raise asyncio.CancelledError  # …and the relay dies before marking

        crashing = DiesAfterSend(pool, make)
        await crashing.start_producer()
        with pytest.raises(asyncio.CancelledError):
            await crashing.relay_once()
        await crashing.stop()
        assert await pending_rows(database_url) == 20, "unmarked rows stay in the outbox"

        restarted = Relay(pool, make)
        await restarted.start_producer()
        while (await restarted.relay_once())[0]:
            pass
        await restarted.stop()
        await pool.close()
        assert await pending_rows(database_url) == 0

        records = await read_topic(infra.kafka_settings(), topic, 40)
        seen = [headers(r)["ce_id"] for r in records]
        assert sorted(set(seen)) == sorted(ids), "every accepted event is on Kafka"
        assert len(seen) == 40, "each repeated once, by the restarted relay"
        # a repeat is the same record: same ce_id, same value
        values: dict[str, set[bytes]] = defaultdict(set)
        for r in records:
            values[headers(r)["ce_id"]].add(r.value)
        assert all(len(v) == 1 for v in values.values())
    finally:
        await service.stop()


async def test_a_backlog_no_relay_sends_is_reported_until_a_relay_sends_it(
    infra: Infra, database_url: str, topic: str
) -> None:
    service = await start_ingest(infra, database_url, topic, relay_enabled=False)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        for i in range(5):
            await service.stub.Publish(ingest_pb2.PublishRequest(json=event_json("k", i)))
        await asyncio.sleep(0.05)
        reporter = BacklogReporter(pool, Q.outbox_backlog, BEHIND, (LANES,), behind=0.01)
        with capture_logs() as logs:
            behind = await reporter.once()
            await reporter.once()  # a warning at most once a minute
        assert behind is not None
        assert behind.pending == 5
        assert 0.05 <= behind.lag < 30
        assert REGISTRY.get_sample_value("outbox_pending") == 5
        lag = REGISTRY.get_sample_value("outbox_lag_seconds")
        assert lag is not None
        assert lag >= 0.05
        warnings = [line for line in logs if line["event"] == "outbox.behind"]
        assert len(warnings) == 1
        assert warnings[0]["pending"] == 5
        assert "relay" in warnings[0]["hint"]

        relay = Relay(pool, partial(kafka.make_producer, infra.kafka_settings()))
        await relay.start_producer()
        try:
            while (await relay.relay_once())[0]:
                pass
        finally:
            await relay.stop()
        assert await reporter.once() == (0, 0.0)
        assert REGISTRY.get_sample_value("outbox_pending") == 0
        assert REGISTRY.get_sample_value("outbox_lag_seconds") == 0
    finally:
        await pool.close()
        await service.stop()


async def test_a_relay_stopped_mid_round_finishes_it_and_repeats_nothing(
    infra: Infra, database_url: str, topic: str
) -> None:
    """A graceful stop cancels the relay's loop; one cancelled between sending and
    marking rolled its marks back, and the drain that follows sent the rows again."""
    service = await start_ingest(infra, database_url, topic, relay_enabled=False)
    try:
        for i in range(20):
            await service.stub.Publish(ingest_pb2.PublishRequest(json=event_json("k", i)))
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        assert pool is not None
        sending, release = asyncio.Event(), asyncio.Event()

        class SlowToAcknowledge(Relay):
            async def _send(self, rows: list[asyncpg.Record]) -> list[BaseException | None]:
                acked = await super()._send(rows)  # Kafka has every record…
                sending.set()
                await release.wait()  # …when the stop comes
                return acked

        relay = SlowToAcknowledge(pool, partial(kafka.make_producer, infra.kafka_settings()))
        running = asyncio.create_task(relay.run())
        await asyncio.wait_for(sending.wait(), 30)
        running.cancel()  # what Running.stop does to a worker
        await asyncio.sleep(0.1)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await running
        await relay.drain(5)  # then the stop hooks: drain, flush
        await relay.stop()
        await pool.close()
        assert await pending_rows(database_url) == 0
        records = await read_topic(infra.kafka_settings(), topic, 40, timeout=5)
        assert len(records) == 20, "each record once"
    finally:
        await service.stop()


@pytest.mark.parametrize("ended_by", ["stop", "session"])
async def test_a_round_given_up_never_lands_after_what_the_next_relay_sent(
    infra: Infra, database_url: str, topic: str, ended_by: str
) -> None:
    """Kafka does not acknowledge a round in time (its records wait out a 3 s linger)
    and the round ends: a stop cuts it short (its grace is 0.2 s), or its database
    session ends (terminated: a failover, idle_in_transaction_session_timeout). Either
    way its lanes go and another relay sends the rows. The first round's records must
    not land after those: they did (its producer kept them, and delivered them later or
    on the stop's flush), and the key's records went back in time on the topic."""
    service = await start_ingest(infra, database_url, topic, relay_enabled=False)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    assert pool is not None
    try:
        ids = [
            (
                await service.stub.Publish(ingest_pb2.PublishRequest(json=event_json("k", i)))
            ).event_id
            for i in range(5)
        ]
        settings = infra.kafka_settings()
        first = Relay(pool, partial(kafka.make_producer, settings, linger_ms=3000))
        await first.start_producer()
        assert first.producer is not None
        await first.producer.partitions_for(topic)  # the records wait on the linger only
        if ended_by == "stop":
            cut = asyncio.ensure_future(finished(first.relay_once(), grace=0.2))
            await asyncio.sleep(0.2)  # the records are with the producer
            cut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cut
        else:
            round_ = asyncio.ensure_future(first.relay_once())
            await asyncio.sleep(0.3)  # the records are with the producer
            assert await end_lock_holders_session(database_url) == 1, "it held the lanes"
            with contextlib.suppress(*DATABASE_ERRORS):
                await round_
        assert await pending_rows(database_url) == 5, "nothing was marked"

        taking_over = Relay(pool, partial(kafka.make_producer, settings))
        await taking_over.start_producer()
        assert await taking_over.relay_once() == (5, 0)
        await taking_over.stop()
        await first.stop()  # the first relay's stop hooks: flush, stop
        await asyncio.sleep(3.5)  # past the linger

        records = await read_topic(settings, topic, 6, timeout=3)
        assert [headers(r)["ce_id"] for r in records] == ids, "each once, in order"
    finally:
        await pool.close()
        await service.stop()


async def test_a_row_for_a_topic_kafka_does_not_know_holds_up_no_other_row(
    infra: Infra, database_url: str, topic: str
) -> None:
    """A row whose topic cannot be learnt (a name stored before topic names were
    checked, or a topic deleted where Kafka does not create topics): each relay round
    waited the producer's request timeout for it, tens of seconds, and every other
    event waited with it."""
    service = await start_ingest(infra, database_url, topic, relay_enabled=False)
    try:
        await service.stub.Publish(ingest_pb2.PublishRequest(json=event_json("stuck", 0)))
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("UPDATE ingest.outbox SET topic = 'bad%topic'")
        finally:
            await conn.close()
        ids = [
            (
                await service.stub.Publish(ingest_pb2.PublishRequest(json=event_json(f"k{i}", i)))
            ).event_id
            for i in range(5)
        ]
        await relay_until(infra, database_url, 1)  # the producer alone would wait 40 s
        records = await read_topic(infra.kafka_settings(), topic, 5)
        assert sorted(headers(r)["ce_id"] for r in records) == sorted(ids)
        assert await pending_rows(database_url) == 1, "the stuck row waits, alone"
    finally:
        await service.stop()


async def test_many_rows_for_a_topic_kafka_does_not_know_hold_up_no_row_of_their_lane(
    infra: Infra, database_url: str, topic: str
) -> None:
    """More rows of an unknown topic at the head of a lane than a round reads of it
    (here 30 against 10 a round): while the topic is known to be unknown, a round reads
    past them, so the lane's later rows still go out."""
    service = await start_ingest(infra, database_url, topic, relay_enabled=False)
    try:
        for i in range(30):
            await service.stub.Publish(ingest_pb2.PublishRequest(json=event_json(f"s{i}", i)))
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("UPDATE ingest.outbox SET topic = 'bad%topic', lane = 0")
            ids = [
                (
                    await service.stub.Publish(
                        ingest_pb2.PublishRequest(json=event_json(f"k{i}", 100 + i))
                    )
                ).event_id
                for i in range(5)
            ]
            await conn.execute("UPDATE ingest.outbox SET lane = 0")  # all in one lane
        finally:
            await conn.close()
        await relay_until(infra, database_url, 30, batch_size=10)
        records = await read_topic(infra.kafka_settings(), topic, 5)
        assert sorted(headers(r)["ce_id"] for r in records) == sorted(ids)
    finally:
        await service.stop()


async def test_kafka_down_for_a_while_ingest_keeps_accepting_and_relay_catches_up(
    infra: Infra, database_url: str, topic: str
) -> None:
    if infra.kafka is None:
        pytest.fail("this test stops Kafka: run it against the Kafka the session starts")
    service = await start_ingest(infra, database_url, topic)
    health = health_pb2_grpc.HealthStub(service.channel)
    try:
        before = await service.stub.Publish(ingest_pb2.PublishRequest(json=event_json("a", 0)))
        await read_topic(infra.kafka_settings(), topic, 1)  # the topic exists and works

        await asyncio.to_thread(infra.kafka.stop)
        accepted = [before.event_id]
        for i in range(1, 51):
            response = await asyncio.wait_for(
                service.stub.Publish(ingest_pb2.PublishRequest(json=event_json(f"k{i % 5}", i))),
                timeout=5,
            )
            accepted.append(response.event_id)
        await service.running.monitor.check_once()
        state = await health.Check(health_pb2.HealthCheckRequest())
        assert state.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await pending_rows(database_url) == 50

        await asyncio.to_thread(infra.kafka.start)
        records = await read_topic(infra.kafka_settings(), topic, 51, timeout=60)
        assert {headers(r)["ce_id"] for r in records} == set(accepted)
        for _ in range(50):
            if await service.running.monitor.check_once():
                break
            await asyncio.sleep(0.2)
        state = await health.Check(health_pb2.HealthCheckRequest())
        assert state.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        if not infra.kafka.is_running():
            await asyncio.to_thread(infra.kafka.start)
        await service.stop()


async def test_two_relays_keep_per_key_order(infra: Infra, database_url: str, topic: str) -> None:
    first = await start_ingest(infra, database_url, topic, relay_enabled=False)
    try:
        for i in range(300):
            await first.stub.Publish(ingest_pb2.PublishRequest(json=event_json(f"key{i % 7}", i)))
        pool = await asyncpg.create_pool(database_url, min_size=2, max_size=8)
        assert pool is not None
        make = partial(kafka.make_producer, infra.kafka_settings())
        relays = [Relay(pool, make, concurrency=3, batch_size=20) for _ in range(2)]
        tasks = [asyncio.create_task(r.run()) for r in relays]
        records = await read_topic(infra.kafka_settings(), topic, 300, timeout=60)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for r in relays:
            await r.stop()
        await pool.close()
        assert len(records) == 300
        by_key: dict[bytes, list[int]] = defaultdict(list)
        for r in records:
            by_key[r.key].append(json.loads(headers(r)["ce_seq"]))
        for key, seqs in by_key.items():
            assert seqs == sorted(seqs), f"order broken for {key!r}"
    finally:
        await first.stop()


async def test_event_type_created_at_runtime_is_used_by_every_replica(
    infra: Infra, database_url: str, topic: str
) -> None:
    a = await start_ingest(infra, database_url, topic)
    b = await start_ingest(infra, database_url, topic)
    try:
        schema = {
            "type": "object",
            "required": ["sku"],
            "properties": {"sku": {"type": "string"}},
            "additionalProperties": False,
        }
        created = await a.stub.CreateEventType(
            ingest_pb2.CreateEventTypeRequest(
                event_type=ingest_pb2.EventType(
                    name="warehouse.item.moved",
                    data_version="1.0",
                    json_schema=json.dumps(schema),
                    description="moved between shelves",
                )
            )
        )
        assert created.event_type.create_time.seconds > 0
        event = {
            "specversion": "1.0",
            "id": "m-1",
            "source": "urn:wh",
            "time": "2025-01-01T00:00:00Z",
            "type": "warehouse.item.moved",
            "data": {"sku": "S1"},
        }
        response = await b.stub.Publish(ingest_pb2.PublishRequest(json=json.dumps(event)))
        assert not response.duplicate

        v2 = {
            **schema,
            "required": ["sku", "to"],
            "properties": {"sku": {"type": "string"}, "to": {"type": "string"}},
        }
        await b.stub.CreateEventType(
            ingest_pb2.CreateEventTypeRequest(
                event_type=ingest_pb2.EventType(
                    name="warehouse.item.moved", data_version="2.0", json_schema=json.dumps(v2)
                )
            )
        )
        # a, asked nothing about the type since, validates by the new default at once
        # (told by NOTIFY: an event naming no version was taken by 1.0 there until a
        # restart, or a GetEventType on it)
        new = {**event, "id": "m-3"}
        refused: grpc.aio.AioRpcError | None = None
        for n in range(50):
            try:
                await a.stub.Publish(ingest_pb2.PublishRequest(json=json.dumps(new)))
            except grpc.aio.AioRpcError as exc:
                refused = exc
                break
            new["id"] = f"m-3-{n}"  # taken: the notification is still on its way
            await asyncio.sleep(0.1)
        assert refused is not None, "ingest a never learnt of version 2.0"
        assert "data.to" in (refused.details() or "")
        got = await a.stub.GetEventType(ingest_pb2.GetEventTypeRequest(name="warehouse.item.moved"))
        assert got.event_type.data_version == "2.0"  # the latest by default
        # version 1.0 still validates events that say so; the default is now 2.0
        old = {**event, "id": "m-2", "dataversion": "1.0"}
        await a.stub.Publish(ingest_pb2.PublishRequest(json=json.dumps(old)))

        records = await read_topic(infra.kafka_settings(), topic, 2)
        assert [headers(r)["schema-version"] for r in records] == ["1.0", "1.0"]

        listed = await a.stub.ListEventTypes(
            ingest_pb2.ListEventTypesRequest(name_prefix="warehouse.", page_size=1)
        )
        assert listed.total_size == 2
        assert [t.data_version for t in listed.event_types] == ["1.0"]
        rest = await a.stub.ListEventTypes(
            ingest_pb2.ListEventTypesRequest(
                name_prefix="warehouse.", page_size=1, page_token=listed.next_page_token
            )
        )
        assert [t.data_version for t in rest.event_types] == ["2.0"]
        assert rest.next_page_token == ""
    finally:
        await a.stop()
        await b.stop()


async def test_claiming_lanes_locks_only_the_lanes_claimed(
    infra: Infra, database_url: str, topic: str
) -> None:
    """Regression: the lock must be tried lazily, not on every candidate lane."""
    service = await start_ingest(infra, database_url, topic, relay_enabled=False)
    try:
        for i in range(40):  # keys spread over many lanes
            await service.stub.Publish(ingest_pb2.PublishRequest(json=event_json(f"k{i}", i)))
    finally:
        await service.stop()
    a, b = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        pending = await a.fetchval(
            "SELECT count(DISTINCT lane) FROM ingest.outbox WHERE published_at IS NULL"
        )
        assert pending >= 3
        async with a.transaction(), b.transaction():
            first = await a.fetch(Q.claim_lanes, LANES, 0, 1)
            held = await a.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = "
                "pg_backend_pid()"
            )
            second = await b.fetch(Q.claim_lanes, LANES, 0, 2)
            assert len({r["lane"] for r in first}) == 1
            assert held == 1
            assert len({r["lane"] for r in second}) == 2
            assert first[0]["lane"] not in {r["lane"] for r in second}
    finally:
        await a.close()
        await b.close()


def big_event(key: str, text: str) -> cloudevents_pb2.CloudEvent:
    ce = cloudevents_pb2.CloudEvent(
        id=str(uuid.uuid4()), source="urn:katya:api", spec_version="1.0", type="message.created"
    )
    ce.attributes["time"].ce_timestamp.FromJsonString("2025-01-02T03:04:05Z")
    ce.attributes["partitionkey"].ce_string = key
    ce.text_data = json.dumps({"message": {"id": "m1", "text": text}})
    return ce


async def test_an_event_kafka_refuses_for_good_is_dead_lettered_and_its_key_goes_on(
    infra: Infra, database_url: str, topic: str
) -> None:
    """A topic whose limit is below MAX_EVENT_BYTES: the event Kafka refuses is
    dead-lettered (it stayed pending for good, and the relay backed off for everyone),
    the events after it, of its key too, reach the topic without delay."""
    await create_small_topic(infra.kafka_settings(), topic, 100000, 3)
    dlq = f"herald.dlq.t{uuid.uuid4().hex[:10]}"
    service = await start_ingest(infra, database_url, topic, dlq_topic=dlq)
    try:
        before, big, after = (
            big_event("room-1", "a"),
            big_event("room-1", "x" * 200_000),
            big_event("room-1", "b"),
        )
        for ce in (before, big, after):
            await service.stub.Publish(ingest_pb2.PublishRequest(event=ce))
        records = await read_topic(infra.kafka_settings(), topic, 2)
        assert [headers(r)["ce_id"] for r in records] == [before.id, after.id]
        [dead] = await read_topic(infra.kafka_settings(), dlq, 1)
        h = headers(dead)
        assert h["ce_id"] == big.id
        assert h["dlq-service"] == "ingest"
        assert h["dlq-topic"] == topic
        assert "MessageSizeTooLarge" in h["dlq-reason"]
        assert dead.value == big.text_data.encode()
        assert await pending_rows(database_url) == 0

        # the relay is not backing off: the next event is on Kafka at once
        started = asyncio.get_running_loop().time()
        await service.stub.Publish(ingest_pb2.PublishRequest(event=big_event("room-2", "c")))
        await read_topic(infra.kafka_settings(), topic, 3)
        assert asyncio.get_running_loop().time() - started < 1.0
    finally:
        await service.stop()


def _shelf_event(event_type: str, event_id: str) -> ingest_pb2.PublishRequest:
    """A Publish of an event of ``event_type`` whose data is ``{"sku": "S1"}``."""
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:shelf",
        "time": "2025-01-01T00:00:00Z",
        "type": event_type,
        "data": {"sku": "S1"},
    }
    return ingest_pb2.PublishRequest(json=json.dumps(event))


async def test_a_retry_after_a_new_data_version_is_still_a_replay(
    ingest: IngestUnderTest,
) -> None:
    """An event sent without a data version takes the latest; a retry of the same request
    after a newer (compatible) version is registered is the same request, answered as a
    replay, not refused as the key used for something else."""
    name = f"shelf.item.counted{uuid.uuid4().hex[:8]}"
    schema = {"type": "object", "properties": {"sku": {"type": "string"}}}

    async def register(version: str) -> None:
        await ingest.stub.CreateEventType(
            ingest_pb2.CreateEventTypeRequest(
                event_type=ingest_pb2.EventType(
                    name=name, data_version=version, json_schema=json.dumps(schema)
                )
            )
        )

    await register("1.0")
    event_id = str(uuid.uuid4())
    request = _shelf_event(name, event_id)
    key = (("idempotency-key", "count-" + event_id),)
    first = await ingest.stub.Publish(request, metadata=key)
    await register("1.1")
    again = await ingest.stub.Publish(request, metadata=key)
    assert (again.event_id, again.duplicate) == (first.event_id, True)
    without_key = await ingest.stub.Publish(request)  # deduplicated by source and id
    assert (without_key.event_id, without_key.duplicate) == (first.event_id, True)

    # A version 2.0 whose schema the event fails is now its default: a retry is still
    # answered as the call it repeats, in Publish and in PublishBatch.
    schema = {"type": "object", "required": ["sku", "shelf"]}
    await register("2.0")
    again = await ingest.stub.Publish(request, metadata=key)
    assert (again.event_id, again.duplicate) == (first.event_id, True)
    batch = await ingest.stub.PublishBatch(
        ingest_pb2.PublishBatchRequest(requests=[request]), metadata=key[:0]
    )
    assert [(r.event_id, r.duplicate) for r in batch.results] == [(first.event_id, True)]
    # A new event under that version is refused: the schema applies to new requests.
    new = _shelf_event(name, str(uuid.uuid4()))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ingest.stub.Publish(new, metadata=key)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ingest.stub.Publish(new)
    assert "data" in (refused.value.details() or "")


async def test_a_replayed_retry_has_a_log_line_naming_its_type_key_request_and_outcome(
    ingest: IngestUnderTest,
) -> None:
    """Issue 2: a log line per event with id, type, idempotency key and outcome. A retry
    answered from the earlier call (it fails a newer default version now) logged only
    its id and key: no type, no outcome, no request id to find the call by; nor did
    events_accepted_total count it as a duplicate."""
    name = f"shelf.item.logged{uuid.uuid4().hex[:8]}"

    async def register(version: str, schema: dict[str, object]) -> None:
        await ingest.stub.CreateEventType(
            ingest_pb2.CreateEventTypeRequest(
                event_type=ingest_pb2.EventType(
                    name=name, data_version=version, json_schema=json.dumps(schema)
                )
            )
        )

    await register("1.0", {"type": "object"})
    event_id = str(uuid.uuid4())
    request = _shelf_event(name, event_id)
    await ingest.stub.Publish(request, metadata=(("idempotency-key", "log-" + event_id),))
    await register("2.0", {"type": "object", "required": ["shelf"]})
    duplicates = {"event_type": name, "duplicate": "true"}
    with capture_logs() as logs:
        again = await ingest.stub.Publish(
            request, metadata=(("idempotency-key", "log-" + event_id), ("x-request-id", "retry-1"))
        )
    assert again.duplicate
    assert REGISTRY.get_sample_value("events_accepted_total", duplicates) == 1.0
    [line] = [entry for entry in logs if entry.get("event_id") == event_id]
    assert {k: line.get(k) for k in ("type", "idempotency_key", "request_id", "outcome")} == {
        "type": name,
        "idempotency_key": "log-" + event_id,
        "request_id": "retry-1",
        "outcome": "duplicate",
    }


async def test_a_created_type_is_held_as_stored_so_a_refresh_keeps_its_validator(
    database_url: str,
) -> None:
    """The catalog holds each schema as the JSON text PostgreSQL gives back; a created
    type held the request's text instead, and the first refresh of its name (a NOTIFY,
    a lookup of another version) found it changed and compiled it again."""
    pool = await open_pool(IngestSettings(database_url=database_url))
    try:
        store = CatalogStore(pool)
        await store.load()
        # Spaced and ordered unlike jsonb's text.
        text = '{"type":"object",   "required":["sku"], "additionalProperties": false}'
        check_definition("shelf.moved", "1.0", text, "", [])
        created = await store.create(EventTypeDef("shelf.moved", "1.0", text))
        stored = await pool.fetchval(
            "SELECT json_schema::text FROM ingest.event_types WHERE name = 'shelf.moved'"
        )
        assert created.schema_text == stored != text
        assert not created.unusable  # compiled, as a first event would
        await store.refresh("shelf.moved")
        assert store.catalog.get("shelf.moved", "1.0") is created
        assert created.json_schema == json.loads(text)
    finally:
        await pool.close()
