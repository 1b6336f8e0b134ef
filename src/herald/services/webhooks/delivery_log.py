"""A webhook's delivery log and statistics, read from PostgreSQL (tenant-scoped)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from herald.services.webhooks.store import Q, WebhookStore


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


class DeliveryLog:
    """Reads; NOT_FOUND (from the webhook store) for another tenant's webhook."""

    def __init__(self, pool: asyncpg.Pool, webhooks: WebhookStore) -> None:
        self._pool = pool
        self._webhooks = webhooks

    async def page(
        self, tenant: str, webhook_id: str, status: str, offset: int, size: int
    ) -> tuple[list[asyncpg.Record], int]:
        """Newest first; ``status`` "" means all."""
        hook = await self._webhooks.get(tenant, webhook_id)
        rows: list[asyncpg.Record] = await self._pool.fetch(
            Q.list_deliveries, hook.id_uuid, tenant, status, offset, size
        )
        total = (
            int(rows[0]["total"])
            if rows
            else int(await self._pool.fetchval(Q.count_deliveries, hook.id_uuid, tenant, status))
        )
        return rows, total

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
