"""PostgreSQL dropping every connection (a restart, a failover, an operator's
``pg_terminate_backend``) while all four services work: none of them crashes, a call
that fails says UNAVAILABLE, and everything accepted arrives once PostgreSQL answers.

The storm terminates every other session of the test's database every few tens of
milliseconds, so connections die in every state: idle in a pool, mid-query, inside a
transaction, while a pool resets them."""

from __future__ import annotations

import asyncio
import collections
import json
import uuid

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from herald.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc

from herald.runtime.server import Running
from tests.conftest import Infra
from tests.integration.conftest import ACME_KEY
from tests.integration.reconcile_flow import event, open_flow, order, unique
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


async def serving(port: int) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def test_connections_dropped_mid_work_crash_nothing_and_lose_nothing(
    infra: Infra, database_url: str, topic: str
) -> None:
    async with (
        running_services(infra, database_url, topic) as services,
        open_flow(infra, database_url, services.ingest) as reconcile,
        Receiver() as receiver,
        grpc.aio.insecure_channel(f"127.0.0.1:{services.webhooks.port}") as hooks_channel,
    ):
        hooks = webhooks_pb2_grpc.WebhookServiceStub(hooks_channel)
        await hooks.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(
                webhook=webhooks_pb2.Webhook(
                    name="storm", url=receiver.url(), event_types=["message.created"]
                )
            ),
            metadata=KEY,
        )
        ev = unique("ev")
        await reconcile.send(event(ev))
        await asyncio.sleep(1.0)  # dispatch has seen the webhook
        every: list[Running] = [
            services.ingest.running,
            services.webhooks,
            services.dispatch,
            *reconcile.running,
        ]

        codes: collections.Counter[str] = collections.Counter()
        event_ids = [str(uuid.uuid4()) for _ in range(EVENTS)]
        order_ids = [unique("or") for _ in range(ORDERS)]

        async def publish_all() -> None:
            for event_id in event_ids:
                await publish_until_accepted(services.ingest.stub, event_id, codes)
                await asyncio.sleep(STORM_SECONDS / EVENTS / 2)

        async def send_orders() -> None:
            for order_id in order_ids:
                await reconcile.send(order(order_id, ev, {f"{order_id}-t": 100_000}))
                await asyncio.sleep(STORM_SECONDS / ORDERS / 2)

        killed, _, _ = await asyncio.gather(
            storm(database_url, STORM_SECONDS), publish_all(), send_orders()
        )
        assert killed > 50, "the storm hit the services' connections"
        crashed = [r.app.name for r in every if r.crashed.done()]
        assert not crashed, f"crashed: {crashed}"
        assert set(codes) <= {"UNAVAILABLE"}, f"failed calls said {dict(codes)}"

        # Everything accepted arrives: each event delivered to the webhook, each order
        # on Vibeapp's topic.
        for _ in range(300):
            delivered = {json.loads(r.body)["id"] for r in receiver.received()}
            if delivered >= set(event_ids):
                break
            await asyncio.sleep(0.2)
        assert delivered >= set(event_ids), f"{len(set(event_ids) - delivered)} not delivered"
        sent = await reconcile.outputs("order", ORDERS, timeout=60)
        assert {r.key.decode() for r in sent} == set(order_ids)
        assert {headers(r)["content-type"] for r in sent} == {"application/x-protobuf"}
        for running in every:
            for _ in range(50):
                if await serving(running.port):
                    break
                await asyncio.sleep(0.2)
            assert await serving(running.port), f"{running.app.name} serving again"
        assert not [r.app.name for r in every if r.crashed.done()]
