"""Wiring: settings → pool, secret box, catalog client → the shared runtime."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import grpc
import structlog
from herald.webhooks.v1 import (
    subscriptions_pb2,
    subscriptions_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)

from herald.runtime import db, kafka
from herald.runtime.announcements import Announcements
from herald.runtime.auth import ApiKeys, BearerAuthInterceptor
from herald.runtime.channels import internal_channel, internal_tls
from herald.runtime.dlq_outbox import DeadLetterOutbox
from herald.runtime.key_check import KeyFile
from herald.runtime.key_pairs import parse_api_keys
from herald.runtime.publisher import EventPublisher
from herald.runtime.retention import Purge, run_purges
from herald.runtime.server import App
from herald.runtime.settings import DAY_SECONDS, KafkaSettings
from herald.services.webhooks.deliveries import Deliveries
from herald.services.webhooks.engine import Engine
from herald.services.webhooks.escalation import Escalation
from herald.services.webhooks.event_types import EventTypeNames
from herald.services.webhooks.http import DEFAULT_CONNECTIONS, DeliveryClient
from herald.services.webhooks.intake import Intake
from herald.services.webhooks.metrics import report_due
from herald.services.webhooks.secret_age import run_secret_age
from herald.services.webhooks.secret_box import SecretBox
from herald.services.webhooks.servicer import WebhookServicer
from herald.services.webhooks.settings import WebhooksSettings, internal_key_apart
from herald.services.webhooks.signing import HeaderNames
from herald.services.webhooks.store import Q, WebhookStore
from herald.services.webhooks.subscriptions import SubscriptionServicer

log = structlog.get_logger("herald.webhooks")
MIGRATIONS = Path(__file__).with_name("sql") / "migrations"
SERVICE_NAME = webhooks_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name
# What intake and the other workers may take to stop beside the engine's drain.
STOP_MARGIN_SECONDS = 5.0
SUBSCRIPTIONS = subscriptions_pb2.DESCRIPTOR.services_by_name["SubscriptionService"].full_name


async def build(settings: WebhooksSettings, kafka_settings: KafkaSettings) -> App:
    """Connects to PostgreSQL, migrates; returns the App."""
    pool = await db.create_pool(settings.database_url, settings.database_pool_size)
    async with pool.acquire() as conn:
        await db.migrate(conn, db.read_migrations("webhooks", MIGRATIONS))
    ingest = internal_channel(
        settings.ingest_addr, internal_tls(settings), settings.ingest_client_key
    )
    box = SecretBox(settings.master_key())
    store = WebhookStore(pool, box, settings.webhooks_max_per_tenant)
    tenant_keys = parse_api_keys(settings.webhooks_api_keys, "TENANT")
    await _warn_of_tenants_without_key(store, set(tenant_keys.values()))
    producer = kafka.LateProducer(partial(kafka.make_producer, kafka_settings), "webhooks-producer")

    client = delivery_client(settings)
    announcements = Announcements(
        pool, EventPublisher(ingest, source="urn:herald:webhooks"), "webhooks"
    )
    outbox = DeadLetterOutbox(pool, producer.get, "webhooks")
    engine = Engine(
        pool,
        client,
        box,
        Escalation(pool, outbox, announcements, settings.dlq_topic),
        concurrency=settings.delivery_concurrency,
        per_webhook=settings.delivery_concurrency_per_webhook,
        lease_seconds=settings.delivery_timeout_seconds + 30,
        disable_after=settings.disable_after_seconds or None,
        header_names=HeaderNames.under(settings.webhooks_header_prefix),
    )
    servicer = WebhookServicer(
        store,
        EventTypeNames(ingest, settings.event_types_cache_seconds),
        Deliveries(pool, store, engine.wake),
        settings.webhooks_header_prefix,
        untried=engine.untried,
    )
    intake = Intake(
        pool,
        partial(
            kafka.make_consumer,
            kafka_settings,
            settings.deliveries_topic,
            group_id=settings.deliveries_group,
        ),
        producer.get,
        engine.wake,
        dlq_topic=settings.dlq_topic,
        local=engine,
    )
    await kafka.ensure_topics_at_start(
        kafka_settings, [settings.deliveries_topic, settings.dlq_topic], "webhooks"
    )

    def register(server: grpc.aio.Server) -> None:
        webhooks_pb2_grpc.add_WebhookServiceServicer_to_server(servicer, server)
        subscriptions_pb2_grpc.add_SubscriptionServiceServicer_to_server(
            SubscriptionServicer(pool), server
        )

    async def close() -> None:
        await client.aclose()  # first: its resolver's thread must not outlive the loop
        await producer.stop()
        await ingest.close()
        await pool.close()

    rotation = settings.secret_rotation_days * DAY_SECONDS  # 0: secrets are not announced
    tenant_known = ApiKeys(tenant_keys)
    key_file = KeyFile(
        settings.webhooks_api_keys_file,
        "WEBHOOKS_API_KEYS_FILE",
        tenant_known,
        tenant_keys,
        name="TENANT",
        check=partial(internal_key_apart, settings.webhooks_internal_key),
        poll_seconds=settings.api_keys_file_poll_seconds,
    )
    return App(
        name="webhooks",
        service_names=[SERVICE_NAME, SUBSCRIPTIONS],
        register=register,
        health_checks={"postgres": partial(db.check, pool), "kafka": producer.check},
        workers=[
            producer.start,
            intake.run,
            engine.run,
            announcements.run,
            outbox.run,
            partial(report_due, pool),
            *([partial(run_secret_age, pool, announcements, rotation)] if rotation else []),
            partial(
                run_purges,
                pool,
                [
                    Purge(
                        "deliveries",
                        Q.purge_deliveries,
                        (settings.delivery_retention_days * DAY_SECONDS,),
                    )
                ],
            ),
            *([key_file.run] if settings.webhooks_api_keys_file else []),
        ],
        interceptors=[
            BearerAuthInterceptor(
                tenant_known,
                # Internal callers only: no tenant key opens it (nothing does when unset).
                internal={
                    f"/{SUBSCRIPTIONS}/": ApiKeys(
                        {settings.webhooks_internal_key: "herald"}
                        if settings.webhooks_internal_key
                        else {}
                    )
                },
            )
        ],
        on_stop=[engine.release, close],
        # The engine's drain (attempts in flight finish within their timeout), with room
        # for intake's stop: engine.release must not hand back a delivery still posted.
        workers_stop_seconds=engine.drain_seconds + STOP_MARGIN_SECONDS,
        gc_young_threshold=100_000,  # faster than 10,000 in alternating bench runs
    )


def delivery_client(settings: WebhooksSettings) -> DeliveryClient:
    """The HTTP client of the delivery engine: a connection for every attempt in flight
    (DELIVERY_CONCURRENCY goes to 2,000; fewer connections made attempts wait for one
    within their timeout, and healthy endpoints time out)."""
    return DeliveryClient(
        timeout=settings.delivery_timeout_seconds,
        allowed_networks=settings.networks_of(settings.webhooks_allowed_networks),
        user_agent=settings.webhooks_user_agent,
        max_connections=max(DEFAULT_CONNECTIONS, settings.delivery_concurrency),
    )


async def _warn_of_tenants_without_key(store: WebhookStore, named: set[str]) -> None:
    """Logs the tenants whose webhooks no key of WEBHOOKS_API_KEYS (naming ``named``)
    opens any more (a key dropped or a tenant renamed there): they still deliver, but
    nobody can manage them."""
    keyless = [tenant for tenant in await store.tenants() if tenant not in named]
    if keyless:
        log.warning(
            "tenants.without_key",
            tenants=keyless[:20],
            count=len(keyless),
            detail="these tenants have webhooks but no key in WEBHOOKS_API_KEYS: their "
            "webhooks still deliver, but no caller can list, change or delete them",
        )
