"""Outages while all four services work: PostgreSQL dropping every connection (a
restart, a failover, an operator's ``pg_terminate_backend``) and Kafka going away for a
while. None of the services crashes, a call that fails says UNAVAILABLE, health says
NOT_SERVING while a dependency is away, and everything accepted arrives once it is back.

The storm terminates every other session of the test's database every few tens of
milliseconds, so connections die in every state: idle in a pool, mid-query, inside a
transaction, while a pool resets them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from herald.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc

from herald.runtime.server import Running
from tests.conftest import Infra
from tests.integration.conftest import ACME_KEY, IngestUnderTest
from tests.integration.reconcile_flow import ReconcileFlow, event, open_flow, order, unique
from tests.integration.test_dispatch import running_services
from tests.kafka_helpers import headers
from tests.receiver import Receiver

pytestmark = pytest.mark.integration
KEY = (("authorization", f"Bearer {ACME_KEY}"),)
STORM_SECONDS = 4.0
EVERY_SECONDS = 0.03
EVENTS = ORDERS = 40


async def storm(database_url: str, seconds: float) -> int:
    """Terminates every other session of the database, again and again; how many."""
    admin = await asyncpg.connect(database_url)
    killed = 0
    try:
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            killed += await admin.fetchval(
                """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
                   FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()"""
            )
            await asyncio.sleep(EVERY_SECONDS)
    finally:
        await admin.close()
    return killed


async def publish_until_accepted(
    stub: ingest_pb2_grpc.IngestServiceAsyncStub, event_id: str, codes: collections.Counter[str]
) -> None:
    """Publishes one message.created event, again while it fails (with the same id and
    idempotency key, as a client should); ``codes`` counts the failures' codes."""
    doc = {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:test",
        "type": "message.created",
        "time": "2026-11-23T10:00:00Z",
        "data": {"id": event_id, "content": "hi"},
    }
    request = ingest_pb2.PublishRequest(json=json.dumps(doc))
    for _ in range(200):
        try:
            await stub.Publish(request, metadata=(("idempotency-key", event_id),), timeout=10)
            return
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
            await asyncio.sleep(0.05)
    raise AssertionError(f"event {event_id} never accepted")


async def health(port: int) -> str:
    """What the service's gRPC health check says."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


@dataclass
class AllFour:
    """Ingest, dispatch, webhooks (a webhook for message.created pointing at
    ``receiver``) and reconcile (event ``event_id`` known), started in this process."""

    ingest: IngestUnderTest
    reconcile: ReconcileFlow
    receiver: Receiver
    event_id: str
    every: list[Running]

    def crashed(self) -> list[str]:
        return [r.app.name for r in self.every if r.crashed.done()]

    async def all_serving(self, timeout: float = 10) -> list[str]:
        """The services not SERVING after ``timeout`` seconds."""
        for _ in range(int(timeout / 0.2)):
            states = {r.app.name: await health(r.port) for r in self.every}
            if set(states.values()) == {"SERVING"}:
                break
            await asyncio.sleep(0.2)
        return [name for name, state in states.items() if state != "SERVING"]

    async def delivered(self, event_ids: list[str], timeout: float = 60) -> set[str]:
        """The events of ``event_ids`` not delivered to the webhook within ``timeout``."""
        missing = set(event_ids)
        for _ in range(int(timeout / 0.2)):
            missing = set(event_ids) - {json.loads(r.body)["id"] for r in self.receiver.received()}
            if not missing:
                break
            await asyncio.sleep(0.2)
        return missing

    async def send_orders(self, order_ids: list[str], pause: float = 0.0) -> None:
        for order_id in order_ids:
            await self.reconcile.send(order(order_id, self.event_id, {f"{order_id}-t": 100_000}))
            await asyncio.sleep(pause)

    async def orders_sent(self, order_ids: list[str]) -> None:
        """Every order of ``order_ids`` on Vibeapp's topic, and no other."""
        sent = await self.reconcile.outputs("order", len(order_ids), timeout=60)
        assert {r.key.decode() for r in sent} == set(order_ids)
        assert {headers(r)["content-type"] for r in sent} == {"application/x-protobuf"}


@contextlib.asynccontextmanager
async def all_four(infra: Infra, database_url: str, topic: str) -> AsyncIterator[AllFour]:
    # Dispatch retries a target that Kafka did not take for ~30 s (the default spans a
    # day; the tests' usual 0.3 s would dead-letter what an outage of seconds delays).
    async with (
        running_services(infra, database_url, topic, retry_schedule="1s,2s,4s,8s,15s") as services,
        open_flow(infra, database_url, services.ingest) as reconcile,
        Receiver() as receiver,
        grpc.aio.insecure_channel(f"127.0.0.1:{services.webhooks.port}") as hooks_channel,
    ):
        await webhooks_pb2_grpc.WebhookServiceStub(hooks_channel).CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(
                webhook=webhooks_pb2.Webhook(
                    name="outage", url=receiver.url(), event_types=["message.created"]
                )
            ),
            metadata=KEY,
        )
        event_id = unique("ev")
        await reconcile.send(event(event_id))
        await asyncio.sleep(1.0)  # dispatch has seen the webhook
        every = [services.ingest.running, services.webhooks, services.dispatch, *reconcile.running]
        yield AllFour(services.ingest, reconcile, receiver, event_id, every)


async def test_connections_dropped_mid_work_crash_nothing_and_lose_nothing(
    infra: Infra, database_url: str, topic: str
) -> None:
    async with all_four(infra, database_url, topic) as four:
        codes: collections.Counter[str] = collections.Counter()
        event_ids = [str(uuid.uuid4()) for _ in range(EVENTS)]
        order_ids = [unique("or") for _ in range(ORDERS)]

        async def publish_all() -> None:
            for event_id in event_ids:
                await publish_until_accepted(four.ingest.stub, event_id, codes)
                await asyncio.sleep(STORM_SECONDS / EVENTS / 2)

        killed, _, _ = await asyncio.gather(
            storm(database_url, STORM_SECONDS),
            publish_all(),
            four.send_orders(order_ids, STORM_SECONDS / ORDERS / 2),
        )
        assert killed > 50, "the storm hit the services' connections"
        assert not four.crashed()
        assert set(codes) <= {"UNAVAILABLE"}, f"failed calls said {dict(codes)}"

        assert not await four.delivered(event_ids), "every event reached the webhook"
        await four.orders_sent(order_ids)
        assert not await four.all_serving()
        assert not four.crashed()


async def test_kafka_restarted_under_load_crashes_nothing_and_loses_nothing(
    infra: Infra, database_url: str, topic: str
) -> None:
    """Also the case of aiokafka's idempotent producer stuck on OutOfOrderSequenceNumber
    after the restart (runtime.kafka_producer): it is replaced, and nothing is lost."""
    if infra.kafka is None:
        pytest.fail("this test stops Kafka: run it against the Kafka the session starts")
    async with all_four(infra, database_url, topic) as four:
        event_ids = [str(uuid.uuid4()) for _ in range(200)]
        order_ids = [unique("or") for _ in range(100)]
        codes: collections.Counter[str] = collections.Counter()

        async def publish_all() -> None:
            for event_id in event_ids:
                await publish_until_accepted(four.ingest.stub, event_id, codes)
                await asyncio.sleep(0.01)

        load = asyncio.gather(publish_all(), four.send_orders(order_ids[:50], 0.01))
        try:
            await asyncio.sleep(1.0)  # records on their way through every service
            await asyncio.to_thread(infra.kafka.stop)
            await asyncio.sleep(3)  # every consumer, producer and relay meets the outage
            for running in four.every:
                await running.monitor.check_once()
            states = {r.app.name: await health(r.port) for r in four.every}
            assert set(states.values()) == {"NOT_SERVING"}, states
            assert not four.crashed()
        finally:
            await asyncio.to_thread(infra.kafka.start)
        await load  # ingest accepted every event while Kafka was away
        assert not codes, f"failed Publish calls: {dict(codes)}"
        await four.send_orders(order_ids[50:])

        assert not await four.delivered(event_ids), "every event reached the webhook"
        await four.orders_sent(order_ids)
        assert not await four.all_serving(timeout=30)
        assert not four.crashed()
