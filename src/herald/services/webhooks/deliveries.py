"""A webhook's deliveries in PostgreSQL (tenant-scoped): the log, statistics, and
the operator's actions on them (resend, recover, test events)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from herald.runtime.errors import FailedPrecondition, NotFound, ResourceExhausted
from herald.runtime.ids import new_request_id
from herald.runtime.pagination import Listing, Page, SortKey
from herald.services.webhooks.intake import delivery_id
from herald.services.webhooks.signing import body_of
from herald.services.webhooks.store import Q, StoredWebhook, WebhookStore, parse_id

# The order of list_deliveries (its ORDER BY).
DELIVERY_ORDER = SortKey(("created_at", datetime), ("id", uuid.UUID))
# Test events of one webhook waiting at once: a test event costs the caller nothing, and
# without a bound a tenant queued thousands a second (up to 64 KiB each), stored for
# DELIVERY_RETENTION_DAYS and POSTed with retries to any public address it named.
MAX_PENDING_TEST_EVENTS = 100


@dataclass(frozen=True, slots=True)
class Stats:
    """The seed's stats object for one webhook and a time range."""

    total: int
    successful: int
    failed: int
    events: dict[str, int] = field(default_factory=dict)
    average_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0

    @property
    def success_rate(self) -> float:
        """successful / total, 0 when there were none."""
        return self.successful / self.total if self.total else 0.0


class Deliveries:
    """NOT_FOUND for another tenant's webhook or delivery."""

    def __init__(
        self, pool: asyncpg.Pool, webhooks: WebhookStore, on_queued: Callable[[], None]
    ) -> None:
        self._pool = pool
        self._webhooks = webhooks
        self._on_queued = on_queued  # wakes this process's engine

    async def get(self, tenant: str, delivery_id: str) -> asyncpg.Record:
        """One delivery of the tenant's."""
        row = await self._pool.fetchrow(Q.get_delivery, parse_id(delivery_id, "delivery"), tenant)
        if row is None:
            raise NotFound(f"delivery {delivery_id!r} not found")
        result: asyncpg.Record = row
        return result

    async def resend(self, tenant: str, delivery_id: str) -> asyncpg.Record:
        """Queues a finished delivery for one more attempt, now."""
        current = await self.get(tenant, delivery_id)
        _active(await self._webhooks.get(tenant, str(current["webhook_id"])), "the resent delivery")
        if await self._pool.fetchval(Q.resend_delivery, current["id"], tenant) is None:
            raise FailedPrecondition(f"delivery {delivery_id!r} is pending already")
        self._on_queued()
        return await self.get(tenant, delivery_id)

    async def recover(self, tenant: str, webhook_id: str, since: datetime) -> int:
        """Re-queues the webhook's failed deliveries created since ``since``."""
        hook = _active(await self._webhooks.get(tenant, webhook_id), "the recovered deliveries")
        status = await self._pool.execute(Q.recover_webhook, hook.id_uuid, tenant, since)
        count = int(status.split()[-1])
        if count:
            self._on_queued()
        return count

    async def send_test(
        self,
        tenant: str,
        webhook_id: str,
        event_type: str,
        data: object | None = None,
        request_id: str = "",
    ) -> asyncpg.Record:
        """Queues a test event for the webhook, due now, with ``data`` (a fixed test
        object when None). Its POST carries ``request_id`` as X-Request-Id, or one of its
        own when empty: every event Herald delivers has one (seed 001)."""
        hook = _active(await self._webhooks.get(tenant, webhook_id), "the test event")
        waiting = await self._pool.fetchval(
            Q.pending_test_events, hook.id_uuid, MAX_PENDING_TEST_EVENTS
        )
        if waiting >= MAX_PENDING_TEST_EVENTS:
            raise ResourceExhausted(
                f"webhook {hook.id} has {MAX_PENDING_TEST_EVENTS} test events waiting to be "
                "delivered: send more once some are (ListDeliveries shows them)"
            )
        event_id = str(uuid.uuid4())
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if data is None:
            data = {"test": True, "message": "A test event from Herald", "webhook_id": hook.id}
        job_id = f"test/{event_id}"
        ident = delivery_id(hook.id, job_id)
        await self._pool.fetch(
            Q.insert_deliveries,
            [ident],
            [hook.id_uuid],
            [job_id],
            [event_id],
            [event_type],
            [body_of(event_id, event_type, created, data)],
            [json.dumps({"x-request-id": request_id or new_request_id()})],
            None,  # not claimed: any worker attempts it
            0.0,
            0,
        )
        self._on_queued()
        return await self.get(tenant, str(ident))

    async def page(
        self, tenant: str, webhook_id: str, status: str, page: Page
    ) -> Listing[asyncpg.Record]:
        """Newest first (DELIVERY_ORDER); ``status`` "" means all."""
        hook = await self._webhooks.get(tenant, webhook_id)
        filters = (hook.id_uuid, tenant, status)
        rows = await self._pool.fetch(Q.list_deliveries, *filters, *page.cursor, page.limit)
        return await page.listing(rows, lambda: self._pool.fetchval(Q.count_deliveries, *filters))

    async def stats(self, tenant: str, webhook_id: str, start: datetime, end: datetime) -> Stats:
        """Counts per outcome and event type, and response times, over [start, end)."""
        hook = await self._webhooks.get(tenant, webhook_id)
        async with self._pool.acquire() as conn:
            counts = await conn.fetchrow(Q.delivery_stats, hook.id_uuid, tenant, start, end)
            by_type = await conn.fetch(Q.delivery_stats_by_type, hook.id_uuid, tenant, start, end)
            times = await conn.fetchrow(Q.response_times, hook.id_uuid, start, end)
        assert counts is not None
        assert times is not None
        return Stats(
            total=counts["total"],
            successful=counts["successful"],
            failed=counts["failed"],
            events={r["event_type"]: r["n"] for r in by_type},
            average_ms=float(times["average"]),
            p50_ms=float(times["p50"]),
            p95_ms=float(times["p95"]),
            p99_ms=float(times["p99"]),
        )


def _active(hook: StoredWebhook, what: str) -> StoredWebhook:
    """``hook``, if active: an inactive webhook's deliveries wait for it to be activated
    again, so answering OK would promise an attempt that is not made."""
    if not hook.spec.active:
        raise FailedPrecondition(
            f"webhook {hook.id} is inactive: activate it first (UpdateWebhook with active = "
            f"true); until then its deliveries wait, and {what} would wait with them"
        )
    return hook
