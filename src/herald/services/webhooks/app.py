"""Wiring: settings → pool, secret box, catalog client → the shared runtime."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import grpc
from herald.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc

from herald.runtime import db
from herald.runtime.auth import ApiKeys, BearerAuthInterceptor, parse_api_keys
from herald.runtime.server import App
from herald.services.webhooks.event_types import EventTypeNames
from herald.services.webhooks.secret_box import SecretBox
from herald.services.webhooks.servicer import WebhookServicer
from herald.services.webhooks.settings import WebhooksSettings
from herald.services.webhooks.store import WebhookStore

MIGRATIONS = Path(__file__).with_name("sql") / "migrations"
SERVICE_NAME = webhooks_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name


async def build(settings: WebhooksSettings) -> App:
    """Connects to PostgreSQL, migrates; returns the App."""
    pool = await db.create_pool(settings.database_url, settings.database_pool_size)
    async with pool.acquire() as conn:
        await db.migrate(conn, db.read_migrations("webhooks", MIGRATIONS))
    ingest = grpc.aio.insecure_channel(settings.ingest_addr)
    store = WebhookStore(pool, SecretBox(settings.master_key()))
    servicer = WebhookServicer(store, EventTypeNames(ingest, settings.event_types_cache_seconds))

    def register(server: grpc.aio.Server) -> None:
        webhooks_pb2_grpc.add_WebhookServiceServicer_to_server(servicer, server)

    async def close() -> None:
        await ingest.close()
        await pool.close()

    return App(
        name="webhooks",
        service_names=[SERVICE_NAME],
        register=register,
        health_checks={"postgres": partial(db.check, pool)},
        interceptors=[BearerAuthInterceptor(ApiKeys(parse_api_keys(settings.webhooks_api_keys)))],
        on_stop=[close],
    )
