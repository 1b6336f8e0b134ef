"""The outbox relay as a process of its own (as ``make run`` deploys it): it sends
what ingest accepts, a kill -9 of the relay under load loses nothing, and SIGTERM
sends what is pending before it exits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc

from tests.acceptance.conftest import ServiceProcess, free_port
from tests.acceptance.test_ingest_process import ingest_process, publish_until_stopped
from tests.conftest import Infra
from tests.integration.test_ingest_durability import event_json, pending_rows
from tests.kafka_helpers import headers, read_topic

pytestmark = pytest.mark.acceptance


def relay_process(infra: Infra, database_url: str, logs: Path) -> ServiceProcess:
    return ServiceProcess(
        "ingest_relay",
        {
            "INGEST_RELAY_ADDR": f"127.0.0.1:{free_port()}",
            "INGEST_RELAY_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
            "LOG_LEVEL": "WARNING",
            "SHUTDOWN_GRACE_SECONDS": "10",
        },
        logs / "ingest_relay.log",
    )


async def publish_until(
    stub: ingest_pb2_grpc.IngestServiceAsyncStub, acked: list[str], n: int
) -> None:
    stop = asyncio.Event()
    callers = [asyncio.create_task(publish_until_stopped(stub, acked, stop)) for _ in range(16)]
    while len(acked) < n and not all(c.done() for c in callers):
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*callers)


async def test_a_relay_process_sends_what_ingest_accepts_and_a_kill_9_loses_nothing(
    infra: Infra, database_url: str, topic: str, service_logs: Path
) -> None:
    # The relay starts first, on an empty database: it migrates ingest's tables itself.
    relay = relay_process(infra, database_url, service_logs)
    await asyncio.to_thread(relay.start)
    ingest = ingest_process(infra, database_url, topic, service_logs)
    ingest.env["RELAY_ENABLED"] = "false"
    await asyncio.to_thread(ingest.start)
    acked: list[str] = []
    try:
        async with grpc.aio.insecure_channel(ingest.address) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            await publish_until(stub, acked, 50)
            first = len(acked)
            sent = await read_topic(infra.kafka_settings(), topic, first, timeout=30)
            assert {headers(r)["ce_id"] for r in sent} == set(acked)

            killer = asyncio.create_task(publish_until(stub, acked, first + 600))
            while len(acked) < first + 300:
                await asyncio.sleep(0.01)
            relay.kill()  # mid-load: some rows sent and not marked, some not sent yet
            await killer  # ingest goes on accepting without any relay
            assert len(acked) >= first + 600

        await asyncio.to_thread(relay.start)  # the restarted relay sends what was left
        records = await read_topic(infra.kafka_settings(), topic, len(acked), timeout=60)
        on_kafka = {headers(r)["ce_id"] for r in records}
        missing = set(acked) - on_kafka
        assert not missing, f"{len(missing)} acknowledged events never reached Kafka"
        assert await asyncio.to_thread(relay.terminate) == 0, relay.log_path.read_text()[-2000:]
    finally:
        if ingest.proc is not None and ingest.proc.poll() is None:
            ingest.terminate()
        if relay.proc is not None and relay.proc.poll() is None:
            relay.terminate()


async def test_sigterm_sends_what_is_pending_before_the_relay_exits(
    infra: Infra, database_url: str, topic: str, service_logs: Path
) -> None:
    ingest = ingest_process(infra, database_url, topic, service_logs)
    ingest.env["RELAY_ENABLED"] = "false"
    await asyncio.to_thread(ingest.start)
    relay = relay_process(infra, database_url, service_logs)
    # One key (one lane) and one row per round: ~1,000 rounds, seconds of sending.
    relay.env.update(RELAY_BATCH_SIZE="1", SHUTDOWN_GRACE_SECONDS="60")
    try:
        async with grpc.aio.insecure_channel(ingest.address) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            requests = [ingest_pb2.PublishRequest(json=event_json("k", i)) for i in range(1000)]
            reply = await stub.PublishBatch(ingest_pb2.PublishBatchRequest(requests=requests))
        ids = {r.event_id for r in reply.results}
        assert len(ids) == 1000

        await asyncio.to_thread(relay.start)
        pending = await pending_rows(database_url)
        assert pending > 0, "the relay sent everything before SIGTERM: nothing to drain"
        assert await asyncio.to_thread(relay.terminate, 60) == 0
        assert await pending_rows(database_url) == 0, "what was pending was sent on SIGTERM"
        records = await read_topic(infra.kafka_settings(), topic, 1000, timeout=30)
        assert {headers(r)["ce_id"] for r in records} == ids
    finally:
        ingest.terminate()
        if relay.proc is not None and relay.proc.poll() is None:
            relay.terminate()
