"""An ingest service running in this process on a free port, over the real servers."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from herald.ingest.v1 import ingest_pb2_grpc

from herald.runtime.server import Running, start
from herald.services.ingest.app import build
from herald.services.ingest.settings import IngestSettings
from herald.services.webhooks.settings import WebhooksSettings
from tests.conftest import Infra

pytestmark = pytest.mark.integration


@dataclass
class IngestUnderTest:
    """A started ingest and a client stub for it."""

    running: Running
    stub: ingest_pb2_grpc.IngestServiceAsyncStub
    channel: grpc.aio.Channel
    settings: IngestSettings

    async def stop(self) -> None:
        await self.channel.close()
        await self.running.stop(grace=1)


async def start_ingest(
    infra: Infra, database_url: str, topic: str, **overrides: object
) -> IngestUnderTest:
    """Builds and starts ingest with test settings (a fresh database and topic)."""
    settings = IngestSettings(
        database_url=database_url,
        events_topic=topic,
        ingest_addr="127.0.0.1:0",
        events_topic_partitions=3,
        **overrides,  # type: ignore[arg-type]
    )
    app = await build(settings, infra.kafka_settings())
    running = await start(app, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = ingest_pb2_grpc.IngestServiceStub(channel)  # typed as the async stub
    return IngestUnderTest(running, stub, channel, settings)


@pytest.fixture
async def ingest(infra: Infra, database_url: str, topic: str) -> AsyncIterator[IngestUnderTest]:
    service = await start_ingest(infra, database_url, topic)
    yield service
    await service.stop()


async def end_lock_holders_session(database_url: str) -> int:
    """Terminates the sessions holding advisory locks (a relay round's: its lanes or its
    relay lock), as a failover or idle_in_transaction_session_timeout would; how many."""
    admin = await asyncpg.connect(database_url)
    try:
        ended: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
            " WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    return ended


ACME_KEY = "hk_test_acme_0123456789abcdef"
GLOBEX_KEY = "hk_test_globex_0123456789abcdef"
INTERNAL_KEY = "hk_test_internal_0123456789abcdef"


def webhooks_settings(database_url: str, ingest_port: int, **overrides: object) -> WebhooksSettings:
    """Webhooks settings for a test: its own topics, consumer group and master key."""
    suffix = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "database_url": database_url,
        "webhooks_addr": "127.0.0.1:0",
        "webhooks_api_keys": f"{ACME_KEY}=acme,{GLOBEX_KEY}=globex",
        "webhooks_internal_key": INTERNAL_KEY,
        "webhooks_master_key": base64.b64encode(os.urandom(32)).decode(),
        "ingest_addr": f"127.0.0.1:{ingest_port}",
        "deliveries_topic": f"herald.deliveries.t{suffix}",
        "deliveries_group": f"g{suffix}",
        "dlq_topic": f"herald.dlq.t{suffix}",
        "delivery_timeout_seconds": 1.0,
        "webhooks_allowed_networks": "127.0.0.0/8",
    }
    values.update(overrides)
    return WebhooksSettings(**values)  # type: ignore[arg-type]
