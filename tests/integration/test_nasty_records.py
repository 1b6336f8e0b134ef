"""Every Kafka consumer of Herald fed nasty records (empty, binary junk, NUL bytes and
characters in values, header names and header values, headers without a value, bytes
that are not UTF-8, lone
surrogate escapes in JSON, JSON nested 1,000 and 100,000 deep, near-1 MB values, one
too large to dead-letter whole; jobs
PostgreSQL cannot store) goes on:
the next good record is processed by dispatch, webhooks and reconcile alike."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from herald.webhooks.v1 import delivery_pb2, webhooks_pb2, webhooks_pb2_grpc

from herald.runtime import kafka
from herald.services.webhooks.settings import WebhooksSettings
from tests.conftest import Infra
from tests.integration.conftest import ACME_KEY, IngestUnderTest
from tests.integration.reconcile_flow import ReconcileFlow, event, open_flow, order, unique
from tests.integration.test_dispatch import running_services, still_dispatching
from tests.integration.test_webhook_delivery import job
from tests.receiver import Receiver

VALUES = [
    b"",
    b"\x00",
    b"\xff\xfe\xfd",
    b"{",
    b'{"a": "\\ud800"}',
    b'{"id": "x", "status": Infinity, "customer": "\\ud800"}',  # protobuf cannot take these
    b'{"a": "\\u0000"}',
    b"[]",
    b"123456789012345678901234567890",
    b"x" * 900_000,
    b"[" * 100_000 + b"]" * 100_000,  # deeper than any parser goes
    b'{"a":' * 1000 + b"1" + b"}" * 1000,  # parsed by orjson, too deep to write back
]
TOO_LARGE_TO_DEAD_LETTER = 1_048_480
HEADERS: list[list[tuple[str, bytes | None]]] = [
    [],
    # Headers without a value (null), which other clients' producers may write: a
    # consumer crashed on them, and again on the same record after each restart
    [("ce_id", None)],
    [("content-type", None)],
    [("traceparent", None), ("ce_heraldtenant", None)],
    [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"null-headers"),
        ("ce_source", b"/nasty"),
        ("ce_type", b"user_registered"),
        ("traceparent", None),
        ("x-request-id", None),
    ],
    [("ce_id", b"\x00")],
    [("ce_i\x00d", b"x")],
    [("ce_id", b"\xff\xfe")],
    [("content-type", b"application/json")],
    [("content-type", b"\xff")],
    [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"nasty"),
        ("ce_source", b"/nasty"),
        ("ce_type", b"user_registered"),
        ("content-type", b"application/json"),
    ],
    [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"i\xff"),
        ("ce_source", b"s\x00"),
        ("ce_type", b"user_registered"),
        ("content-type", b"application/json"),
    ],
]


@dataclass
class Consumers:
    infra: Infra
    ingest: IngestUnderTest
    events_topic: str
    hooks: WebhooksSettings
    hooks_stub: webhooks_pb2_grpc.WebhookServiceAsyncStub
    reconcile: ReconcileFlow


@pytest.fixture
async def consumers(infra: Infra, database_url: str, topic: str) -> AsyncIterator[Consumers]:
    async with (
        running_services(infra, database_url, topic) as services,
        open_flow(infra, database_url, services.ingest) as reconcile,
        grpc.aio.insecure_channel(f"127.0.0.1:{services.webhooks.port}") as channel,
    ):
        yield Consumers(
            infra,
            services.ingest,
            topic,
            services.webhooks_settings,
            webhooks_pb2_grpc.WebhookServiceStub(channel),
            reconcile,
        )


async def test_every_consumer_carries_on_after_nasty_records(consumers: Consumers) -> None:
    c = consumers
    r = c.reconcile.settings
    topics = [
        c.events_topic,
        c.hooks.deliveries_topic,
        r.ticketland_events_topic,
        r.ticketland_orders_topic,
        r.ticketland_refunds_topic,
    ]
    unknown_hook = str(uuid.uuid4())
    bad_jobs = [
        job(unknown_hook, event_id="e\x00vil"),
        job(unknown_hook, event_id=os.urandom(4000).hex()),
        delivery_pb2.DeliveryJob(job_id="j", webhook_id="nope", event_id="e").SerializeToString(),
        delivery_pb2.DeliveryJob(
            job_id="deep",
            webhook_id=unknown_hook,
            event_id="deep",
            event_type="message.created",
            data=b'{"a":' * 1000 + b"1" + b"}" * 1000,
        ).SerializeToString(),
    ]
    producer = kafka.make_producer(c.infra.kafka_settings(), max_request_size=2_000_000)
    await producer.start()
    try:
        for topic in topics:
            for value in VALUES:
                for hs in HEADERS:
                    await producer.send(topic, value, key=os.urandom(4), headers=hs)
            # fits Kafka's 1 MiB, but not with a dead letter's headers added
            await producer.send(topic, b"x" * TOO_LARGE_TO_DEAD_LETTER, key=os.urandom(4))
        for bad in bad_jobs:
            await producer.send(c.hooks.deliveries_topic, bad)
        await producer.flush()
    finally:
        await producer.stop()

    # dispatch: a good event still makes its job
    await still_dispatching(c.infra, c.ingest, timeout=60)

    # webhooks: a good job is still delivered
    async with Receiver() as receiver:
        created = await c.hooks_stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(
                webhook=webhooks_pb2.Webhook(
                    name="after", url=receiver.url(), event_types=["message.created"]
                )
            ),
            metadata=(("authorization", f"Bearer {ACME_KEY}"),),
        )
        producer = kafka.make_producer(c.infra.kafka_settings())
        await producer.start()
        try:
            await producer.send_and_wait(
                c.hooks.deliveries_topic, job(created.webhook.id, event_id="after")
            )
        finally:
            await producer.stop()
        [request] = await receiver.wait_for(1, timeout=60)
    assert json.loads(request.body)["id"] == "after"

    # reconcile: a good event and order still reach Vibeapp's topic
    e, o = unique("ev"), unique("or")
    await c.reconcile.send(event(e), order(o, e, {"t-" + o: 1000}))
    sent = await c.reconcile.outputs("order", 1, timeout=60)
    assert [s.key for s in sent] == [o.encode()]
