"""What a delivery's verdict leads to beyond its own row: a dead letter when its retries
are exhausted, a disabled webhook when its endpoint is gone or keeps failing, and the
operational event announcing each through ingest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from herald.runtime.announcements import Announcements
from herald.runtime.dlq import DLQ_TOPIC, dead_letter_headers, send_dead_letter
from herald.runtime.metrics import EVENTS_DLQ
from herald.runtime.publisher import Alert
from herald.services.webhooks.http import AttemptResult
from herald.services.webhooks.store import Q

log = structlog.get_logger("herald.webhooks.engine")


class Escalation:
    """Dead letters and disabled webhooks, each announced once."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: Callable[[], AIOKafkaProducer | None],
        announcements: Announcements | None,
        dlq_topic: str = DLQ_TOPIC,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._announcements = announcements
        self._dlq_topic = dlq_topic

    async def dead_letter(
        self, row: asyncpg.Record, hook: asyncpg.Record, reason: str, result: AttemptResult
    ) -> None:
        origin = {
            "webhook-id": str(hook["webhook_id"]),
            "delivery-id": str(row["id"]),
            "event-id": row["event_id"],
        }
        text = f"retries exhausted: {reason}"
        await send_dead_letter(
            self._producer,
            self._dlq_topic,
            bytes(row["body"]),
            str(hook["webhook_id"]).encode(),
            dead_letter_headers(text, "webhooks", origin=origin),
        )
        EVENTS_DLQ.labels("delivery_exhausted").inc()
        await self._publish(
            "herald.webhook.delivery_exhausted",
            str(row["id"]),
            hook,
            {
                "webhook_id": str(hook["webhook_id"]),
                "delivery_id": str(row["id"]),
                "event_id": row["event_id"],
                "event_type": row["event_type"],
                "attempts": row["attempts"] + 1,
                "reason": reason,
                "last_status_code": result.status_code,
                "tenant": row["tenant"],
            },
        )

    async def disable(self, row: asyncpg.Record, hook: asyncpg.Record, why: str) -> None:
        if await self._pool.fetchval(Q.disable_webhook, hook["webhook_id"]) is None:
            return  # already disabled
        log.warning("webhook.disabled", webhook_id=str(hook["webhook_id"]), reason=why)
        await self._publish(
            "herald.webhook.disabled",
            f"{hook['webhook_id']}/{row['id']}",
            hook,
            {"webhook_id": str(hook["webhook_id"]), "reason": why, "tenant": row["tenant"]},
        )

    async def _publish(
        self, event_type: str, key: str, hook: asyncpg.Record, data: dict[str, Any]
    ) -> None:
        if self._announcements is not None:  # stored, published once ingest takes it
            await self._announcements.add(
                Alert(event_type, key, f"webhooks/{hook['webhook_id']}", data)
            )
