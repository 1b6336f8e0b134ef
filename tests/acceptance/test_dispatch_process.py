"""dispatch as a process: kill -9 mid-stream, restart, and every event still makes its
job exactly once (repeats carry the same job id)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import grpc
import pytest
from herald.dispatch.v1 import notification_pb2
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc

from tests.acceptance.conftest import ServiceProcess, free_port
from tests.acceptance.test_ingest_process import ingest_process
from tests.conftest import Infra
from tests.fixtures.seeds import LEGACY_EXAMPLES
from tests.kafka_helpers import headers, read_matching

pytestmark = pytest.mark.acceptance


def dispatch_process(
    infra: Infra, database_url: str, topic: str, ingest: str, routes: Path, logs: Path
) -> ServiceProcess:
    suffix = uuid.uuid4().hex[:8]
    return ServiceProcess(
        "dispatch",
        {
            "DISPATCH_ADDR": f"127.0.0.1:{free_port()}",
            "DISPATCH_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
            "EVENTS_TOPIC": topic,
            "DISPATCH_GROUP": f"g{suffix}",
            "DELIVERIES_TOPIC": f"herald.deliveries.{suffix}",
            "DLQ_TOPIC": f"herald.dlq.{suffix}",
            "INGEST_ADDR": ingest,
            "WEBHOOKS_ADDR": f"127.0.0.1:{free_port()}",  # none: only routes here
            "ROUTES_FILE": str(routes),
            "BUILTIN_ROUTES": "false",
            "LOG_LEVEL": "WARNING",
        },
        logs / "dispatch.log",
    )


async def test_kill_9_mid_stream_then_restart_every_event_makes_one_job(
    infra: Infra, database_url: str, topic: str, service_logs: Path
) -> None:
    jobs_topic = f"herald.test.jobs.{uuid.uuid4().hex[:8]}"
    routes = service_logs / "routes.json"
    routes.write_text(
        json.dumps(
            [
                {
                    "name": "welcome",
                    "filter": {"type": {"exact": "user_registered"}},
                    "target": {
                        "topic": jobs_topic,
                        "channel": "email",
                        "templateCode": "welcome",
                        "recipient": "$data.user_id",
                    },
                }
            ]
        )
    )
    ingest = ingest_process(infra, database_url, topic, service_logs)
    await asyncio.to_thread(ingest.start)
    published: list[str] = []
    try:
        async with grpc.aio.insecure_channel(ingest.address) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            for _ in range(600):
                doc = json.loads(LEGACY_EXAMPLES["user_registered"])
                doc["event_id"] = str(uuid.uuid4())
                await stub.Publish(ingest_pb2.PublishRequest(json=json.dumps(doc)))
                published.append(doc["event_id"])
        dispatch = dispatch_process(
            infra, database_url, topic, ingest.address, routes, service_logs
        )
        await asyncio.to_thread(dispatch.start)
        wanted = set(published)

        def mine(record: object) -> bool:
            return headers(record).get("ce_id") in wanted

        await read_matching(infra.kafka_settings(), jobs_topic, mine, 100, timeout=60)
        dispatch.kill()  # mid-stream: a batch sent but not committed, or half sent
        await asyncio.to_thread(dispatch.start)
        try:
            records = await read_matching(
                infra.kafka_settings(),
                jobs_topic,
                mine,
                len(published),
                timeout=90,
                distinct=lambda r: headers(r).get("ce_id"),  # repeats after the kill
            )
        finally:
            dispatch.terminate()
    finally:
        ingest.terminate()
    by_event: dict[str, set[str]] = {}
    for record in records:
        job = notification_pb2.NotificationJob.FromString(record.value)
        by_event.setdefault(job.event_id, set()).add(job.job_id)
    assert set(by_event) == wanted, f"{len(wanted - set(by_event))} events made no job"
    assert all(len(ids) == 1 for ids in by_event.values()), "a repeat is the same job"
