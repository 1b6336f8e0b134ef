"""webhooks as a process: kill -9 mid-delivery, restart, and every job still reaches its
receiver; a repeat (an attempt the kill cut off) carries the same delivery id."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaProducer
from herald.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc

from herald.runtime import kafka
from tests.acceptance.conftest import ServiceProcess, free_port
from tests.acceptance.test_ingest_process import ingest_process
from tests.conftest import Infra
from tests.integration.conftest import ACME_KEY
from tests.integration.test_webhook_delivery import job
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.acceptance
JOBS = 300
REPLY_SECONDS = 0.2  # each reply waits this long: the kill finds attempts in flight
ACME = (("authorization", f"Bearer {ACME_KEY}"),)


def webhooks_process(infra: Infra, database_url: str, ingest: str, logs: Path) -> ServiceProcess:
    suffix = uuid.uuid4().hex[:8]
    return ServiceProcess(
        "webhooks",
        {
            "WEBHOOKS_ADDR": f"127.0.0.1:{free_port()}",
            "WEBHOOKS_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
            "WEBHOOKS_API_KEYS": f"{ACME_KEY}=acme",
            "WEBHOOKS_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "INGEST_ADDR": ingest,
            "DELIVERIES_TOPIC": f"herald.deliveries.{suffix}",
            "DELIVERIES_GROUP": f"g{suffix}",
            "DLQ_TOPIC": f"herald.dlq.{suffix}",
            "DELIVERY_TIMEOUT_SECONDS": "1",  # a cut-off attempt's lease ends 31 s later
            "DELIVERY_CONCURRENCY": "4",  # so that the kill finds attempts in flight
            "WEBHOOKS_ALLOWED_NETWORKS": "127.0.0.0/8",
            "LOG_LEVEL": "WARNING",
        },
        logs / "webhooks.log",
    )


async def test_kill_9_mid_delivery_then_restart_every_job_is_delivered(
    infra: Infra, database_url: str, topic: str, service_logs: Path
) -> None:
    ingest = ingest_process(infra, database_url, topic, service_logs)
    await asyncio.to_thread(ingest.start)
    webhooks = webhooks_process(infra, database_url, ingest.address, service_logs)
    await asyncio.to_thread(webhooks.start)
    try:
        async with Receiver() as receiver:
            receiver.script("/hook", *[Reply(delay=REPLY_SECONDS)] * JOBS)
            created = await create_webhook(webhooks.address, receiver.url())
            webhook_id = created.webhook.id
            event_ids = [str(uuid.uuid4()) for _ in range(JOBS)]
            await produce_jobs(infra, webhooks.env["DELIVERIES_TOPIC"], webhook_id, event_ids)
            await receiver.wait_for(40, timeout=60)
            webhooks.kill()  # attempts in flight (their replies are due), others not tried
            in_flight = {
                json.loads(r.body)["id"]
                for r in receiver.received()
                if r.at > time.monotonic() - REPLY_SECONDS
            }
            await asyncio.to_thread(webhooks.start)
            # The delivery log shows every job delivered: the attempts the kill cut off
            # are made again once their leases end (31 s).
            stats = await delivery_stats(webhooks.address, webhook_id)
            for _ in range(90):
                if stats.successful == JOBS:
                    break
                await asyncio.sleep(1)
                stats = await delivery_stats(webhooks.address, webhook_id)
            requests = receiver.received()
    finally:
        webhooks.terminate()
        ingest.terminate()
    assert in_flight, "the kill cut attempts off"
    assert (stats.total, stats.successful, stats.failed) == (JOBS, JOBS, 0)
    delivery_ids: dict[str, set[str]] = {}
    for request in requests:
        event_id = json.loads(request.body)["id"]
        delivery_ids.setdefault(event_id, set()).add(request.headers["webhook-id"])
    assert set(delivery_ids) == set(event_ids)
    assert all(len(ids) == 1 for ids in delivery_ids.values()), "a repeat is the same delivery"
    repeated = {e for e in event_ids if sum(json.loads(r.body)["id"] == e for r in requests) > 1}
    assert in_flight <= repeated, "what the kill cut off was sent again"


async def create_webhook(address: str, url: str) -> webhooks_pb2.CreateWebhookResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = webhooks_pb2_grpc.WebhookServiceStub(channel)
        return await stub.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(
                webhook=webhooks_pb2.Webhook(name="crash", url=url, event_types=["message.created"])
            ),
            metadata=ACME,
        )


async def delivery_stats(address: str, webhook_id: str) -> webhooks_pb2.GetDeliveryStatsResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = webhooks_pb2_grpc.WebhookServiceStub(channel)
        return await stub.GetDeliveryStats(
            webhooks_pb2.GetDeliveryStatsRequest(webhook_id=webhook_id), metadata=ACME
        )


async def produce_jobs(infra: Infra, topic: str, webhook_id: str, event_ids: list[str]) -> None:
    producer: AIOKafkaProducer = kafka.make_producer(infra.kafka_settings())
    await producer.start()
    try:
        for event_id in event_ids:
            await producer.send(topic, job(webhook_id, event_id=event_id), key=webhook_id.encode())
        await producer.flush()
    finally:
        await producer.stop()
