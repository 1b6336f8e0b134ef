"""The outbox relay's wiring: inside ingest (``RELAY_ENABLED``), or as a process of its
own (``python -m herald.services.ingest_relay``), any number of either side by side.

A relay of its own takes a core of its own: on the 2-core bench box it took
``PublishBatch`` end to end from 9,700-10,500 to 13,400-14,300 events/s (three
alternating pairs of runs), and ``make run`` deploys it so. It is woken by the
writers' ``NOTIFY herald_outbox`` and serves only gRPC health (SERVING while
PostgreSQL and Kafka are reachable) and ``/metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import asyncpg
import grpc

from herald.runtime import db, kafka
from herald.runtime.health import Check
from herald.runtime.notify import listen
from herald.runtime.server import App, Worker, spending_grace
from herald.runtime.settings import KafkaSettings, RuntimeSettings
from herald.services.ingest.relay import Relay
from herald.services.ingest.settings import IngestRelaySettings, RelaySettings

MIGRATIONS = Path(__file__).with_name("sql") / "migrations"


async def open_pool(settings: RuntimeSettings) -> asyncpg.Pool:
    """A pool on ingest's database, migrated (whichever process starts first does it)."""
    pool = await db.create_pool(settings.database_url, settings.database_pool_size)
    async with pool.acquire() as conn:
        await db.migrate(conn, db.read_migrations("ingest", MIGRATIONS))
    return pool


@dataclass
class RelayParts:
    """A relay and what a process running it adds to its App."""

    relay: Relay
    workers: list[Worker]
    health_checks: dict[str, Check]
    on_stop: list[Worker] = field(default_factory=list)


def relay_parts(
    settings: RelaySettings, kafka_settings: KafkaSettings, pool: asyncpg.Pool
) -> RelayParts:
    """The relay, its workers (relay loops, dead letters), its Kafka health check and
    its stop: send what is pending within the grace period, then flush the producer."""
    relay = Relay(
        pool,
        partial(kafka.make_producer, kafka_settings),
        concurrency=settings.relay_concurrency,
        batch_size=settings.relay_batch_size,
        dlq_topic=settings.dlq_topic,
    )

    async def kafka_check() -> None:
        if relay.producer is None:
            raise ConnectionError("Kafka producer not connected")
        await kafka.check(relay.producer)

    return RelayParts(
        relay,
        [relay.run, relay.dead_letters.run],
        {"kafka": kafka_check},
        [spending_grace(partial(relay.drain, settings.shutdown_grace_seconds)), relay.stop],
    )


async def build_relay(settings: IngestRelaySettings, kafka_settings: KafkaSettings) -> App:
    """A process that only relays: no IngestService, health and /metrics only."""
    pool = await open_pool(settings)
    parts = relay_parts(settings, kafka_settings, pool)
    wake = parts.relay.wake
    # Woken by every writer's commit; after a reconnect, a wake-up catches up.
    notified = partial(listen, settings.database_url, {"herald_outbox": wake}, on_connect=wake)
    await kafka.ensure_topics_at_start(kafka_settings, [settings.dlq_topic], "ingest")

    def register(_server: grpc.aio.Server) -> None:
        """Nothing but the standard health and reflection services."""

    return App(
        name="ingest_relay",
        service_names=[],
        register=register,
        health_checks={"postgres": partial(db.check, pool), **parts.health_checks},
        workers=[*parts.workers, notified],
        on_stop=[*parts.on_stop, pool.close],
        workers_stop_seconds=kafka.RELAY_STOP_SECONDS,
    )
