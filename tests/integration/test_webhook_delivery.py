"""The delivery engine end to end: jobs on Kafka, signed POSTs to a real receiver on
loopback, retries scheduled in PostgreSQL, dead letters, several workers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
import structlog
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_status import rpc_status
from herald.webhooks.v1 import delivery_pb2, webhooks_pb2, webhooks_pb2_grpc
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook as StandardWebhook
from structlog.testing import LogCapture

from herald.runtime import kafka, server
from herald.runtime.errors import bad_request_of
from herald.runtime.server import Running, start
from herald.runtime.settings import KafkaSettings
from herald.services.ingest.app import build as build_ingest
from herald.services.webhooks import app, engine, slowness
from herald.services.webhooks.app import build
from herald.services.webhooks.settings import WebhooksSettings
from herald.services.webhooks.store import Q
from tests.conftest import Infra
from tests.integration.conftest import (
    GLOBEX_KEY,
    IngestUnderTest,
    start_ingest,
    webhooks_settings,
)
from tests.kafka_helpers import headers, read_matching, read_topic
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration
KEY = (("authorization", "Bearer hk_test_acme_0123456789abcdef"),)
FAST = webhooks_pb2.RetryPolicy(max_retries=3, backoff_multiplier=2)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Stack:
    ingest: IngestUnderTest
    webhooks: list[Running]
    stub: webhooks_pb2_grpc.WebhookServiceAsyncStub
    channel: grpc.aio.Channel
    settings: WebhooksSettings
    infra: Infra
    database_url: str

    async def produce(self, jobs: list[bytes]) -> None:
        producer = kafka.make_producer(self.infra.kafka_settings())
        await producer.start()
        try:
            for job in jobs:
                await producer.send(self.settings.deliveries_topic, job)
            await producer.flush()
        finally:
            await producer.stop()

    async def restart(self, settings: WebhooksSettings) -> None:
        """One webhooks instance again, with ``settings``; the stub follows it."""
        for running in self.webhooks:
            await running.stop(1)
        self.webhooks = [await start_webhooks(settings, self.infra)]
        await self.channel.close()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.webhooks[0].port}")
        self.stub = webhooks_pb2_grpc.WebhookServiceStub(self.channel)

    async def hook(self, url: str, **fields: Any) -> webhooks_pb2.CreateWebhookResponse:
        policy = fields.pop("retry_policy", FAST)
        delay = fields.pop("initial_delay", 0.2)
        policy.initial_delay.FromMilliseconds(round(delay * 1000))
        policy.max_delay.FromSeconds(30)
        return await self.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(
                webhook=webhooks_pb2.Webhook(
                    name="test",
                    url=url,
                    event_types=["message.created"],
                    retry_policy=policy,
                    **fields,
                )
            ),
            metadata=KEY,
        )


async def start_webhooks(settings: WebhooksSettings, infra: Infra) -> Running:
    return await start(await build(settings, infra.kafka_settings()), "127.0.0.1:0")


@pytest.fixture
async def stack(infra: Infra, database_url: str, topic: str) -> AsyncIterator[Stack]:
    ingest = await start_ingest(infra, database_url, topic, relay_enabled=False)
    settings = webhooks_settings(database_url, ingest.running.port)
    running = await start_webhooks(settings, infra)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stack = Stack(
        ingest,
        [running],
        webhooks_pb2_grpc.WebhookServiceStub(channel),
        channel,
        settings,
        infra,
        database_url,
    )
    yield stack
    await channel.close()
    for r in stack.webhooks:
        await r.stop(1)
    await ingest.stop()


def job(
    webhook_id: str,
    data: object | None = None,
    event_id: str | None = None,
    context: dict[str, str] | None = None,
) -> bytes:
    event_id = event_id or str(uuid.uuid4())
    when = Timestamp()
    when.FromJsonString("2024-01-01T12:00:00Z")
    return delivery_pb2.DeliveryJob(
        job_id=f"{event_id}/{webhook_id}",
        webhook_id=webhook_id,
        event_id=event_id,
        event_source="urn:katya",
        event_type="message.created",
        event_time=when,
        data=json.dumps(data or {"id": "msg_456", "content": "Привет, мир!"}).encode(),
        context=context or {"x-request-id": "req-9", "traceparent": TRACEPARENT},
    ).SerializeToString()


def seed_verify(payload: str, signature: str, secret: str) -> bool:
    """The Katya seed's own Python function, verbatim."""
    expected_signature = hmac.new(
        secret.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256
    ).hexdigest()
    provided_signature = signature.replace("sha256=", "")
    return hmac.compare_digest(expected_signature, provided_signature)


async def ingest_events(database_url: str, event_type: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT data FROM ingest.events WHERE type = $1", event_type)
    finally:
        await conn.close()
    return [json.loads(bytes(r["data"])) for r in rows]


async def announced_trace(
    settings: KafkaSettings, topic: str, event_type: str, timeout: float = 30
) -> str:
    """The trace id of the record ingest made of the (one) ``event_type`` alert on
    ``topic``: what a tracing backend groups it under."""
    [record] = await read_matching(
        settings, topic, lambda r: headers(r).get("ce_type") == event_type, 1, timeout=timeout
    )
    return headers(record)["traceparent"].split("-")[1]


async def announced(
    database_url: str, event_type: str, count: int = 1, timeout: float = 10
) -> list[dict[str, Any]]:
    """The events of ``event_type`` ingest has stored, once there are ``count``: an
    announcement follows the effect it announces (a stored dead letter, a disabled
    webhook), so a test that has seen the effect waits for it."""
    deadline = time.monotonic() + timeout
    while len(found := await ingest_events(database_url, event_type)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} of {count} {event_type} within {timeout} s")
        await asyncio.sleep(0.1)
    return found


async def test_a_job_is_delivered_signed_as_the_seed_and_standard_webhooks_say(
    stack: Stack,
) -> None:
    async with Receiver() as receiver:
        created = await stack.hook(receiver.url(), headers={"X-Tenant-Token": "t-1"})
        await stack.produce([job(created.webhook.id, event_id="evt_123")])
        [request] = await receiver.wait_for(1)
    h = request.headers
    body = json.loads(request.body)
    assert list(body) == ["id", "type", "createdAt", "data"]
    assert body["id"] == "evt_123"
    assert body["createdAt"] == "2024-01-01T12:00:00Z"
    assert body["data"]["content"] == "Привет, мир!"
    assert h["content-type"] == "application/json"
    assert h["user-agent"].startswith("Herald-Webhooks/")
    assert h["x-herald-event"] == "message.created"
    assert h["x-tenant-token"] == "t-1"
    assert h["x-request-id"] == "req-9"
    # the event's trace continues into the POST, under the attempt's event.consume span
    version, trace_id, span_id, flags = h["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACEPARENT.split("-")[1], "01")
    assert span_id != TRACEPARENT.split("-")[2]
    assert "x-herald-retry-count" not in h
    secret = created.secret
    # the seed's Flask handler: json.dumps(request.get_json()) then its function
    assert seed_verify(json.dumps(json.loads(request.body)), h["x-herald-signature"], secret)
    assert h["x-signature"] == h["x-herald-signature"], "seed 000's name for the HMAC header"
    StandardWebhook(secret).verify(request.body, h)  # raises when it does not verify
    assert h["webhook-id"] == h["x-herald-delivery"]


async def test_a_webhook_cannot_set_the_events_context_headers(stack: Stack) -> None:
    """X-Request-Id, traceparent, Idempotency-Key, X-Correlation-Id come from the event.
    A webhook's own was accepted: its X-Request-Id never reached the receiver (every event
    has one), its Idempotency-Key did, on every event published without a key, so a
    receiver deduplicating by it dropped them. Now refused; one stored before is not sent."""
    context = {"idempotency-key": "Idempotency-Key", "x-correlation-id": "X-Correlation-Id"}
    names = ["X-Request-Id", "traceparent", *context.values()]
    async with Receiver() as receiver:
        refused = await fails_with_violations(
            stack.hook(receiver.url(), headers=dict.fromkeys(names, "mine"))
        )
        assert refused == {f"webhook.headers[{n}]" for n in names}
        created = await stack.hook(receiver.url(), headers={"X-Tenant-Token": "t-1"})
        conn = await asyncpg.connect(stack.database_url)  # as stored before the rule
        try:
            await conn.execute(
                "UPDATE webhooks.webhooks SET headers = $2::jsonb WHERE id = $1",
                uuid.UUID(created.webhook.id),
                json.dumps({"X-Tenant-Token": "t-1", **dict.fromkeys(names, "mine")}),
            )
        finally:
            await conn.close()
        await stack.produce([job(created.webhook.id)])  # no key, no correlation id
        [request] = await receiver.wait_for(1)
    h = request.headers
    assert h["x-tenant-token"] == "t-1"
    assert h["x-request-id"] == "req-9"
    assert h["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]
    assert [n for n in context if n in h] == []


async def test_a_header_stored_before_it_became_herald_s_does_not_block_an_update(
    stack: Stack,
) -> None:
    """A webhook stored with X-Signature (Herald's since the events seed's audit) could
    not be re-activated: UpdateWebhook {active} answered INVALID_ARGUMENT naming a header
    the caller had not touched. The header is dropped instead (it was never sent)."""
    created = await stack.hook("https://example.com/hook", headers={"X-Tenant-Token": "t-1"})
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(
            "UPDATE webhooks.webhooks SET headers = $2::jsonb, active = false WHERE id = $1",
            uuid.UUID(created.webhook.id),
            json.dumps({"X-Tenant-Token": "t-1", "X-Signature": "old", "X-Request-Id": "r"}),
        )
    finally:
        await conn.close()
    updated = await stack.stub.UpdateWebhook(
        webhooks_pb2.UpdateWebhookRequest(
            webhook=webhooks_pb2.Webhook(id=created.webhook.id, active=True),
            update_mask=FieldMask(paths=["active"]),
        ),
        metadata=KEY,
    )
    assert updated.webhook.active
    assert dict(updated.webhook.headers) == {"X-Tenant-Token": "t-1"}


async def test_the_due_queue_gauges_leave_out_disabled_webhooks(stack: Stack) -> None:
    """webhook_due_deliveries / _lag_seconds counted the pending deliveries of a disabled
    webhook, which no claim takes: the lag grew without end while nothing was behind."""
    created = await stack.hook("https://example.com/hook")
    await stack.stub.UpdateWebhook(
        webhooks_pb2.UpdateWebhookRequest(
            webhook=webhooks_pb2.Webhook(id=created.webhook.id, active=False),
            update_mask=FieldMask(paths=["active"]),
        ),
        metadata=KEY,
    )
    await stack.produce([job(created.webhook.id)])
    conn = await asyncpg.connect(stack.database_url)
    try:
        for _ in range(100):  # intake stores it, pending
            if await conn.fetchval("SELECT count(*) FROM webhooks.deliveries"):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)  # due
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM webhooks.deliveries WHERE status = 'pending'"
                " AND next_attempt_at <= now()"
            )
            == 1
        )
        due = await conn.fetchrow(Q.due_depth)
    finally:
        await conn.close()
    assert due is not None
    assert (due["depth"], due["lag"]) == (0, 0)


async def test_a_katya_deployment_sends_the_seeds_header_names(stack: Stack) -> None:
    """WEBHOOKS_HEADER_PREFIX=X-Katya and WEBHOOKS_USER_AGENT=Katya-Webhooks/1.0: a
    receiver written from the seed finds X-Katya-Signature, -Event, -Delivery,
    -Timestamp and, on a retry, X-Katya-Retry-*; nothing is left under X-Herald-."""
    katya = {"webhooks_header_prefix": "X-Katya", "webhooks_user_agent": "Katya-Webhooks/1.0"}
    await stack.restart(stack.settings.model_copy(update=katya))
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(500, b"boom"))
        secret = "my_webhook_secret"
        created = await stack.stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(
                webhook=webhooks_pb2.Webhook(
                    name="My Webhook", url=receiver.url(), event_types=["message.created"]
                ),
                secret=secret,
            ),
            metadata=KEY,
        )
        await stack.produce([job(created.webhook.id)])
        first, retry = await receiver.wait_for(2, timeout=15)
        refused = await fails_with_violations(
            stack.stub.CreateWebhook(
                webhooks_pb2.CreateWebhookRequest(
                    webhook=webhooks_pb2.Webhook(
                        name="x",
                        url=receiver.url(),
                        event_types=["message.created"],
                        headers={"x-katya-event": "forged"},
                    )
                ),
                metadata=KEY,
            )
        )
    assert refused == {"webhook.headers[x-katya-event]"}
    # UpdateWebhook checked against X-Herald whatever the setting said, and took it.
    assert await fails_with_violations(
        stack.stub.UpdateWebhook(
            webhooks_pb2.UpdateWebhookRequest(
                webhook=webhooks_pb2.Webhook(
                    id=created.webhook.id, headers={"X-Katya-Signature": "forged"}
                ),
                update_mask=FieldMask(paths=["headers"]),
            ),
            metadata=KEY,
        )
    ) == {"webhook.headers[X-Katya-Signature]"}
    for request in (first, retry):
        h = request.headers
        assert h["user-agent"] == "Katya-Webhooks/1.0"
        assert h["x-katya-event"] == "message.created"
        assert h["x-katya-delivery"] == h["webhook-id"]
        assert abs(int(h["x-katya-timestamp"]) - time.time()) <= 300  # the seed's replay check
        payload = json.dumps(json.loads(request.body))  # the seed's Flask handler
        assert seed_verify(payload, h["x-katya-signature"], secret)
        assert not [name for name in h if name.startswith("x-herald-")]
    assert "x-katya-retry-count" not in first.headers
    assert retry.headers["x-katya-retry-count"] == "1"
    assert retry.headers["x-katya-retry-reason"] == "http_5xx"
    assert retry.headers["x-katya-retry-after"] in ("1", "2")  # 1 s ±20 %, rounded up


async def test_fails_twice_then_succeeds_with_retry_headers_and_timing(stack: Stack) -> None:
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(500, b"boom"), Reply(503, b"later"))
        created = await stack.hook(receiver.url())
        await stack.produce([job(created.webhook.id)])
        first, second, third = await receiver.wait_for(3, timeout=15)
    assert "x-herald-retry-count" not in first.headers
    assert second.headers["x-herald-retry-count"] == "1"
    assert second.headers["x-herald-retry-reason"] == "http_5xx"
    assert third.headers["x-herald-retry-count"] == "2"
    assert 0.16 * 0.8 <= second.at - first.at <= 0.24 * 1.2 + 0.5
    assert 0.32 <= third.at - second.at <= 0.48 + 0.5
    # the 0.32-0.48 s it waited, in whole seconds rounded up, as the seed writes it ("4")
    assert third.headers["x-herald-retry-after"] == "1"
    assert first.headers["x-herald-delivery"] == third.headers["x-herald-delivery"]
    deliveries = await stack.stub.GetWebhook(
        webhooks_pb2.GetWebhookRequest(id=created.webhook.id), metadata=KEY
    )
    assert deliveries.webhook.HasField("last_delivery_time")


async def test_429_retry_after_is_honoured(stack: Stack) -> None:
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(429, b"slow down", {"Retry-After": "1"}))
        created = await stack.hook(receiver.url(), initial_delay=0.1)
        await stack.produce([job(created.webhook.id)])
        first, second = await receiver.wait_for(2, timeout=10)
    assert second.at - first.at >= 0.95
    assert second.headers["x-herald-retry-reason"] == "http_429"
    assert second.headers["x-herald-retry-after"] == "1"


async def test_retry_after_counts_from_the_end_of_a_slow_response(stack: Stack) -> None:
    await stack.restart(stack.settings.model_copy(update={"delivery_timeout_seconds": 5.0}))
    async with Receiver() as receiver:
        slow = Reply(503, b"busy", {"Retry-After": "2"}, delay=2.5)
        receiver.script("/hook", slow)
        created = await stack.hook(receiver.url(), initial_delay=0.1)
        await stack.produce([job(created.webhook.id)])
        first, second = await receiver.wait_for(2, timeout=15)
    # The first response ended 2.5 s after its request arrived; the retry comes 2 s
    # after that, not 2 s after the attempt started (which was already past).
    assert second.at - (first.at + slow.delay) >= 1.95
    assert second.headers["x-herald-retry-after"] == "2"


async def test_timeout_then_success(stack: Stack) -> None:
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(200, delay=2.5))  # past the 1 s timeout
        created = await stack.hook(receiver.url(), initial_delay=0.1)
        await stack.produce([job(created.webhook.id)])
        requests = await receiver.wait_for(2, timeout=10)
    assert requests[1].headers["x-herald-retry-reason"] == "timeout"


async def test_exhausted_deliveries_are_dead_lettered_and_announced(stack: Stack) -> None:
    async with Receiver() as receiver:
        receiver.script("/hook", *[Reply(500)] * 10)
        policy = webhooks_pb2.RetryPolicy(max_retries=2, backoff_multiplier=1)
        created = await stack.hook(receiver.url(), retry_policy=policy, initial_delay=0.1)
        await stack.produce([job(created.webhook.id, event_id="evt-dead")])
        requests = await receiver.wait_for(3, timeout=10)
        await asyncio.sleep(0.5)
        assert len(receiver.received()) == 3, "1 attempt + 2 retries, then no more"
    [record] = await read_topic(stack.infra.kafka_settings(), stack.settings.dlq_topic, 1)
    h = headers(record)
    assert h["dlq-reason"] == "retries exhausted: http_5xx"
    assert h["dlq-delivery-id"] == requests[0].headers["x-herald-delivery"]
    assert h["x-request-id"] == "req-9", "the event's context, as its POSTs carried it"
    assert h["traceparent"] == TRACEPARENT, "the job's trace context, as dispatch sent it"
    posted = [r.headers["traceparent"] for r in requests]
    assert {p.split("-")[1] for p in posted} == {TRACEPARENT.split("-")[1]}
    assert len(set(posted)) == 3, "each attempt is a span of its own"
    assert json.loads(record.value)["id"] == "evt-dead"
    alerts = await announced(stack.database_url, "herald.webhook.delivery_exhausted")
    assert alerts[0]["event_id"] == "evt-dead"
    assert alerts[0]["attempts"] == 3


async def test_a_resent_delivery_that_runs_out_again_is_announced_again(stack: Stack) -> None:
    async with Receiver() as receiver:
        receiver.script("/hook", *[Reply(500)] * 10)
        policy = webhooks_pb2.RetryPolicy(max_retries=0)
        created = await stack.hook(receiver.url(), retry_policy=policy)
        await stack.produce([job(created.webhook.id, event_id="evt-dead-twice")])
        [first] = await receiver.wait_for(1, timeout=10)
        [alert] = await announced(stack.database_url, "herald.webhook.delivery_exhausted")
        assert alert["attempts"] == 1
        await stack.stub.ResendDelivery(
            webhooks_pb2.ResendDeliveryRequest(delivery_id=first.headers["x-herald-delivery"]),
            metadata=KEY,
        )
        await receiver.wait_for(2, timeout=10)
        alerts = await announced(stack.database_url, "herald.webhook.delivery_exhausted", 2)
    assert sorted(a["attempts"] for a in alerts) == [1, 2]
    assert {a["delivery_id"] for a in alerts} == {first.headers["x-herald-delivery"]}


async def test_a_fixed_retry_schedule_is_followed_then_the_dead_letter_says_why(
    stack: Stack,
) -> None:
    """Seed 001's shape (10 s → 30 s → 2 min → 10 min → DLQ on 429/503), scaled down:
    each retry after exactly its delay (no jitter), then the DLQ."""
    async with Receiver() as receiver:
        receiver.script("/hook", *[Reply(503)] * 3, Reply(429))
        delays = [Duration(nanos=300_000_000), Duration(seconds=1), Duration(nanos=500_000_000)]
        policy = webhooks_pb2.RetryPolicy(delays=delays)
        created = await stack.hook(receiver.url(), retry_policy=policy)
        assert created.webhook.retry_policy.max_retries == 3
        await stack.produce([job(created.webhook.id)])
        requests = await receiver.wait_for(4, timeout=15)
        await asyncio.sleep(0.8)
        assert len(receiver.received()) == 4, "1 attempt + 3 retries, then no more"
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    for gap, delay in zip(gaps, (0.3, 1.0, 0.5), strict=True):
        assert delay <= gap <= delay + 0.4, gaps
    assert [r.headers.get("x-herald-retry-after") for r in requests[1:]] == [
        "1",
        "1",
        "1",
    ]  # whole seconds, rounded up
    [record] = await read_topic(stack.infra.kafka_settings(), stack.settings.dlq_topic, 1)
    assert headers(record)["dlq-reason"] == "retries exhausted: http_429"


async def test_a_status_the_webhook_does_not_retry_is_dead_lettered_at_once(
    stack: Stack,
) -> None:
    """Seed 001: Bitrix24's 4xx carry errors[] the client must correct, and only 429/503
    are retried: a 400 went through every retry before its dead letter."""
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(503), Reply(400, b'{"errors": [{"field": "qty"}]}'))
        policy = webhooks_pb2.RetryPolicy(max_retries=5, retry_statuses=[429, 503])
        created = await stack.hook(receiver.url(), retry_policy=policy, initial_delay=0.1)
        await stack.produce([job(created.webhook.id)])
        await receiver.wait_for(2, timeout=10)
        [record] = await read_topic(stack.infra.kafka_settings(), stack.settings.dlq_topic, 1)
        assert len(receiver.received()) == 2, "the 503 retried, the 400 not"
    assert headers(record)["dlq-reason"] == (
        "not retried: http_400 is not one of the webhook's retry_statuses"
    )


async def test_retries_and_the_dead_letter_move_the_seeds_event_metrics(stack: Stack) -> None:
    """events_retry_total and events_dlq_total (seed 000) count a delivery's retries and
    its dead letter, as they count the relay's and dispatch's."""
    retried, dead = {"stage": "webhook"}, {"reason": "delivery_exhausted"}
    retries_before = REGISTRY.get_sample_value("events_retry_total", retried) or 0.0
    dead_before = REGISTRY.get_sample_value("events_dlq_total", dead) or 0.0
    async with Receiver() as receiver:
        receiver.script("/hook", *[Reply(503)] * 10)
        policy = webhooks_pb2.RetryPolicy(max_retries=2, backoff_multiplier=1)
        created = await stack.hook(receiver.url(), retry_policy=policy, initial_delay=0.1)
        await stack.produce([job(created.webhook.id)])
        await receiver.wait_for(3, timeout=10)
    await read_topic(stack.infra.kafka_settings(), stack.settings.dlq_topic, 1)
    assert REGISTRY.get_sample_value("events_retry_total", retried) == retries_before + 2
    assert REGISTRY.get_sample_value("events_dlq_total", dead) == dead_before + 1


async def test_a_dead_letter_decided_while_kafka_is_away_survives_a_restart(
    stack: Stack,
) -> None:
    # The DLQ record was sent after the outcome was written, for up to 30 s, and the alert
    # stored only after that: with Kafka away, the alert waited 30 s, and a stop in that
    # window lost both (nothing stored said a record was owed)
    if stack.infra.kafka is None:
        pytest.fail("this test stops Kafka: run it against the Kafka the session starts")
    async with Receiver() as receiver:
        receiver.script("/hook", *[Reply(500)] * 10)
        policy = webhooks_pb2.RetryPolicy(max_retries=1, backoff_multiplier=1)
        created = await stack.hook(receiver.url(), retry_policy=policy, initial_delay=3)
        await stack.produce([job(created.webhook.id, event_id="evt-kafka-away")])
        await receiver.wait_for(1, timeout=10)
        await asyncio.to_thread(stack.infra.kafka.stop)
        try:
            await receiver.wait_for(2, timeout=10)  # the retry: exhausted, Kafka away
            alerts = await announced(
                stack.database_url, "herald.webhook.delivery_exhausted", timeout=10
            )
            assert [a["event_id"] for a in alerts] == ["evt-kafka-away"]
            for running in stack.webhooks:
                await running.stop(1)
            stack.webhooks = []
        finally:
            await asyncio.to_thread(stack.infra.kafka.start)
        await stack.restart(stack.settings)
    [record] = await read_topic(stack.infra.kafka_settings(), stack.settings.dlq_topic, 1, 60)
    assert headers(record)["dlq-reason"] == "retries exhausted: http_5xx"
    assert json.loads(record.value)["id"] == "evt-kafka-away"
    conn = await asyncpg.connect(stack.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM webhooks.dlq_outbox") == 0, "sent"
    finally:
        await conn.close()


async def test_an_alert_raised_while_ingest_is_away_is_published_when_it_is_back(
    stack: Stack,
) -> None:
    # The alert was published with 5 tries over ~6 s, then dropped with a log line: a
    # rolling restart of ingest lost every alert raised meanwhile
    port, settings = stack.ingest.running.port, stack.ingest.settings
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(500))
        policy = webhooks_pb2.RetryPolicy(max_retries=0)
        created = await stack.hook(receiver.url(), retry_policy=policy)
        await stack.ingest.stop()
        await stack.produce([job(created.webhook.id, event_id="evt-away")])
        await receiver.wait_for(1, timeout=10)
    await asyncio.sleep(8)  # past the old retries
    app = await build_ingest(settings, stack.infra.kafka_settings())
    back = await start(app, f"127.0.0.1:{port}")
    try:
        alerts = await announced(
            stack.database_url, "herald.webhook.delivery_exhausted", timeout=60
        )
        assert [a["event_id"] for a in alerts] == ["evt-away"]
        conn = await asyncpg.connect(stack.database_url)
        try:
            left = await conn.fetchval("SELECT count(*) FROM webhooks.announcements")
        finally:
            await conn.close()
        assert left == 0, "published, then deleted"
    finally:
        await back.stop(1)


async def test_410_gone_disables_the_webhook(stack: Stack) -> None:
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(410, b"gone"))
        created = await stack.hook(receiver.url())
        await stack.produce([job(created.webhook.id)])
        await receiver.wait_for(1)
        for _ in range(50):
            got = await stack.stub.GetWebhook(
                webhooks_pb2.GetWebhookRequest(id=created.webhook.id), metadata=KEY
            )
            if not got.webhook.active:
                break
            await asyncio.sleep(0.1)
        assert not got.webhook.active
        await stack.produce([job(created.webhook.id)])  # after it was disabled
        await asyncio.sleep(1.5)
        assert len(receiver.received()) == 1, "a disabled webhook gets nothing more"
    assert await announced(stack.database_url, "herald.webhook.disabled")


async def test_ssrf_destinations_are_refused_unless_allowed(stack: Stack) -> None:
    strict = stack.settings.model_copy(update={"webhooks_allowed_networks": ""})
    await stack.restart(strict)
    async with Receiver() as receiver:
        created = await stack.hook(
            receiver.url().replace("127.0.0.1", "localhost"),
            retry_policy=webhooks_pb2.RetryPolicy(max_retries=0),
        )
        await stack.produce([job(created.webhook.id)])
        # The restarted service rejoins its consumer group first: wait for the outcome
        # (a fixed 2 s was sometimes not enough under the whole suite's load).
        conn = await asyncpg.connect(stack.database_url)
        try:
            for _ in range(300):
                row = await conn.fetchrow(
                    "SELECT status, last_error FROM webhooks.deliveries WHERE status <> 'pending'"
                )
                if row is not None:
                    break
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        assert receiver.received() == []
    assert row is not None
    assert row["status"] == "failed"
    assert "loopback" in row["last_error"]


async def test_two_workers_never_deliver_the_same_attempt_twice(stack: Stack, infra: Infra) -> None:
    stack.webhooks.append(await start_webhooks(stack.settings, infra))
    async with Receiver() as receiver:
        created = await stack.hook(receiver.url())
        await stack.produce([job(created.webhook.id) for _ in range(200)])
        await receiver.wait_for(200, timeout=30)
        await asyncio.sleep(1.0)
        ids = [r.headers["x-herald-delivery"] for r in receiver.received()]
    assert len(ids) == 200
    assert len(set(ids)) == 200


async def test_a_rebalance_while_a_batch_is_being_stored_loses_nothing_and_crashes_nothing(
    stack: Stack, infra: Infra
) -> None:
    """A replica joins while the first one is storing a batch (held up by a table
    lock): the first one's commit is refused; it carries on, the new owner's repeats
    insert nothing, and every job is delivered once."""
    first = stack.webhooks[0]
    async with Receiver() as receiver:
        created = await stack.hook(receiver.url())
        await stack.produce([job(created.webhook.id) for _ in range(50)])
        await receiver.wait_for(50, timeout=30)
        locker = await asyncpg.connect(stack.database_url)
        try:
            async with locker.transaction():
                await locker.execute("LOCK TABLE webhooks.deliveries IN EXCLUSIVE MODE")
                await stack.produce([job(created.webhook.id) for _ in range(150)])
                await asyncio.sleep(1.0)  # the first replica is inside take(), waiting
                second = await start_webhooks(stack.settings, infra)  # joins: a rebalance
                stack.webhooks.append(second)
                await asyncio.sleep(5.0)  # the group settles while the batch is stuck
        finally:
            await locker.close()
        await stack.produce([job(created.webhook.id) for _ in range(100)])
        await receiver.wait_for(300, timeout=60)
        await asyncio.sleep(1.0)
        ids = [r.headers["x-herald-delivery"] for r in receiver.received()]
    assert len(set(ids)) == 300
    assert len(ids) == 300
    for running in (first, second):
        assert not running.crashed.done(), running.crashed.result()


async def test_a_crashed_workers_expired_claim_is_delivered_without_any_wake(
    stack: Stack,
) -> None:
    """A delivery claimed by a worker that died (its lease over) is attempted by a live
    engine that was told nothing: the database is polled even while nothing is due."""
    async with Receiver() as receiver:
        created = await stack.hook(receiver.url())
        await stack.produce([job(created.webhook.id, event_id="before")])
        await receiver.wait_for(1)  # the engine is running, and now idle
        await asyncio.sleep(1.5)  # its last claims found nothing: it only polls now
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute(
                """INSERT INTO webhooks.deliveries (id, webhook_id, tenant, job_id, event_id,
                       event_type, body, next_attempt_at, claimed_by)
                   SELECT $1, id, tenant, 'orphan', 'orphan', 'message.created',
                          convert_to('{"id":"orphan"}', 'UTF8'), now() - interval '1 second',
                          'worker-that-died'
                   FROM webhooks.webhooks WHERE id = $2""",
                uuid.uuid4(),
                uuid.UUID(created.webhook.id),
            )
        finally:
            await conn.close()
        requests = await receiver.wait_for(2, timeout=10)
    assert json.loads(requests[-1].body) == {"id": "orphan"}


async def test_a_poison_record_is_dead_lettered_and_consumption_goes_on(stack: Stack) -> None:
    async with Receiver() as receiver:
        created = await stack.hook(receiver.url())
        await stack.produce([b"\xff\x00 not a job", job(created.webhook.id, event_id="after")])
        [request] = await receiver.wait_for(1)
    assert json.loads(request.body)["id"] == "after"
    [record] = await read_topic(stack.infra.kafka_settings(), stack.settings.dlq_topic, 1)
    assert "DeliveryJob" in headers(record)["dlq-reason"]
    assert record.value == b"\xff\x00 not a job"


async def test_jobs_postgresql_would_refuse_are_dead_lettered_and_the_rest_delivered(
    stack: Stack,
) -> None:
    # A NUL in a text field (PostgreSQL cannot store it) had crashed the intake, and so
    # the service, on every start; an id beyond the index's size limit fails only in
    # PostgreSQL: its batch is split until that job is alone.
    async with Receiver() as receiver:
        hook = (await stack.hook(receiver.url())).webhook.id
        too_long = os.urandom(4000).hex()  # random: not compressible below the limit
        await stack.produce(
            [
                job(hook, event_id="before"),
                job(hook, event_id="e\x00vil"),
                job(hook, event_id=too_long),
                job(hook, event_id="after"),
            ]
        )
        requests = await receiver.wait_for(2)
        dead = await read_topic(stack.infra.kafka_settings(), stack.settings.dlq_topic, 2)
    assert sorted(json.loads(r.body)["id"] for r in requests) == ["after", "before"]
    reasons = sorted(headers(r)["dlq-reason"] for r in dead)
    assert "NUL" in reasons[0]
    assert reasons[1].startswith("the database refused it")
    assert sorted(delivery_pb2.DeliveryJob.FromString(r.value).event_id for r in dead) == sorted(
        ["e\x00vil", too_long]
    )


async def test_a_response_body_with_a_nul_byte_is_logged(stack: Stack) -> None:
    # The body is kept in the delivery log (PostgreSQL text): a NUL had failed that write,
    # leaving the delivery claimed and attempted again once its lease ran out.
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(200, b"ok\x00"))
        created = await stack.hook(receiver.url())
        await stack.produce([job(created.webhook.id, event_id="nul")])
        await receiver.wait_for(1)
        for _ in range(50):
            log = await stack.stub.ListDeliveries(
                webhooks_pb2.ListDeliveriesRequest(webhook_id=created.webhook.id), metadata=KEY
            )
            if [d.status for d in log.deliveries] == [webhooks_pb2.DELIVERY_STATUS_DELIVERED]:
                break
            await asyncio.sleep(0.1)
    [delivery] = log.deliveries
    assert delivery.status == webhooks_pb2.DELIVERY_STATUS_DELIVERED
    assert delivery.response_body == "ok\ufffd"


async def test_the_delivery_log_line_names_id_type_idempotency_key_and_status_code(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seed 000: publication logs hold the event's id, type, Idempotency-Key and the
    consumer's status_code (and its X-Request-Id, for correlation)."""
    captured = LogCapture()
    monkeypatch.setattr(engine, "log", structlog.wrap_logger(None, processors=[captured]))
    context = {"x-request-id": "req-log", "idempotency-key": "ret_501-created"}
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(503))
        created = await stack.hook(receiver.url(), initial_delay=0.1)
        await stack.produce([job(created.webhook.id, event_id="evt-log", context=context)])
        await receiver.wait_for(2)
        for _ in range(100):
            lines = [e for e in captured.entries if e["event"] == "delivery.attempted"]
            if len(lines) == 2:
                break
            await asyncio.sleep(0.05)
    assert [(e["status_code"], e["outcome"]) for e in lines] == [(503, "retry"), (200, "delivered")]
    for line in lines:
        assert line["event_id"] == "evt-log"
        assert line["type"] == "message.created"
        assert line["idempotency_key"] == "ret_501-created"
        assert line["request_id"] == "req-log"


async def test_deleting_a_webhook_with_an_attempt_in_flight_drops_its_outcome_quietly(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webhook (and with it the delivery) is deleted while the endpoint is still
    answering: the outcome, recorded after, had failed its attempt row's foreign key, and
    the engine logged the attempt as crashed. It is dropped; the engine goes on."""
    captured = LogCapture()
    monkeypatch.setattr(engine, "log", structlog.wrap_logger(None, processors=[captured]))
    async with Receiver() as receiver:
        receiver.script("/slow", Reply(delay=0.5))  # within the 1 s timeout
        doomed = await stack.hook(receiver.url("/slow"))
        other = await stack.hook(receiver.url("/other"))
        await stack.produce([job(doomed.webhook.id)])
        [in_flight] = await receiver.wait_for(1, path="/slow")
        await stack.stub.DeleteWebhook(
            webhooks_pb2.DeleteWebhookRequest(id=doomed.webhook.id), metadata=KEY
        )
        await stack.produce([job(other.webhook.id)])
        [after] = await receiver.wait_for(1, path="/other")

        def over(delivery_id: str) -> bool:
            return any(e.get("delivery_id") == delivery_id for e in captured.entries)

        ids = [r.headers["x-herald-delivery"] for r in (in_flight, after)]
        for _ in range(100):  # both attempts have been recorded, or have crashed
            if all(over(i) for i in ids):
                break
            await asyncio.sleep(0.05)
    events = [(e["event"], e.get("delivery_id")) for e in captured.entries]
    assert ("delivery.attempted", ids[0]) in events
    assert ("delivery.attempted", ids[1]) in events
    assert not [e for e in captured.entries if e["event"] == "engine.attempt_crashed"]
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch("SELECT delivery_id, webhook_id FROM webhooks.attempts")
    finally:
        await conn.close()
    assert [(str(r["delivery_id"]), str(r["webhook_id"])) for r in rows] == [
        (ids[1], other.webhook.id)
    ]


async def test_delivery_log_and_stats_answer_the_seeds_logs_and_stats(stack: Stack) -> None:
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(500, b"x" * 5000), Reply(200, b"OK"))
        policy = webhooks_pb2.RetryPolicy(max_retries=0)
        created = await stack.hook(receiver.url(), retry_policy=policy)
        await stack.produce([job(created.webhook.id, event_id=f"e{i}") for i in range(3)])
        await receiver.wait_for(3)
        for _ in range(50):
            log = await stack.stub.ListDeliveries(
                webhooks_pb2.ListDeliveriesRequest(webhook_id=created.webhook.id), metadata=KEY
            )
            if (
                all(d.status != webhooks_pb2.DELIVERY_STATUS_PENDING for d in log.deliveries)
                and log.total_size == 3
            ):
                break
            await asyncio.sleep(0.1)
    statuses = sorted(d.status for d in log.deliveries)
    assert statuses == [webhooks_pb2.DELIVERY_STATUS_DELIVERED] * 2 + [
        webhooks_pb2.DELIVERY_STATUS_FAILED
    ]
    failed = next(d for d in log.deliveries if d.status == webhooks_pb2.DELIVERY_STATUS_FAILED)
    assert failed.response_status_code == 500
    assert len(failed.response_body) == 1024  # truncated
    ok = next(d for d in log.deliveries if d.status == webhooks_pb2.DELIVERY_STATUS_DELIVERED)
    assert ok.attempts == 1
    assert ok.HasField("deliver_time")
    assert ok.response_body == "OK"

    only_failed = await stack.stub.ListDeliveries(
        webhooks_pb2.ListDeliveriesRequest(
            webhook_id=created.webhook.id, status=webhooks_pb2.DELIVERY_STATUS_FAILED
        ),
        metadata=KEY,
    )
    assert [d.id for d in only_failed.deliveries] == [failed.id]

    stats = await stack.stub.GetDeliveryStats(
        webhooks_pb2.GetDeliveryStatsRequest(webhook_id=created.webhook.id), metadata=KEY
    )
    assert (stats.total, stats.successful, stats.failed) == (3, 2, 1)
    assert stats.success_rate == pytest.approx(2 / 3)
    assert dict(stats.events) == {"message.created": 3}
    assert 0 < stats.response_times.p50_ms <= stats.response_times.p99_ms
    assert stats.response_times.average_ms > 0

    other = await stack.stub.CreateWebhook(
        webhooks_pb2.CreateWebhookRequest(
            webhook=webhooks_pb2.Webhook(
                name="b", url="https://example.com/h", event_types=["message.created"]
            )
        ),
        metadata=(("authorization", "Bearer hk_test_globex_0123456789abcdef"),),
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stack.stub.ListDeliveries(
            webhooks_pb2.ListDeliveriesRequest(webhook_id=other.webhook.id), metadata=KEY
        )
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


async def test_resending_each_failed_delivery_while_paging_skips_none(stack: Stack) -> None:
    """An operator pages through the failed deliveries and resends each one it sees (it
    leaves the filter: pending, then delivered): every failed delivery is on a page,
    once. Pages by offset skipped a page's worth on every page."""
    async with Receiver() as receiver:
        receiver.script("/hook", *[Reply(500)] * 7)  # every first try; the resends pass
        created = await stack.hook(receiver.url(), retry_policy=webhooks_pb2.RetryPolicy())
        webhook_id = created.webhook.id
        await stack.produce([job(webhook_id) for _ in range(7)])
        await receiver.wait_for(7)

        def only_failed(page_size: int, page_token: str = "") -> Any:
            return stack.stub.ListDeliveries(
                webhooks_pb2.ListDeliveriesRequest(
                    webhook_id=webhook_id,
                    status=webhooks_pb2.DELIVERY_STATUS_FAILED,
                    page_size=page_size,
                    page_token=page_token,
                ),
                metadata=KEY,
            )

        for _ in range(100):
            if (await only_failed(100)).total_size == 7:
                break
            await asyncio.sleep(0.1)
        failed = [d.id for d in (await only_failed(100)).deliveries]
        assert len(failed) == 7
        seen, totals, token = [], [], ""
        while True:
            page = await only_failed(2, token)
            totals.append(page.total_size)
            for delivery in page.deliveries:
                seen.append(delivery.id)
                await stack.stub.ResendDelivery(
                    webhooks_pb2.ResendDeliveryRequest(delivery_id=delivery.id), metadata=KEY
                )
            token = page.next_page_token
            if not token:
                break
        assert seen == failed, "newest first, each once"
        assert totals == [7, 5, 3, 1]
        await receiver.wait_for(14)  # each resent once


async def test_a_test_event_carries_the_data_given_as_the_seeds_test_does(stack: Stack) -> None:
    seeds: dict[str, Any] = {  # the seed's /test example, and other kinds of value
        "id": "test_msg_123",
        "roomId": "test_room_456",
        "content": "Test message",
        "createdAt": "2024-01-01T12:00:00Z",
        "count": 3,
        "ratio": 0.5,
        "tags": ["a", True, None],
    }
    data = Struct()
    data.update(seeds)
    async with Receiver() as receiver:
        created = await stack.hook(receiver.url())
        sent = await stack.stub.SendTestEvent(
            webhooks_pb2.SendTestEventRequest(
                webhook_id=created.webhook.id, event_type="message.created", data=data
            ),
            metadata=KEY,
        )
        [request] = await receiver.wait_for(1)
    body = json.loads(request.body)
    assert body["type"] == "message.created"
    assert body["data"] == seeds
    assert re.search(rb'"count": 3[,}]', request.body)  # a whole number, not 3.0
    assert request.headers["x-herald-delivery"] == sent.delivery.id


async def test_the_delivery_log_says_where_a_redirect_pointed(stack: Stack) -> None:
    # A 301 was retried to exhaustion with nothing in the log but the status code
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(301, b"", {"Location": "https://example.com/moved"}))
        created = await stack.hook(receiver.url(), retry_policy=webhooks_pb2.RetryPolicy())
        await stack.produce([job(created.webhook.id)])
        await receiver.wait_for(1)
        for _ in range(50):
            listed = await stack.stub.ListDeliveries(
                webhooks_pb2.ListDeliveriesRequest(webhook_id=created.webhook.id), metadata=KEY
            )
            if listed.deliveries and listed.deliveries[0].attempts:
                break
            await asyncio.sleep(0.1)
    [delivery] = listed.deliveries
    assert delivery.response_status_code == 301
    assert "Location: https://example.com/moved" in delivery.last_error


async def test_a_delivery_being_attempted_is_due_now_not_when_its_claim_lapses(
    stack: Stack,
) -> None:
    # SendTestEvent and the delivery log said "next attempt in ~40 s" (the claim's lease)
    # for a delivery whose attempt was under way
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(delay=2.0))
        created = await stack.hook(receiver.url())
        sent = await stack.stub.SendTestEvent(
            webhooks_pb2.SendTestEventRequest(webhook_id=created.webhook.id), metadata=KEY
        )
        await receiver.wait_for(1)  # the attempt is under way: the receiver holds it
        listed = await stack.stub.ListDeliveries(
            webhooks_pb2.ListDeliveriesRequest(webhook_id=created.webhook.id), metadata=KEY
        )
    soon = datetime.now(UTC) + timedelta(seconds=1)
    for delivery in (sent.delivery, *listed.deliveries):
        assert delivery.status == webhooks_pb2.DELIVERY_STATUS_PENDING
        assert delivery.HasField("next_attempt_time")
        assert delivery.next_attempt_time.ToDatetime(tzinfo=UTC) <= soon

    nan, big = Struct(), Struct()
    nan.fields["x"].number_value = float("nan")
    big.update({"text": "x" * 70_000})
    for bad in (nan, big):
        got = await fails_with_violations(
            stack.stub.SendTestEvent(
                webhooks_pb2.SendTestEventRequest(webhook_id=created.webhook.id, data=bad),
                metadata=KEY,
            )
        )
        assert set(got) == {"data"}


async def test_a_test_event_carries_an_x_request_id_like_every_event(stack: Stack) -> None:
    async with Receiver() as receiver:
        created = await stack.hook(receiver.url())
        for metadata in (KEY, (*KEY, ("x-request-id", "req-test-1"))):
            await stack.stub.SendTestEvent(
                webhooks_pb2.SendTestEventRequest(webhook_id=created.webhook.id),
                metadata=metadata,
            )
        requests = await receiver.wait_for(2)
    ids = sorted(request.headers.get("x-request-id", "") for request in requests)
    assert ids[1] == "req-test-1"  # the call's
    assert re.fullmatch(r"[0-9a-f]{32}", ids[0])  # else one of its own


async def test_a_resent_delivered_delivery_is_not_shown_delivered_until_it_is_again(
    stack: Stack,
) -> None:
    async with Receiver() as receiver:
        created = await stack.hook(receiver.url())
        sent = await stack.stub.SendTestEvent(
            webhooks_pb2.SendTestEventRequest(webhook_id=created.webhook.id), metadata=KEY
        )
        await receiver.wait_for(1)
        for _ in range(50):
            page = await stack.stub.ListDeliveries(
                webhooks_pb2.ListDeliveriesRequest(
                    webhook_id=created.webhook.id, status=webhooks_pb2.DELIVERY_STATUS_DELIVERED
                ),
                metadata=KEY,
            )
            if page.total_size:
                break
            await asyncio.sleep(0.1)
        assert page.deliveries[0].HasField("deliver_time")
        resent = await stack.stub.ResendDelivery(
            webhooks_pb2.ResendDeliveryRequest(delivery_id=sent.delivery.id), metadata=KEY
        )
        assert resent.delivery.status == webhooks_pb2.DELIVERY_STATUS_PENDING
        assert not resent.delivery.HasField("deliver_time")
        assert resent.delivery.response_status_code == 200  # the last response, still
        await receiver.wait_for(2)


async def newest_status(stack: Stack, webhook_id: str, wanted: int) -> int:
    """The status of the webhook's newest delivery once it is ``wanted`` (within 5 s),
    else the last one seen."""
    for _ in range(50):
        page = await stack.stub.ListDeliveries(
            webhooks_pb2.ListDeliveriesRequest(webhook_id=webhook_id), metadata=KEY
        )
        if (status := page.deliveries[0].status) == wanted:
            break
        await asyncio.sleep(0.1)
    return status


async def test_a_resent_delivery_that_fails_is_not_retried(stack: Stack) -> None:
    """ResendDelivery is one more attempt: a delivered delivery resent to an endpoint that
    now fails was retried max_retries times (three more POSTs here), while one that had
    run out of retries got one, and a delivery already delivered ended dead-lettered."""
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(200), *[Reply(500)] * 5)
        created = await stack.hook(receiver.url(), retry_policy=FAST, initial_delay=0.1)
        sent = await stack.stub.SendTestEvent(
            webhooks_pb2.SendTestEventRequest(webhook_id=created.webhook.id), metadata=KEY
        )

        await newest_status(stack, created.webhook.id, webhooks_pb2.DELIVERY_STATUS_DELIVERED)
        await stack.stub.ResendDelivery(
            webhooks_pb2.ResendDeliveryRequest(delivery_id=sent.delivery.id), metadata=KEY
        )
        await receiver.wait_for(2)
        await newest_status(stack, created.webhook.id, webhooks_pb2.DELIVERY_STATUS_FAILED)
        await asyncio.sleep(1.5)  # past FAST's retries (0.1 s, 0.2 s, 0.4 s)
        assert len(receiver.received("/hook")) == 2
        failed = webhooks_pb2.DELIVERY_STATUS_FAILED
        assert await newest_status(stack, created.webhook.id, failed) == failed


async def test_a_recovered_delivery_gets_its_retry_policy_afresh(stack: Stack) -> None:
    """RecoverWebhook after an outage: each delivery gets the policy's retries again. One
    that had run out of them got a single attempt, so an endpoint still warming up
    (a 503 or two) dead-lettered and announced the whole backlog once more."""
    async with Receiver() as receiver:
        receiver.script("/hook", *[Reply(500)] * 4, *[Reply(503)] * 3, Reply(200))
        created = await stack.hook(receiver.url(), retry_policy=FAST, initial_delay=0.1)
        since = Timestamp()
        since.GetCurrentTime()
        await stack.produce([job(created.webhook.id)])
        await receiver.wait_for(4)  # the first attempt and its 3 retries

        await newest_status(stack, created.webhook.id, webhooks_pb2.DELIVERY_STATUS_FAILED)
        recovered = await stack.stub.RecoverWebhook(
            webhooks_pb2.RecoverWebhookRequest(webhook_id=created.webhook.id, since=since),
            metadata=KEY,
        )
        assert recovered.requeued == 1
        await receiver.wait_for(8, timeout=20)  # 3 more 503s, retried, then the 200
        await newest_status(stack, created.webhook.id, webhooks_pb2.DELIVERY_STATUS_DELIVERED)
        delivered = webhooks_pb2.DELIVERY_STATUS_DELIVERED
        assert await newest_status(stack, created.webhook.id, delivered) == delivered
        assert len(receiver.received("/hook")) == 8


async def test_recovering_takes_a_resent_delivery_not_attempted_yet(stack: Stack) -> None:
    """A delivery resent (one attempt) and then recovered before that attempt ran was
    left out of the recovery (it was pending), and got one attempt only."""
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(500))
        created = await stack.hook(
            receiver.url(), retry_policy=webhooks_pb2.RetryPolicy(max_retries=0)
        )
        since = Timestamp()
        since.GetCurrentTime()
        await stack.produce([job(created.webhook.id)])
        await receiver.wait_for(1)
        failed = webhooks_pb2.DELIVERY_STATUS_FAILED
        assert await newest_status(stack, created.webhook.id, failed) == failed
        conn = await asyncpg.connect(stack.database_url)
        try:  # as ResendDelivery leaves it, its attempt not come due yet
            await conn.execute(
                "UPDATE webhooks.deliveries SET status = 'pending', retry_reason = 'resend',"
                " next_attempt_at = now() + interval '1 hour' WHERE webhook_id = $1::uuid",
                created.webhook.id,
            )
            recovered = await stack.stub.RecoverWebhook(
                webhooks_pb2.RecoverWebhookRequest(webhook_id=created.webhook.id, since=since),
                metadata=KEY,
            )
            assert recovered.requeued == 1
            after = await conn.fetchval(
                "SELECT recovered_after FROM webhooks.deliveries WHERE webhook_id = $1::uuid",
                created.webhook.id,
            )
        finally:
            await conn.close()
        assert after == 1, "its policy starts afresh after its one attempt"
        second = (await receiver.wait_for(2))[1]  # due at once
        assert second.headers["x-herald-retry-reason"] == "recover"


async def fails_with_violations(call: Any) -> set[str]:
    """The fields an INVALID_ARGUMENT answer names."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    status = rpc_status.from_call(exc.value)
    assert status is not None
    return {v.field for v in bad_request_of(status)}


async def test_test_event_resend_and_recover(stack: Stack) -> None:
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(500), Reply(500))  # the two jobs below fail once
        policy = webhooks_pb2.RetryPolicy(max_retries=0)
        created = await stack.hook(receiver.url(), retry_policy=policy)
        since = Timestamp()
        since.GetCurrentTime()
        await stack.produce([job(created.webhook.id), job(created.webhook.id)])
        await receiver.wait_for(2)

        async def failed() -> list[webhooks_pb2.Delivery]:
            for _ in range(50):
                page = await stack.stub.ListDeliveries(
                    webhooks_pb2.ListDeliveriesRequest(
                        webhook_id=created.webhook.id, status=webhooks_pb2.DELIVERY_STATUS_FAILED
                    ),
                    metadata=KEY,
                )
                if page.total_size == 2:
                    return list(page.deliveries)
                await asyncio.sleep(0.1)
            return []

        dead = await failed()
        assert len(dead) == 2
        resent = await stack.stub.ResendDelivery(
            webhooks_pb2.ResendDeliveryRequest(delivery_id=dead[0].id), metadata=KEY
        )
        assert resent.delivery.status == webhooks_pb2.DELIVERY_STATUS_PENDING
        third = (await receiver.wait_for(3))[2]
        assert third.headers["x-herald-delivery"] == dead[0].id
        assert third.headers["x-herald-retry-reason"] == "resend"

        recovered = await stack.stub.RecoverWebhook(
            webhooks_pb2.RecoverWebhookRequest(webhook_id=created.webhook.id, since=since),
            metadata=KEY,
        )
        assert recovered.requeued == 1  # the other one; the resent one was delivered
        fourth = (await receiver.wait_for(4))[3]
        assert fourth.headers["x-herald-delivery"] == dead[1].id

        test = await stack.stub.SendTestEvent(
            webhooks_pb2.SendTestEventRequest(webhook_id=created.webhook.id), metadata=KEY
        )
        fifth = (await receiver.wait_for(5))[4]
    assert fifth.headers["x-herald-event"] == "herald.webhook.test"
    assert fifth.headers["x-herald-delivery"] == test.delivery.id
    assert json.loads(fifth.body)["data"]["test"] is True
    StandardWebhook(created.secret).verify(fifth.body, fifth.headers)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stack.stub.ResendDelivery(
            webhooks_pb2.ResendDeliveryRequest(delivery_id=str(uuid.uuid4())), metadata=KEY
        )
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND

    # An inactive webhook's deliveries wait for it: OK would promise an attempt not made.
    await stack.stub.UpdateWebhook(
        webhooks_pb2.UpdateWebhookRequest(
            webhook=webhooks_pb2.Webhook(id=created.webhook.id, active=False),
            update_mask=FieldMask(paths=["active"]),
        ),
        metadata=KEY,
    )
    for call in (
        stack.stub.SendTestEvent(
            webhooks_pb2.SendTestEventRequest(webhook_id=created.webhook.id), metadata=KEY
        ),
        stack.stub.ResendDelivery(
            webhooks_pb2.ResendDeliveryRequest(delivery_id=dead[0].id), metadata=KEY
        ),
        stack.stub.RecoverWebhook(
            webhooks_pb2.RecoverWebhookRequest(webhook_id=created.webhook.id, since=since),
            metadata=KEY,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "inactive" in (exc.value.details() or "")


async def test_rate_limit_holds_across_two_workers(stack: Stack, infra: Infra) -> None:
    stack.webhooks.append(await start_webhooks(stack.settings, infra))
    async with Receiver() as receiver:
        created = await stack.hook(  # Bitrix24's limits: 2 per second, 120 per minute
            receiver.url(), rate_limit=webhooks_pb2.RateLimit(per_second=2, per_minute=120)
        )
        await stack.produce([job(created.webhook.id) for _ in range(8)])
        requests = await receiver.wait_for(8, timeout=20)
    times = sorted(r.at for r in requests)
    assert times[-1] - times[0] >= 2.8, "8 sends at 2/s need at least three more seconds"
    for i, t in enumerate(times):
        within = [u for u in times[i:] if u - t < 0.9]
        assert len(within) <= 2, f"{len(within)} sends within 0.9 s from send {i}"


async def test_a_webhook_failing_continuously_is_disabled(stack: Stack) -> None:
    quick = stack.settings.model_copy(update={"disable_after_seconds": 1.0})
    await stack.restart(quick)
    async with Receiver() as receiver:
        receiver.script("/hook", *[Reply(500)] * 50)
        policy = webhooks_pb2.RetryPolicy(max_retries=20, backoff_multiplier=1)
        created = await stack.hook(receiver.url(), retry_policy=policy, initial_delay=0.3)
        await stack.produce([job(created.webhook.id)])
        await receiver.wait_for(1, timeout=30)  # the consumer has joined: the clock starts
        for _ in range(60):
            got = await stack.stub.GetWebhook(
                webhooks_pb2.GetWebhookRequest(id=created.webhook.id), metadata=KEY
            )
            if not got.webhook.active:
                break
            await asyncio.sleep(0.1)
        attempts = len(receiver.received())
    assert not got.webhook.active
    assert 4 <= attempts <= 8, "disabled after about a second of failures, not before"
    [alert] = await announced(stack.database_url, "herald.webhook.disabled")
    assert "failing without a 2xx" in alert["reason"]


async def test_a_re_enabled_webhook_gets_a_fresh_period_before_it_is_disabled_again(
    stack: Stack,
) -> None:
    await stack.restart(stack.settings.model_copy(update={"disable_after_seconds": 1.0}))

    async def disabled(hook_id: str) -> float:
        """Seconds until the webhook is inactive."""
        start = time.monotonic()
        for _ in range(100):
            got = await stack.stub.GetWebhook(
                webhooks_pb2.GetWebhookRequest(id=hook_id), metadata=KEY
            )
            if not got.webhook.active:
                return time.monotonic() - start
            await asyncio.sleep(0.05)
        raise AssertionError("the webhook was not disabled within 5 s")

    async with Receiver() as receiver:
        receiver.script("/hook", *[Reply(500)] * 100)
        policy = webhooks_pb2.RetryPolicy(max_retries=50, backoff_multiplier=1)
        created = await stack.hook(receiver.url(), retry_policy=policy, initial_delay=0.3)
        await stack.produce([job(created.webhook.id)])
        await receiver.wait_for(1, timeout=30)
        await disabled(created.webhook.id)
        await asyncio.sleep(0.5)  # the operator looks into it
        before = len(receiver.received())
        await stack.stub.UpdateWebhook(
            webhooks_pb2.UpdateWebhookRequest(
                webhook=webhooks_pb2.Webhook(id=created.webhook.id, active=True),
                update_mask=FieldMask(paths=["active"]),
            ),
            metadata=KEY,
        )
        await disabled(created.webhook.id)
        again = len(receiver.received()) - before
    # The failures before it was disabled do not count: it fails for about a second
    # more (an attempt each 0.3 s), not just once.
    assert again >= 3, f"disabled again after {again} attempt(s)"
    first, second = await announced(stack.database_url, "herald.webhook.disabled", count=2)
    assert first["webhook_id"] == second["webhook_id"] == created.webhook.id


async def test_a_graceful_stop_finishes_attempts_in_flight_and_frees_what_it_claimed(
    stack: Stack,
) -> None:
    """A rolling restart: the stopping worker records the attempts it has in flight and
    hands back the deliveries it claimed but had not started, so the next worker
    delivers them at once (not when their lease runs out) and none twice."""
    async with Receiver() as receiver:
        receiver.script("/hook", *[Reply(delay=0.5)] * 200)  # within the 1 s timeout
        created = await stack.hook(receiver.url())
        hook_id = created.webhook.id
        jobs = [job(hook_id) for _ in range(150)]  # more than the 64 attempts at a time
        await stack.produce(jobs)
        await receiver.wait_for(10, timeout=20)  # attempts are in flight
        stopping = stack.webhooks[0]
        started = time.monotonic()
        await stopping.stop(15)
        stopped_in = time.monotonic() - started
        conn = await asyncpg.connect(stack.database_url)
        try:
            claimed = await conn.fetchval(
                "SELECT count(*) FROM webhooks.deliveries WHERE claimed_by IS NOT NULL"
            )
            attempted = await conn.fetchval(
                "SELECT count(*) FROM webhooks.attempts WHERE webhook_id = $1::uuid", hook_id
            )
        finally:
            await conn.close()
        arrived = len(receiver.received())
        assert claimed == 0, "nothing stays claimed by the stopped worker"
        assert attempted == arrived, "every request the receiver got is recorded"
        assert stopped_in < 5, "in-flight attempts take half a second, not a lease"

        stack.webhooks = [await start_webhooks(stack.settings, stack.infra)]
        await receiver.wait_for(150, timeout=30)
        bodies = [json.loads(r.body)["id"] for r in receiver.received()]
        assert len(bodies) == len(set(bodies)) == 150, "each delivered once"


async def test_a_stop_hands_back_nothing_still_posted_whatever_the_timeout(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery timeout longer than the runtime's stop step (15 s by default, made
    0.3 s here beside the 1 s timeout): the stop waits for the engine's drain before
    handing back its claims, so no delivery still being posted is made due for another
    worker, and every attempt's outcome is recorded."""
    monkeypatch.setattr(server, "STOP_STEP_SECONDS", 0.3)
    async with Receiver() as receiver:
        receiver.script("/hook", *[Reply(delay=0.8)] * 10)  # within the 1 s timeout
        created = await stack.hook(receiver.url())
        await stack.produce([job(created.webhook.id) for _ in range(5)])
        await receiver.wait_for(5, timeout=20)  # all five in flight
        await stack.webhooks[0].stop(1)
        conn = await asyncpg.connect(stack.database_url)
        try:
            states = await conn.fetch(
                "SELECT status, claimed_by FROM webhooks.deliveries WHERE webhook_id = $1::uuid",
                created.webhook.id,
            )
        finally:
            await conn.close()
    assert [(r["status"], r["claimed_by"]) for r in states] == [("delivered", None)] * 5


async def test_a_rate_limited_webhook_is_served_beside_another_webhooks_backlog(
    stack: Stack,
) -> None:
    """A rate-limited webhook's deliveries go out while another webhook has a backlog
    that fills every slot: they waited for the backlog to clear (minutes, for a large
    one), as limited deliveries were looked for only when a claim left slots free."""
    async with Receiver() as receiver:
        receiver.script("/busy", *[Reply(delay=0.3)] * 2000)  # within the 1 s timeout
        busy = await stack.hook(receiver.url("/busy"))
        limited = await stack.hook(
            receiver.url("/limited"), rate_limit=webhooks_pb2.RateLimit(per_second=5)
        )
        await stack.produce([job(busy.webhook.id) for _ in range(1500)])  # ~7 s of work
        await receiver.wait_for(64, path="/busy", timeout=20)  # every slot is busy
        await stack.produce([job(limited.webhook.id) for _ in range(10)])
        await receiver.wait_for(5, path="/limited", timeout=5)
        assert len(receiver.received("/busy")) < 1500, "served while the backlog lasted"


async def test_a_slow_endpoint_does_not_hold_up_the_others(stack: Stack) -> None:
    """A webhook whose endpoint times out, with a backlog of hundreds, holds at most its
    share (a quarter) of a worker's attempts in flight from its very first wave, when
    nothing is known of it yet (as after every restart): another webhook's deliveries
    go out at once."""
    async with Receiver() as receiver:
        never = Reply(delay=3.0)  # past the 1 s timeout
        fast = await slow_backlogs(stack, receiver, ["/slow"], never, 400)
        await receiver.wait_for(1, path="/slow", timeout=20)  # its first wave is out
        waited = await seconds_to_deliver(stack, receiver, fast)
        await receiver.wait_for(80, path="/slow", timeout=20)  # later waves too
        # Each open for at most 0.9 s of the receiver's clock: the client gives up 1 s
        # after sending, and the next wave can arrive within a few ms of that.
        in_flight = max_in_flight(receiver.received("/slow"), 0.9)
        assert waited < 0.5, f"the other webhook waited {waited:.1f} s"
        assert in_flight <= 16, f"{in_flight} attempts at once to the slow endpoint"


async def test_many_slow_endpoints_do_not_hold_up_another_webhook(stack: Stack) -> None:
    """Five webhooks whose endpoints time out, each with a backlog, and a healthy one,
    all one tenant's: the slow ones hold at most the tenant's share of a worker's
    attempts, and the healthy one, untried, still gets a probe and then its deliveries
    within about one timeout, not after the slow backlogs have timed out wave after
    wave."""
    async with Receiver() as receiver:
        never = Reply(delay=3.0)  # past the 1 s timeout
        fast = await slow_backlogs(stack, receiver, [f"/slow{n}" for n in range(5)], never, 200)
        await receiver.wait_for(1, path="/slow4", timeout=20)  # the first wave is out
        await asyncio.sleep(1.5)  # it has timed out: the five are known to be slow
        waited = await seconds_to_deliver(stack, receiver, fast)
        # At most about one timeout (1 s) of the slow ones: the healthy webhook's first
        # attempt is a probe at once, the rest may wait for a claim that finds them.
        assert waited < 2.5, f"the healthy webhook waited {waited:.1f} s"


async def test_endpoints_that_answer_at_once_and_withhold_the_body_are_slow(
    stack: Stack,
) -> None:
    """An endpoint that sends its status and headers at once and then withholds the body
    holds its attempt until the timeout like one that never answers: it is slow, and
    two such webhooks with backlogs do not take every slot from a healthy one."""
    async with Receiver() as receiver:
        withheld = Reply(body_delay=3.0)  # past the 1 s timeout
        fast = await slow_backlogs(stack, receiver, ["/withheld0", "/withheld1"], withheld, 300)
        await receiver.wait_for(17, path="/withheld1", timeout=20)  # a second wave is out
        waited = await seconds_to_deliver(stack, receiver, fast)
        # At most about one timeout (1 s) of the slow ones: the healthy webhook's first
        # attempt is a probe at once, the rest may wait for a claim that finds them.
        assert waited < 2.5, f"the healthy webhook waited {waited:.1f} s"


async def test_endpoints_found_slow_before_a_restart_are_held_to_their_share_at_once(
    stack: Stack,
) -> None:
    """Which endpoints are slow was learned per process: after a restart every webhook
    was untried, and a tenant's many slow webhooks filled every slot with one probe each
    until each had timed out again, while another tenant's deliveries waited. Stored,
    the restarted worker holds them to their tenant's share from its first claim."""
    settings = stack.settings.model_copy(update={"delivery_concurrency": 16})
    await stack.restart(settings)  # shares: 4 a webhook, 8 for a tenant's slow ones
    async with Receiver() as receiver:
        slow, other = await twelve_slow_and_globex(stack, receiver)
        await stack.produce([job(h.webhook.id) for h in slow for _ in range(20)])
        for n in range(len(slow)):  # each has timed out once: this worker knows it is slow
            await receiver.wait_for(1, path=f"/slow{n}", timeout=30)
        await asyncio.sleep(1.2)

        await stack.restart(settings)
        before = len(receiver.received())
        await receiver.wait_for(before + 8, timeout=20)  # the tenant's share is out again
        await asyncio.sleep(0.1)  # and, untried, each other slow webhook's probe was
        waited = await seconds_to_deliver(stack, receiver, other, 10, "/globex")
        after = [r for r in receiver.received()[before:] if r.path.startswith("/slow")]
        in_flight = max_in_flight(after, 0.9)
    assert waited < 0.5, f"the other tenant's deliveries waited {waited:.1f} s"
    assert in_flight <= 8, f"{in_flight} attempts at once to the slow endpoints"


async def test_a_tenants_many_new_slow_webhooks_leave_room_for_another_tenant(
    stack: Stack,
) -> None:
    """Webhooks no process has tried yet get a probe each past their tenant's share: a
    tenant with many new webhooks whose endpoints time out (created at will, test events
    cost nothing) held every slot until each had timed out, again for each new batch.
    Its probes are bounded: another tenant's deliveries go out at once."""
    settings = stack.settings.model_copy(update={"delivery_concurrency": 16})
    await stack.restart(settings)  # shares: 4 a webhook (and probes), 8 for a tenant
    async with Receiver() as receiver:
        slow, other = await twelve_slow_and_globex(stack, receiver)
        await stack.produce([job(h.webhook.id) for h in slow for _ in range(20)])
        await receiver.wait_for(12, timeout=20)  # the share and the probes are out
        await asyncio.sleep(0.1)
        waited = await seconds_to_deliver(stack, receiver, other, 10, "/globex")
        slow_requests = [r for r in receiver.received() if r.path.startswith("/slow")]
        in_flight = max_in_flight(slow_requests, 0.9)
    assert waited < 0.5, f"the other tenant's deliveries waited {waited:.1f} s"
    assert in_flight <= 12, f"{in_flight} attempts at once to the new slow endpoints"


async def test_endpoints_another_replica_found_slow_are_held_to_their_share_at_once(
    stack: Stack,
) -> None:
    """A replica that has not tried a webhook yet takes it as slow when another replica
    has stored it so (as each claimed delivery says), not as untried with a probe."""
    settings = stack.settings.model_copy(update={"delivery_concurrency": 16})
    await stack.restart(settings)  # shares: 4 a webhook, 8 for a tenant's slow ones
    async with Receiver() as receiver:
        slow, other = await twelve_slow_and_globex(stack, receiver)
        conn = await asyncpg.connect(stack.database_url)
        try:  # what another replica's worker stores when it finds them slow
            await conn.execute(
                "UPDATE webhooks.webhooks SET slow_since = now() WHERE id = ANY($1::uuid[])",
                [h.webhook.id for h in slow],
            )
        finally:
            await conn.close()
        await stack.produce([job(h.webhook.id) for h in slow for _ in range(20)])
        await receiver.wait_for(8, timeout=20)  # the tenant's share is out
        await asyncio.sleep(0.1)  # and, untried, each other slow webhook's probe was
        waited = await seconds_to_deliver(stack, receiver, other, 10, "/globex")
        slow_requests = [r for r in receiver.received() if r.path.startswith("/slow")]
        in_flight = max_in_flight(slow_requests, 0.9)
    assert waited < 0.5, f"the other tenant's deliveries waited {waited:.1f} s"
    assert in_flight <= 8, f"{in_flight} attempts at once to the slow endpoints"


async def test_deliveries_handed_back_while_their_webhook_answers_go_out_once_back(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook not tried yet gets its share of attempts; the rest of its deliveries
    are handed back, due again. When its first answers come in before that hand back is
    done (a busy database), the claim they start finds nothing due yet: the worker
    claims again once the hand back is done, not at its next 1 s poll."""
    waited = await handed_back_twelve(stack, monkeypatch, hand_back_pause=0.2)
    assert waited < 0.7, f"the handed back deliveries waited {waited:.1f} s"


async def test_deliveries_handed_back_during_a_claim_go_out_after_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand back is done (and wakes the worker) while a claim is running, too late
    for that claim to see them: the worker claims again at once, not at its next 1 s
    poll (the wake was lost to the claim, which found nothing and went quiet)."""
    waited = await handed_back_twelve(stack, monkeypatch, hand_back_pause=0.1, claim_pause=0.3)
    assert waited < 1.0, f"the handed back deliveries waited {waited:.1f} s"


async def handed_back_twelve(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, hand_back_pause: float, claim_pause: float = 0
) -> float:
    """Seconds until 12 jobs for a new webhook are delivered by a worker with a share
    of 4 attempts for it (the rest handed back), with PostgreSQL pausing this long in
    each hand back (release_some) and each claim (claim_due)."""
    pause = f"WITH pause AS MATERIALIZED (SELECT pg_sleep({hand_back_pause})) "
    monkeypatch.setitem(
        Q._sql, "release_some", f"{pause}{Q.release_some} AND EXISTS (SELECT FROM pause)"
    )
    if claim_pause:
        before = f"WITH pause AS MATERIALIZED (SELECT pg_sleep({claim_pause})), due AS ("
        claim = Q.claim_due.replace("WITH due AS (", before).replace(
            "WHERE d.id = due.id", "WHERE EXISTS (SELECT FROM pause) AND d.id = due.id"
        )
        monkeypatch.setitem(Q._sql, "claim_due", claim)
    await stack.restart(stack.settings.model_copy(update={"delivery_concurrency": 16}))
    async with Receiver() as receiver:
        hook = await stack.hook(receiver.url("/fast"))
        return await seconds_to_deliver(stack, receiver, hook, 12)


async def test_a_flood_of_records_that_are_not_jobs_does_not_hold_up_the_jobs_behind_it(
    stack: Stack,
) -> None:
    """Thousands of records on herald.deliveries that are not jobs (a buggy producer) are
    dead-lettered a batch at a time, not one Kafka round trip after another: a job
    behind them is delivered within seconds."""
    async with Receiver() as receiver:
        hook = await stack.hook(receiver.url("/after"))
        await stack.produce([b"not a job %d" % n for n in range(3000)] + [job(hook.webhook.id)])
        produced = time.monotonic()
        await receiver.wait_for(1, path="/after", timeout=60)
        waited = time.monotonic() - produced
        dead = await read_topic(stack.infra.kafka_settings(), stack.settings.dlq_topic, 3000)
        assert len(dead) == 3000, "every record that is not a job is dead-lettered"
        assert waited < 3, f"the job behind them waited {waited:.1f} s"


async def test_a_start_names_the_tenants_whose_webhooks_no_key_opens_any_more(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant dropped from WEBHOOKS_API_KEYS (or renamed there) keeps its webhooks,
    which still deliver, but nobody can manage them: the start says which."""
    async with Receiver() as receiver:
        await globex_hook(stack, receiver)
    captured = LogCapture()
    monkeypatch.setattr(app, "log", structlog.wrap_logger(None, processors=[captured]))
    await stack.restart(stack.settings)
    assert [e for e in captured.entries if e["event"] == "tenants.without_key"] == []
    only_acme = stack.settings.model_copy(
        update={"webhooks_api_keys": stack.settings.webhooks_api_keys.split(",")[0]}
    )
    await stack.restart(only_acme)
    [line] = [e for e in captured.entries if e["event"] == "tenants.without_key"]
    assert line["log_level"] == "warning"
    assert line["tenants"] == ["globex"]
    assert line["count"] == 1
    assert GLOBEX_KEY not in str(line)


async def slow_backlogs(
    stack: Stack, receiver: Receiver, paths: list[str], reply: Reply, backlog: int
) -> webhooks_pb2.CreateWebhookResponse:
    """A webhook per path whose endpoint answers ``reply``, ``backlog`` jobs each on
    their way; returns a healthy webhook (at /fast) created beside them."""
    for path in paths:
        receiver.script(path, *[reply] * 2000)
    slow = [await stack.hook(receiver.url(path)) for path in paths]
    fast = await stack.hook(receiver.url("/fast"))
    await stack.produce([job(h.webhook.id) for h in slow for _ in range(backlog)])
    return fast


async def seconds_to_deliver(
    stack: Stack,
    receiver: Receiver,
    hook: webhooks_pb2.CreateWebhookResponse,
    jobs: int = 20,
    path: str = "/fast",
) -> float:
    """Seconds from ``jobs`` jobs for ``hook`` (at ``path``) being acknowledged by Kafka
    until the receiver has them all."""
    await stack.produce([job(hook.webhook.id) for _ in range(jobs)])
    produced = time.monotonic()
    await receiver.wait_for(jobs, path=path, timeout=60)
    return time.monotonic() - produced


async def twelve_slow_and_globex(
    stack: Stack, receiver: Receiver
) -> tuple[list[webhooks_pb2.CreateWebhookResponse], webhooks_pb2.CreateWebhookResponse]:
    """Acme's 12 webhooks at /slow0../slow11, whose endpoints answer past the 1 s
    timeout, and globex's webhook (at /globex)."""
    paths = [f"/slow{n}" for n in range(12)]
    for path in paths:
        receiver.script(path, *[Reply(delay=3.0)] * 500)
    slow = [await stack.hook(receiver.url(path)) for path in paths]
    return slow, await globex_hook(stack, receiver)


async def globex_hook(stack: Stack, receiver: Receiver) -> webhooks_pb2.CreateWebhookResponse:
    """Another tenant's (globex's) webhook, at /globex."""
    return await stack.stub.CreateWebhook(
        webhooks_pb2.CreateWebhookRequest(
            webhook=webhooks_pb2.Webhook(
                name="globex", url=receiver.url("/globex"), event_types=["message.created"]
            )
        ),
        metadata=(("authorization", f"Bearer {GLOBEX_KEY}"),),
    )


def max_in_flight(requests: list[Any], timeout: float) -> int:
    """The most requests that were open at once, each open until ``timeout`` after it
    arrived (when the client gave up on it)."""
    events = sorted([(r.at, 1) for r in requests] + [(r.at + timeout, -1) for r in requests])
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


async def test_one_tenants_slow_endpoints_do_not_hold_up_another_tenants_deliveries(
    stack: Stack,
) -> None:
    """A tenant with a few endpoints that time out and a backlog for each (test events
    cost it nothing) held every attempt slot of a worker: another tenant's deliveries
    waited behind its timeouts. Its slow endpoints together hold at most half the slots
    (and a probe each while they are not known to be slow)."""
    async with Receiver() as receiver:
        slow_ids = []
        for n in range(5):
            receiver.script(f"/slow{n}", *[Reply(delay=3.0)] * 400)  # past the 1 s timeout
            slow_ids.append((await stack.hook(receiver.url(f"/slow{n}"))).webhook.id)
        other = await globex_hook(stack, receiver)
        await stack.produce([job(w) for w in slow_ids for _ in range(100)])
        await receiver.wait_for(32, timeout=20)  # acme's first wave is out
        waited = await seconds_to_deliver(stack, receiver, other, 10, "/globex")
        slow = [r for r in receiver.received() if r.path.startswith("/slow")]
        in_flight = max_in_flight(slow, 0.9)
        assert waited < 0.5, f"the other tenant's deliveries waited {waited:.1f} s"
        # Half the 64 slots, plus at most one probe per webhook not known to be slow yet
        # (the first wave has not timed out when the share fills).
        assert in_flight <= 32 + len(slow_ids), f"{in_flight} attempts at once to acme's"


async def test_one_tenants_backlog_of_test_events_does_not_hold_up_another_tenant(
    stack: Stack,
) -> None:
    """SendTestEvent costs a tenant nothing: hundreds queued in a second, to endpoints
    that answer in 0.5 s (quick enough not to be capped), were worked off before another
    tenant's delivery due later went out. Tenants take turns."""
    async with Receiver() as receiver:
        receiver.script("/busy", *[Reply(delay=0.5)] * 2000)
        busy = [await stack.hook(receiver.url("/busy")) for _ in range(6)]
        other = await globex_hook(stack, receiver)
        for created in busy:  # as many as a webhook may have waiting
            test_event = webhooks_pb2.SendTestEventRequest(webhook_id=created.webhook.id)
            await asyncio.gather(
                *[stack.stub.SendTestEvent(test_event, metadata=KEY) for _ in range(100)]
            )
        await receiver.wait_for(64, path="/busy", timeout=20)  # a slot for each is busy
        sent = time.monotonic()
        await stack.stub.SendTestEvent(
            webhooks_pb2.SendTestEventRequest(webhook_id=other.webhook.id),
            metadata=(("authorization", f"Bearer {GLOBEX_KEY}"),),
        )
        await receiver.wait_for(1, path="/globex", timeout=60)
        waited = time.monotonic() - sent
        assert len(receiver.received("/busy")) < 300, "the backlog was not worked off first"
        assert waited < 1.5, f"the other tenant's test event waited {waited:.1f} s"


async def test_a_webhook_has_at_most_100_test_events_waiting(stack: Stack) -> None:
    """Test events cost the caller nothing: a tenant queued thousands a second (64 KiB of
    data each), stored and POSTed with retries to any public address it named."""
    later = webhooks_pb2.RetryPolicy(max_retries=1, delays=[Duration(seconds=3600)])
    async with Receiver() as receiver:
        receiver.script("/down", *[Reply(503)] * 200)
        created = await stack.hook(receiver.url("/down"), retry_policy=later)
        request = webhooks_pb2.SendTestEventRequest(webhook_id=created.webhook.id)
        await asyncio.gather(*[stack.stub.SendTestEvent(request, metadata=KEY) for _ in range(100)])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stack.stub.SendTestEvent(request, metadata=KEY)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "100 test events waiting" in (refused.value.details() or "")
        # Once some are finished, more may be sent
        await receiver.wait_for(100, path="/down", timeout=30)
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute(
                "UPDATE webhooks.deliveries SET status = 'failed' WHERE id IN "
                "(SELECT id FROM webhooks.deliveries WHERE webhook_id = $1 LIMIT 1)",
                uuid.UUID(created.webhook.id),
            )
        finally:
            await conn.close()
        await stack.stub.SendTestEvent(request, metadata=KEY)


async def test_an_endpoint_flapping_between_quick_and_slow_is_not_stored_at_every_attempt(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint whose answers alternate quick and slow changes the worker's verdict on
    every other attempt: its stored verdict changes once at once, then at most once every
    WRITE_EVERY_SECONDS, not with every attempt (a write of the webhook's row each)."""
    captured = LogCapture()
    monkeypatch.setattr(slowness, "log", structlog.wrap_logger(None, processors=[captured]))
    async with Receiver() as receiver:
        receiver.script("/flap", *[Reply(delay=1.5 if n % 2 else 0.0) for n in range(40)])
        hook = await stack.hook(receiver.url("/flap"))
        for _ in range(40):  # a steady trickle
            await stack.produce([job(hook.webhook.id)])
            await asyncio.sleep(0.05)
        await receiver.wait_for(40, path="/flap", timeout=30)
        await asyncio.sleep(1.2)  # the last slow attempts time out
    stored = [
        e
        for e in captured.entries
        if e["event"] == "webhook.slowness_stored" and e["webhook_id"] == hook.webhook.id
    ]
    assert 1 <= len(stored) <= 2, f"{len(stored)} writes of the verdict"


@pytest.mark.parametrize("moved_by", ["this worker", "a restarted worker", "another replica"])
async def test_a_webhook_moved_to_another_url_is_not_held_by_the_old_endpoint_s_slowness(
    stack: Stack, moved_by: str
) -> None:
    """A webhook found slow and then given another URL (or re-enabled) is untried: the
    verdict was about the old endpoint. The worker that found it slow, a restarted one
    (what is stored), or the one that found it slow while another replica served the
    UpdateWebhook (it sees the new URL on its next claim) gives it a probe past its
    tenant's full share, and its deliveries go out at once."""
    settings = stack.settings.model_copy(update={"delivery_concurrency": 16})
    await stack.restart(settings)  # shares: 4 a webhook, 8 for a tenant's slow ones
    async with Receiver() as receiver:
        paths = [f"/slow{n}" for n in range(12)]
        for path in paths:
            receiver.script(path, *[Reply(delay=3.0)] * 500)  # past the 1 s timeout
        slow = [await stack.hook(receiver.url(path)) for path in paths]
        receiver.script("/old", *[Reply(delay=3.0)] * 10)
        moved = await stack.hook(receiver.url("/old"), initial_delay=25)
        await stack.produce([job(h.webhook.id) for h in slow for _ in range(20)])
        await stack.produce([job(moved.webhook.id)])
        for path in [*paths, "/old"]:  # each has timed out once: found slow, stored
            await receiver.wait_for(1, path=path, timeout=30)
        await asyncio.sleep(1.2)
        if moved_by == "another replica":  # its UpdateWebhook: the row, not this engine
            conn = await asyncpg.connect(stack.database_url)
            try:
                await conn.execute(
                    "UPDATE webhooks.webhooks SET url = $2, slow_since = NULL WHERE id = $1",
                    uuid.UUID(moved.webhook.id),
                    receiver.url("/new"),
                )
            finally:
                await conn.close()
        else:
            await stack.stub.UpdateWebhook(
                webhooks_pb2.UpdateWebhookRequest(
                    webhook=webhooks_pb2.Webhook(id=moved.webhook.id, url=receiver.url("/new")),
                    update_mask=FieldMask(paths=["url"]),
                ),
                metadata=KEY,
            )
        if moved_by == "a restarted worker":
            await stack.restart(settings)
        before = len(receiver.received())
        await receiver.wait_for(before + 8, timeout=20)  # the tenant's share is out again
        await asyncio.sleep(0.1)
        await stack.produce([job(moved.webhook.id) for _ in range(10)])
        produced = time.monotonic()
        await receiver.wait_for(10, path="/new", timeout=60)
        waited = time.monotonic() - produced
    # Held as slow, they waited for the other slow endpoints' timeouts: 10-16 s.
    assert waited < 3, f"the moved webhook's deliveries waited {waited:.1f} s"


async def test_an_attempt_at_the_old_url_ending_after_a_move_stores_no_slowness(
    stack: Stack,
) -> None:
    """An attempt in flight to the old URL times out after UpdateWebhook gave the
    webhook another: its verdict is about the old endpoint, so slow_since stays unset
    (every replica would have held the new endpoint to its share)."""
    async with Receiver() as receiver:
        receiver.script("/old", Reply(delay=3.0))  # past the 1 s timeout
        created = await stack.hook(receiver.url("/old"), initial_delay=25)
        await stack.produce([job(created.webhook.id)])
        await receiver.wait_for(1, path="/old")  # in flight
        await stack.stub.UpdateWebhook(
            webhooks_pb2.UpdateWebhookRequest(
                webhook=webhooks_pb2.Webhook(id=created.webhook.id, url=receiver.url("/new")),
                update_mask=FieldMask(paths=["url"]),
            ),
            metadata=KEY,
        )
        await asyncio.sleep(2.0)  # the attempt has timed out, its verdict had its turn
        got = await stack.stub.GetWebhook(
            webhooks_pb2.GetWebhookRequest(id=created.webhook.id), metadata=KEY
        )
    assert not got.webhook.HasField("slow_since")


async def test_a_webhook_found_slow_shows_since_when_and_loses_it_with_another_url(
    stack: Stack,
) -> None:
    """An operator saw nothing of a webhook held to its share as slow: GetWebhook (and
    ListWebhooks) carry slow_since while it is."""
    async with Receiver() as receiver:
        receiver.script("/hook", Reply(delay=3.0))  # past the 1 s timeout
        created = await stack.hook(receiver.url(), initial_delay=25)
        assert not created.webhook.HasField("slow_since")
        await stack.produce([job(created.webhook.id)])
        await receiver.wait_for(1)

        async def shown() -> webhooks_pb2.Webhook:
            got = await stack.stub.GetWebhook(
                webhooks_pb2.GetWebhookRequest(id=created.webhook.id), metadata=KEY
            )
            return got.webhook

        for _ in range(50):
            if (await shown()).HasField("slow_since"):
                break
            await asyncio.sleep(0.1)
        webhook = await shown()
        assert webhook.HasField("slow_since")
        assert abs(webhook.slow_since.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(
            seconds=10
        )
        listed = await stack.stub.ListWebhooks(webhooks_pb2.ListWebhooksRequest(), metadata=KEY)
        [entry] = [w for w in listed.webhooks if w.id == created.webhook.id]
        assert entry.slow_since == webhook.slow_since
        moved = await stack.stub.UpdateWebhook(
            webhooks_pb2.UpdateWebhookRequest(
                webhook=webhooks_pb2.Webhook(id=created.webhook.id, url=receiver.url("/new")),
                update_mask=FieldMask(paths=["url"]),
            ),
            metadata=KEY,
        )
        assert not moved.webhook.HasField("slow_since")
