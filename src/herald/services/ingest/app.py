"""Wiring: settings → pool, catalog, writer, relay (unless relays run as their own
processes: ``relay_app``) → the shared runtime."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial

import grpc
import structlog
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc

from herald.runtime import db, kafka
from herald.runtime.backlog import BacklogReporter
from herald.runtime.health import Check
from herald.runtime.key_check import optional_key_check
from herald.runtime.notify import listen
from herald.runtime.retention import Purge, run_purges
from herald.runtime.server import MAX_MESSAGE_BYTES, App, Worker
from herald.runtime.settings import DAY_SECONDS, KafkaSettings
from herald.services.ingest.catalog_store import CatalogStore
from herald.services.ingest.outbox import LANES
from herald.services.ingest.publish_limits import (
    PublishLimits,
    parse_application_id_limits,
    parse_source_limits,
    parse_type_limits,
)
from herald.services.ingest.relay import Relay
from herald.services.ingest.relay_app import open_pool, relay_parts
from herald.services.ingest.servicer import IngestServicer
from herald.services.ingest.settings import METHODS, IngestSettings
from herald.services.ingest.writer import EventWriter, Q

log = structlog.get_logger("herald.ingest")
# What to check while the outbox is not draining (runtime.backlog).
BEHIND = (
    "events wait for a relay: is one running (RELAY_ENABLED=true, or "
    "herald.services.ingest_relay) and is Kafka reachable?"
)
SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


def _connected(catalog: CatalogStore, relay: Relay | None) -> None:
    """The LISTEN connection (re)connected: catch up on what was notified meanwhile."""
    catalog.on_connected()
    if relay is not None:
        relay.wake()


async def build(settings: IngestSettings, kafka_settings: KafkaSettings) -> App:
    """Connects to PostgreSQL and Kafka, migrates, loads the catalog; returns the App."""
    pool = await open_pool(settings)
    catalog = CatalogStore(pool, settings.max_event_types)
    await catalog.load()
    workers: list[Worker] = []
    checks: dict[str, Check] = {"postgres": partial(db.check, pool)}
    stop_relay: list[Worker] = []
    relay = None
    if settings.relay_enabled:
        parts = relay_parts(settings, kafka_settings, pool)
        relay = parts.relay
        workers += parts.workers
        checks.update(parts.health_checks)
        stop_relay = parts.on_stop
    token = uuid.uuid4().hex  # tells this process's own NOTIFYs apart
    writer = EventWriter(
        pool,
        on_commit=relay.wake if relay else (lambda: None),
        committers=settings.writer_committers,
        idempotency_ttl=settings.idempotency_ttl_hours * 3600,
        notify_payload=token,
        linger=settings.writer_linger_ms / 1000,
    )
    workers.append(writer.run)
    handlers: dict[str, Callable[[str], None]] = {"herald_catalog": catalog.on_changed}
    if relay is not None:
        wake = relay.wake
        handlers["herald_outbox"] = lambda sender: None if sender == token else wake()
    # After a reconnect, whatever was notified meanwhile is caught up by a wake-up.
    workers.append(
        partial(
            listen,
            settings.database_url,
            handlers,
            on_connect=lambda: _connected(catalog, relay),
        )
    )
    purges = [
        Purge("idempotency_keys", Q.purge_keys),
        Purge("outbox", Q.purge_outbox, (settings.outbox_retention_hours * 3600,)),
        Purge("events", Q.purge_events, (settings.event_retention_days * DAY_SECONDS,)),
    ]
    workers.append(partial(run_purges, pool, purges))
    workers.append(BacklogReporter(pool, Q.outbox_backlog, BEHIND, (LANES,)).run)
    callers = settings.callers()
    type_limits = parse_type_limits(settings.ingest_api_key_event_types, callers)
    source_limits = parse_source_limits(settings.ingest_api_key_sources, callers)
    id_limits = parse_application_id_limits(settings.ingest_api_key_application_ids, callers)
    publish_limits = PublishLimits(type_limits, source_limits, id_limits)
    if unmatched := publish_limits.unmatched(catalog.catalog.names()):
        # Not refused: the type may be registered later (CreateEventType).
        log.warning(
            "type_limits.unmatched",
            patterns=unmatched,
            detail="INGEST_API_KEY_EVENT_TYPES: these patterns select no registered event "
            "type (misspelt?); the callers are refused such events until one is registered",
        )
    servicer = IngestServicer(
        catalog,
        writer,
        settings.events_topic,
        settings.max_event_bytes,
        max_schema_bytes=settings.max_schema_bytes,
        publish_limits=publish_limits,
    )

    def register(server: grpc.aio.Server) -> None:
        ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server)

    await kafka.ensure_topics_at_start(
        kafka_settings,
        [settings.events_topic, settings.dlq_topic],
        "ingest",
        {settings.events_topic: settings.events_topic_partitions},
    )

    key_check = optional_key_check(
        settings.ingest_api_keys,
        settings.ingest_api_key_methods,
        "INGEST_API_KEY_METHODS",
        METHODS,
        key_file=settings.ingest_api_keys_file,
        file_variable="INGEST_API_KEYS_FILE",
        poll_seconds=settings.api_keys_file_poll_seconds,
        client_names=settings.client_names(),
        other_limits={
            "INGEST_API_KEY_EVENT_TYPES": list(type_limits),
            "INGEST_API_KEY_SOURCES": list(source_limits),
            "INGEST_API_KEY_APPLICATION_IDS": list(id_limits),
        },
    )
    return App(
        name="ingest",
        service_names=[SERVICE_NAME],
        register=register,
        health_checks=checks,
        workers=[*workers, *key_check.workers],
        interceptors=key_check.interceptors,
        on_stop=[*stop_relay, pool.close],
        max_request_bytes=MAX_MESSAGE_BYTES,  # a PublishBatch of 1,000 events
        workers_stop_seconds=kafka.RELAY_STOP_SECONDS if stop_relay else 0.0,
    )
