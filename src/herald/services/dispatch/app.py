"""Wiring: settings → pool, routes, subscriptions cache, consumer, retrier → the runtime."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import grpc
import structlog
from herald.dispatch.v1 import dispatch_pb2, dispatch_pb2_grpc

from herald.runtime import db, kafka
from herald.runtime.announcements import Announcements
from herald.runtime.channels import internal_channel, internal_tls
from herald.runtime.dlq_outbox import DeadLetterOutbox
from herald.runtime.key_check import optional_key_check
from herald.runtime.publisher import EventPublisher
from herald.runtime.retention import Purge, run_purges
from herald.runtime.server import App
from herald.runtime.settings import DAY_SECONDS, KafkaSettings
from herald.services.dispatch.consumer import EventConsumer
from herald.services.dispatch.deadletters import DeadLetters
from herald.services.dispatch.dispatcher import Dispatcher
from herald.services.dispatch.retrier import Retrier
from herald.services.dispatch.route_table import RouteTable
from herald.services.dispatch.routes import routes_from_json
from herald.services.dispatch.servicer import DispatchServicer
from herald.services.dispatch.settings import METHODS, DispatchSettings
from herald.services.dispatch.store import Q, RouteStore
from herald.services.dispatch.subscriptions import SubscriptionCache

log = structlog.get_logger("herald.dispatch")
MIGRATIONS = Path(__file__).with_name("sql") / "migrations"
BUILTIN_ROUTES = Path(__file__).with_name("builtin_routes.json")
SERVICE_NAME = dispatch_pb2.DESCRIPTOR.services_by_name["DispatchService"].full_name


async def load_routes(store: RouteStore, path: Path) -> int:
    """Stores the routes of a JSON file (a list of Route objects) by name. A bad
    ROUTES_FILE has already stopped the start (DispatchSettings checks it)."""
    try:
        routes = routes_from_json(path.read_text())  # noqa: ASYNC240 (once, at start)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    changed = 0
    for route in routes:
        changed += await store.upsert(route)
    log.info("routes.loaded", file=str(path), routes=len(routes), changed=changed)
    return changed


async def build(settings: DispatchSettings, kafka_settings: KafkaSettings) -> App:
    """Connects to PostgreSQL, migrates, loads routes; returns the App."""
    pool = await db.create_pool(settings.database_url, settings.database_pool_size)
    async with pool.acquire() as conn:
        await db.migrate(conn, db.read_migrations("dispatch", MIGRATIONS))
    own_topics = settings.own_topics()
    store = RouteStore(pool, own_topics)
    if settings.builtin_routes:
        await load_routes(store, BUILTIN_ROUTES)
    if settings.routes_file is not None:
        await load_routes(store, settings.routes_file)
    routes = RouteTable(store, settings.database_url)
    await routes.load()

    tls = internal_tls(settings)
    webhooks = internal_channel(settings.webhooks_addr, tls)
    ingest = internal_channel(settings.ingest_addr, tls, settings.ingest_client_key)
    subscriptions = SubscriptionCache(
        webhooks,
        settings.webhooks_internal_key,
        settings.subscriptions_refresh_seconds,
        settings.subscriptions_max_staleness_seconds,
    )
    producer = kafka.LateProducer(
        partial(
            kafka.make_producer,
            kafka_settings,
            linger_ms=5,
            request_timeout_ms=int(settings.send_timeout_seconds * 1000),
        ),
        "dispatch-producer",
    )

    dispatcher = Dispatcher(
        producer.get,
        routes,
        subscriptions,
        settings.deliveries_topic,
        settings.send_timeout_seconds,
        webhooks=settings.webhooks_fanout,
        reserved_topics=own_topics,
    )
    announcements = Announcements(
        pool, EventPublisher(ingest, source="urn:herald:dispatch"), "dispatch"
    )
    outbox = DeadLetterOutbox(pool, producer.get, "dispatch")
    dead = DeadLetters(pool, producer.get, outbox, announcements, settings.dlq_topic)
    schedule = settings.schedule()
    consumer = EventConsumer(
        pool,
        partial(
            kafka.make_consumer,
            kafka_settings,
            settings.events_topic,
            group_id=settings.dispatch_group,
        ),
        dispatcher,
        subscriptions,
        dead,
        schedule,
        wait_for_webhooks=settings.webhooks_fanout,
    )
    retrier = Retrier(pool, dispatcher, dead, schedule, send_timeout=settings.send_timeout_seconds)
    servicer = DispatchServicer(pool, store, retrier.wake, own_topics)
    topics = [settings.deliveries_topic, settings.dlq_topic, *settings.notification_topics()]
    await kafka.ensure_topics_at_start(kafka_settings, topics, "dispatch")

    def register(server: grpc.aio.Server) -> None:
        dispatch_pb2_grpc.add_DispatchServiceServicer_to_server(servicer, server)

    async def close() -> None:
        await producer.stop()
        await webhooks.close()
        await ingest.close()
        await pool.close()

    key_check = optional_key_check(
        settings.dispatch_api_keys,
        settings.dispatch_api_key_methods,
        "DISPATCH_API_KEY_METHODS",
        METHODS,
        key_file=settings.dispatch_api_keys_file,
        file_variable="DISPATCH_API_KEYS_FILE",
        poll_seconds=settings.api_keys_file_poll_seconds,
        client_names=settings.client_names(),
    )
    return App(
        name="dispatch",
        service_names=[SERVICE_NAME],
        register=register,
        health_checks={"postgres": partial(db.check, pool), "kafka": producer.check},
        workers=[
            producer.start,
            *([subscriptions.run] if settings.webhooks_fanout else []),
            routes.run,
            consumer.run,
            retrier.run,
            announcements.run,
            outbox.run,
            partial(run_purges, pool, [dead_letter_purge(settings)]),
            *key_check.workers,
        ],
        interceptors=key_check.interceptors,
        on_stop=[close],
        # Batches of up to 2,000 events alive at once, next to no cyclic garbage: at
        # 10,000 a young collection ran every ~500 events and found nothing.
        gc_young_threshold=100_000,
    )


def dead_letter_purge(settings: DispatchSettings) -> Purge:
    """Dead letters older than DEAD_LETTER_RETENTION_DAYS go (every 10 minutes)."""
    return Purge(
        "dead_letters", Q.purge_dead_letters, (settings.dead_letter_retention_days * DAY_SECONDS,)
    )
