"""Subscriptions in PostgreSQL, always scoped to one tenant."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from herald.runtime.db import Queries
from herald.runtime.errors import NotFound, ResourceExhausted
from herald.runtime.pagination import Listing, Page, SortKey
from herald.services.webhooks.model import RateLimit, RetryPolicy, WebhookSpec
from herald.services.webhooks.secret_box import SecretBox

Q = Queries(Path(__file__).with_name("sql") / "queries.sql")
DEFAULT_MAX_PER_TENANT = 1000  # WEBHOOKS_MAX_PER_TENANT
# The order of list_webhooks (its ORDER BY).
WEBHOOK_ORDER = SortKey(("created_at", datetime), ("id", uuid.UUID))


def retry_policy_of(row: asyncpg.Record) -> RetryPolicy:
    """A webhook's retry policy from its columns (a webhooks row, or a claimed
    delivery's, which brings them along)."""
    return _policy(
        row["max_retries"],
        row["initial_delay_ms"],
        row["backoff_multiplier"],
        row["max_delay_ms"],
        tuple(row["retry_delays_ms"]),
        tuple(row["retry_statuses"]),
    )


@functools.lru_cache(maxsize=1024)
def _policy(
    max_retries: int,
    initial_delay_ms: int,
    backoff_multiplier: float,
    max_delay_ms: int,
    delays_ms: tuple[int, ...],
    retry_statuses: tuple[int, ...],
) -> RetryPolicy:
    """Made once per distinct policy, not per delivery attempt."""
    return RetryPolicy(
        max_retries,
        initial_delay_ms / 1000,
        backoff_multiplier,
        max_delay_ms / 1000,
        tuple(ms / 1000 for ms in delays_ms),
        retry_statuses,
    )


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    """A subscription as stored (its secret stays sealed)."""

    id: str
    spec: WebhookSpec
    created_at: datetime
    updated_at: datetime
    last_delivery_at: datetime | None
    secret_created_at: datetime
    slow_since: datetime | None = None  # found slow by a delivery worker since then

    @property
    def id_uuid(self) -> uuid.UUID:
        """The id as a UUID (for queries)."""
        return uuid.UUID(self.id)


def _stored(row: asyncpg.Record) -> StoredWebhook:
    spec = WebhookSpec(
        name=row["name"],
        url=row["url"],
        event_types=tuple(row["event_types"]),
        active=row["active"],
        retry_policy=retry_policy_of(row),
        rate_limit=RateLimit(row["rate_per_second"], row["rate_per_minute"]),
        headers=json.loads(row["headers"]),
        description=row["description"],
        metadata=json.loads(row["metadata"]),
    )
    return StoredWebhook(
        str(row["id"]),
        spec,
        row["created_at"],
        row["updated_at"],
        row["last_delivery_at"],
        row["secret_created_at"],
        row["slow_since"],
    )


def _columns(spec: WebhookSpec) -> tuple[object, ...]:
    policy, limit = spec.retry_policy, spec.rate_limit
    return (
        spec.name,
        spec.url,
        list(spec.event_types),
        spec.active,
        policy.max_retries,
        round(policy.initial_delay * 1000),
        policy.backoff_multiplier,
        round(policy.max_delay * 1000),
        limit.per_second,
        limit.per_minute,
        json.dumps(dict(spec.headers)),
        spec.description,
        json.dumps(dict(spec.metadata)),
        [round(d * 1000) for d in policy.delays],
        list(policy.retry_statuses),
    )


def parse_id(value: str, what: str = "webhook") -> uuid.UUID:
    """An id as a UUID; one that is not a UUID names nothing: NOT_FOUND."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} {value!r} not found") from None


class WebhookStore:
    """CRUD and secrets; NOT_FOUND for a missing id and for another tenant's."""

    def __init__(
        self, pool: asyncpg.Pool, box: SecretBox, max_per_tenant: int = DEFAULT_MAX_PER_TENANT
    ) -> None:
        self._pool = pool
        self._box = box
        self._max_per_tenant = max_per_tenant

    async def tenants(self, limit: int = 10_000) -> list[str]:
        """The tenants that have webhooks (at most ``limit``), in order."""
        return [row["tenant"] for row in await self._pool.fetch(Q.tenants, limit)]

    async def create(self, tenant: str, spec: WebhookSpec, secret: str) -> StoredWebhook:
        """Stores a new subscription with its sealed secret; ResourceExhausted when the
        tenant has its limit of webhooks already."""
        webhook_id = uuid.uuid4()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(Q.lock_tenant, tenant)
            if await conn.fetchval(Q.count_webhooks, tenant) >= self._max_per_tenant:
                raise ResourceExhausted(
                    f"a tenant has at most {self._max_per_tenant} webhooks "
                    "(WEBHOOKS_MAX_PER_TENANT): delete one first"
                )
            row = await conn.fetchrow(
                Q.insert_webhook,
                webhook_id,
                tenant,
                *_columns(spec),
                self._box.seal(secret, str(webhook_id)),
            )
        assert row is not None
        return _stored(row)

    async def get(self, tenant: str, webhook_id: str) -> StoredWebhook:
        """One of the tenant's subscriptions."""
        row = await self._pool.fetchrow(Q.get_webhook, parse_id(webhook_id), tenant)
        if row is None:
            raise NotFound(f"webhook {webhook_id!r} not found")
        return _stored(row)

    async def page(self, tenant: str, page: Page) -> Listing[StoredWebhook]:
        """A page of the tenant's subscriptions in WEBHOOK_ORDER (oldest first)."""
        rows = await self._pool.fetch(Q.list_webhooks, tenant, *page.cursor, page.limit)
        listing = await page.listing(rows, lambda: self._pool.fetchval(Q.count_webhooks, tenant))
        return listing.map(_stored)

    async def update(
        self, tenant: str, webhook_id: str, change: Callable[[WebhookSpec], WebhookSpec]
    ) -> StoredWebhook:
        """Applies ``change`` (which may raise to refuse it) to the subscription, with
        the row locked so that concurrent updates do not overwrite each other."""
        ident = parse_id(webhook_id)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q.get_webhook_for_update, ident, tenant)
            if row is None:
                raise NotFound(f"webhook {webhook_id!r} not found")
            spec = change(_stored(row).spec)
            updated = await conn.fetchrow(Q.update_webhook, ident, tenant, *_columns(spec))
        assert updated is not None
        return _stored(updated)

    async def delete(self, tenant: str, webhook_id: str) -> None:
        """Removes the subscription."""
        if await self._pool.fetchval(Q.delete_webhook, parse_id(webhook_id), tenant) is None:
            raise NotFound(f"webhook {webhook_id!r} not found")

    async def secret(self, tenant: str, webhook_id: str) -> str:
        """The current secret, decrypted."""
        row = await self._pool.fetchrow(Q.get_webhook, parse_id(webhook_id), tenant)
        if row is None:
            raise NotFound(f"webhook {webhook_id!r} not found")
        return self._box.open(bytes(row["secret"]), str(row["id"]))

    async def rotate(self, tenant: str, webhook_id: str, secret: str, grace: float) -> datetime:
        """Makes ``secret`` current; the old one signs too until the returned time."""
        ident = parse_id(webhook_id)
        expires = await self._pool.fetchval(
            Q.rotate_secret, ident, tenant, self._box.seal(secret, str(ident)), grace
        )
        if expires is None:
            raise NotFound(f"webhook {webhook_id!r} not found")
        result: datetime = expires
        return result
