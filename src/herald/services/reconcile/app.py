"""Wiring: settings → pool, ledger, consumer, relay, sweeper, announcements → the runtime."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import grpc
import structlog
from herald.reconcile.v1 import reconcile_pb2, reconcile_pb2_grpc

from herald.runtime import db, kafka
from herald.runtime.announcements import Announcements
from herald.runtime.backlog import BacklogReporter
from herald.runtime.channels import internal_channel, internal_tls
from herald.runtime.key_check import optional_key_check
from herald.runtime.publisher import EventPublisher
from herald.runtime.retention import Purge, run_purges
from herald.runtime.server import App
from herald.runtime.settings import DAY_SECONDS, KafkaSettings
from herald.services.reconcile.consumer import InputConsumer
from herald.services.reconcile.ledger import Ledger
from herald.services.reconcile.outputs import OutputConfig
from herald.services.reconcile.reconciler import Reconciler
from herald.services.reconcile.relay import VibeRelay
from herald.services.reconcile.servicer import ReconcileServicer
from herald.services.reconcile.settings import METHODS, ReconcileSettings
from herald.services.reconcile.store import Q
from herald.services.reconcile.sweeper import Sweeper
from herald.services.reconcile.vibe import Headers

log = structlog.get_logger("herald.reconcile")
MIGRATIONS = Path(__file__).with_name("sql") / "migrations"
# integration.* events carry a source urn:mastermobile:<system> and a dataschema.
SOURCE = "urn:mastermobile:integration:herald-reconcile"
# What to check while the outbox is not draining (runtime.backlog).
BEHIND = (
    "outputs wait for the relay: is Vibeapp's Kafka reachable (VIBE_KAFKA_*)? An output "
    "it refuses for good is set aside as an output_refused discrepancy"
)
SERVICE_NAME = reconcile_pb2.DESCRIPTOR.services_by_name["ReconcileService"].full_name


async def build(
    settings: ReconcileSettings, herald_kafka: KafkaSettings, vibe_kafka: KafkaSettings
) -> App:
    """Connects to PostgreSQL, migrates; returns the App (Kafka clients start as workers)."""
    pool = await db.create_pool(settings.database_url, settings.database_pool_size)
    async with pool.acquire() as conn:
        await db.migrate(conn, db.read_migrations("reconcile", MIGRATIONS))
    config = OutputConfig(
        settings.output_topics(),
        settings.output_formats(),
        Headers(settings.vibe_schema_version, settings.vibe_application_id),
    )
    ingest = internal_channel(
        settings.ingest_addr, internal_tls(settings), settings.ingest_client_key
    )
    producer = kafka.LateProducer(  # Herald's own cluster: dead letters
        partial(kafka.make_producer, herald_kafka, linger_ms=5), "reconcile-dlq-producer"
    )
    announcements = Announcements(pool, EventPublisher(ingest, source=SOURCE), "reconcile")
    relay = VibeRelay(
        pool,
        partial(kafka.make_producer, vibe_kafka, linger_ms=5),
        dead_letters=producer.get,
        dlq_topic=settings.dlq_topic,
        refused_retry=settings.refused_retry_seconds,
        found=announcements.wake,
    )

    def wake() -> None:  # a ledger transaction committed: outputs, discrepancies' alerts
        relay.wake()
        announcements.wake()

    consumer = InputConsumer(
        partial(
            kafka.make_consumer,
            herald_kafka,
            *settings.input_topics(),
            group_id=settings.reconcile_group,
            # A fetch waiting for records holds up partitions resumed meanwhile (one
            # fetch per broker at a time): events read first → orders wait up to this.
            fetch_max_wait_ms=100,
        ),
        producer.get,
        settings.input_topics(),
        Ledger(pool, config, relay.dead_letters, settings.dlq_topic),
        settings.dlq_topic,
        wake,
        concurrency=settings.ledger_concurrency,
    )
    reconciler = Reconciler(pool, config, announcements, wake)
    servicer = ReconcileServicer(pool, reconciler, settings.report_retention_days)
    if settings.create_topics:
        for where, topics in (
            (herald_kafka, [*settings.input_topics(), settings.dlq_topic]),
            (vibe_kafka, list(settings.output_topics().values())),
        ):
            await kafka.ensure_topics_at_start(where, topics, "reconcile")

    async def kafka_check() -> None:
        await producer.check()
        if relay.producer is None:
            raise ConnectionError("Vibeapp's Kafka producer not connected")
        await kafka.check(relay.producer)

    def register(server: grpc.aio.Server) -> None:
        reconcile_pb2_grpc.add_ReconcileServiceServicer_to_server(servicer, server)

    async def close() -> None:
        await producer.stop()
        await ingest.close()
        await pool.close()

    key_check = optional_key_check(
        settings.reconcile_api_keys,
        settings.reconcile_api_key_methods,
        "RECONCILE_API_KEY_METHODS",
        METHODS,
        key_file=settings.reconcile_api_keys_file,
        file_variable="RECONCILE_API_KEYS_FILE",
        poll_seconds=settings.api_keys_file_poll_seconds,
        client_names=settings.client_names(),
    )
    return App(
        name="reconcile",
        service_names=[SERVICE_NAME],
        register=register,
        health_checks={"postgres": partial(db.check, pool), "kafka": kafka_check},
        workers=[
            producer.start,
            consumer.run,
            relay.run,
            Sweeper(pool, config, settings.park_limit_seconds, wake).run,
            announcements.run,
            relay.dead_letters.run,
            BacklogReporter(pool, Q.outbox_backlog, BEHIND).run,
            *([partial(run_purges, pool, retention)] if (retention := purges(settings)) else []),
            *key_check.workers,
        ],
        interceptors=key_check.interceptors,
        on_stop=[close],
        workers_stop_seconds=kafka.RELAY_STOP_SECONDS,  # the relay's round, cut short
        gc_young_threshold=100_000,  # faster than 10,000 in alternating bench runs
    )


def purges(settings: ReconcileSettings) -> list[Purge]:
    """Input coordinates and reports past their retention (0: kept for ever) go, every
    10 minutes. The outbox is Vibeapp's history (what it was sent, compared by
    RunReconciliation and by the next output of each entity): kept."""
    out = []
    if days := settings.input_retention_days:
        out += [
            Purge("inputs", Q.purge_inputs, (days * DAY_SECONDS,), returns_count=True),
            Purge("dead_inputs", Q.purge_dead_inputs, (days * DAY_SECONDS,), returns_count=True),
        ]
    if days := settings.report_retention_days:
        out.append(Purge("reports", Q.purge_reports, (days * DAY_SECONDS,)))
    return out
