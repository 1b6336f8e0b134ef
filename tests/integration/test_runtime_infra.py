"""The shared runtime against the real servers: migrations, Kafka security, /metrics."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka.errors import KafkaError

from herald.runtime import db, kafka
from herald.runtime.metrics import MetricsServer
from herald.runtime.settings import KafkaSettings
from tests.conftest import Infra
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration
MIGRATIONS = Path(__file__).parents[2] / "src/herald/services/ingest/sql/migrations"


async def test_migrations_apply_once(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        migrations = db.read_migrations("ingest", MIGRATIONS)
        assert await db.migrate(conn, migrations) == [1]
        assert await db.migrate(conn, migrations) == []
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'ingest'")
        }
        assert tables == {"event_types", "events", "idempotency_keys", "outbox"}
    finally:
        await conn.close()


async def test_producer_honours_sasl_scram_settings(infra: Infra) -> None:
    if infra.kafka is None:
        pytest.fail("needs the local Kafka's SCRAM-SHA-512 listener")
    scram = infra.kafka.scram_bootstrap_servers
    topic = f"herald.scram.t{uuid.uuid4().hex[:8]}"
    good = KafkaSettings(
        bootstrap_servers=scram,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="vibe",
        sasl_password="vibe-secret",
    )
    producer = kafka.make_producer(good)
    await producer.start()
    try:
        await (await producer.send(topic, b"hello", key=b"k"))
    finally:
        await producer.stop()
    [record] = await read_topic(infra.kafka_settings(), topic, 1)
    assert record.value == b"hello"

    bad = good.model_copy(update={"sasl_password": "wrong"})
    producer = kafka.make_producer(bad, request_timeout_ms=3000)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(producer.start(), 20)
    await producer.stop()


def test_ssl_settings_build_a_context_from_the_ca_file() -> None:
    cafile = "/etc/ssl/certs/ca-certificates.crt"
    if not Path(cafile).exists():
        pytest.fail("the system CA bundle is expected on Debian")
    options = kafka.connection_options(
        KafkaSettings(
            bootstrap_servers="broker:9091",
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="u",
            sasl_password="p",
            ssl_cafile=cafile,
        )
    )
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"


def test_metrics_endpoint_serves_prometheus_text() -> None:
    server = MetricsServer("127.0.0.1", 0)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read().decode()
    finally:
        server.close()
    for name in (
        "events_published_total",
        "events_retry_total",
        "events_latency_seconds",
        "events_dlq_total",
    ):
        assert name in body
