"""ingest as a process: kill -9 under load loses nothing acknowledged; SIGTERM drains."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path

import grpc
import pytest
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc

from tests.acceptance.conftest import ServiceProcess, free_port
from tests.conftest import Infra
from tests.fixtures.seeds import LEGACY_EXAMPLES
from tests.kafka_helpers import headers, read_topic

pytestmark = pytest.mark.acceptance


def event() -> str:
    doc = json.loads(LEGACY_EXAMPLES["user_registered"])
    doc["event_id"] = str(uuid.uuid4())
    return json.dumps(doc)


def ingest_process(infra: Infra, database_url: str, topic: str, logs: Path) -> ServiceProcess:
    return ServiceProcess(
        "ingest",
        {
            "INGEST_ADDR": f"127.0.0.1:{free_port()}",
            "INGEST_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
            "EVENTS_TOPIC": topic,
            "LOG_LEVEL": "WARNING",
            "SHUTDOWN_GRACE_SECONDS": "10",
        },
        logs / "ingest.log",
    )


async def publish_until_stopped(
    stub: ingest_pb2_grpc.IngestServiceAsyncStub, acked: list[str], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            response = await stub.Publish(ingest_pb2.PublishRequest(json=event()), timeout=5)
            acked.append(response.event_id)
        except grpc.aio.AioRpcError:
            return  # the server is gone: what it acknowledged is what counts


async def test_kill_9_under_load_loses_nothing_acknowledged(
    infra: Infra, database_url: str, topic: str, service_logs: Path
) -> None:
    service = ingest_process(infra, database_url, topic, service_logs)
    await asyncio.to_thread(service.start)
    acked: list[str] = []
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        callers = [asyncio.create_task(publish_until_stopped(stub, acked, stop)) for _ in range(16)]
        while len(acked) < 300:
            await asyncio.sleep(0.01)
        service.kill()  # mid-load: some calls are in flight, some rows unrelayed
        stop.set()
        await asyncio.gather(*callers)
    killed_at = len(acked)
    assert killed_at >= 300

    await asyncio.to_thread(service.start)  # the restarted relay sends what was left
    try:
        records = await read_topic(infra.kafka_settings(), topic, killed_at, timeout=60)
        on_kafka = {headers(r)["ce_id"] for r in records}
        missing = set(acked) - on_kafka
        assert not missing, f"{len(missing)} acknowledged events never reached Kafka"
    finally:
        service.terminate()


async def test_sigterm_drains_in_flight_calls_then_exits_zero(
    infra: Infra, database_url: str, topic: str, service_logs: Path
) -> None:
    service = ingest_process(infra, database_url, topic, service_logs)
    await asyncio.to_thread(service.start)
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        batch = ingest_pb2.PublishBatchRequest(
            requests=[ingest_pb2.PublishRequest(json=event()) for _ in range(1000)]
        )
        in_flight = [asyncio.ensure_future(stub.PublishBatch(batch)) for _ in range(3)]
        await asyncio.sleep(0.05)
        code = await asyncio.to_thread(service.terminate)
        results = []
        for call in in_flight:
            with contextlib.suppress(grpc.aio.AioRpcError):
                results.append(await call)
    assert code == 0, service.log_path.read_text()[-2000:]
    # calls the server had started were answered, not cut off
    assert results, "in-flight calls must be drained on SIGTERM"
    answered = {r.event_id for response in results for r in response.results}
    records = await read_topic(infra.kafka_settings(), topic, len(answered), timeout=30)
    assert answered <= {headers(r)["ce_id"] for r in records}
