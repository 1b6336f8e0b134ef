"""What a delivery's verdict leads to beyond its own row: a dead letter when its retries
are exhausted, a disabled webhook when its endpoint is gone or keeps failing, and the
operational event announcing each through ingest.

Each is stored in the transaction that records the verdict (the DLQ record in the
``dlq_outbox``, the alert in ``announcements``) and sent by their workers: a dead letter
decided while Kafka or ingest is away, or just before the process stops or crashes,
still reaches the DLQ topic and is still announced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog

from herald.runtime import event_spans, json_fast
from herald.runtime.announcements import Announcements
from herald.runtime.db import Connection
from herald.runtime.dlq import DLQ_TOPIC, dead_letter_headers
from herald.runtime.dlq_outbox import DeadLetterOutbox
from herald.runtime.publisher import Alert, alert_about
from herald.services.webhooks.http import AttemptResult
from herald.services.webhooks.retry import Verdict
from herald.services.webhooks.store import Q

log = structlog.get_logger("herald.webhooks.engine")
# What a verdict leads to, run in the transaction that records it.
Step = Callable[[Connection], Awaitable[None]]


class Escalation:
    """Dead letters and disabled webhooks, each announced once."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: DeadLetterOutbox,
        announcements: Announcements,
        dlq_topic: str = DLQ_TOPIC,
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self._announcements = announcements
        self._dlq_topic = dlq_topic

    def dead_letter(
        self, row: asyncpg.Record, hook: asyncpg.Record, verdict: Verdict, result: AttemptResult
    ) -> Step:
        """A given-up delivery's DLQ record and alert."""
        reason = verdict.reason
        origin = {
            "webhook-id": str(hook["webhook_id"]),
            "delivery-id": str(row["id"]),
            "event-id": row["event_id"],
        }
        # The event's transport context (traceparent, x-request-id, …), as its POSTs had
        # it: the dead letter stays correlated with the event's trace and logs.
        transport = json_fast.loads(row["context"])
        context = [(k, str(v).encode()) for k, v in transport.items()]
        headers = dead_letter_headers(
            verdict.dead_letter_reason, "webhooks", context, origin=origin
        )
        # Per exhaustion, not per delivery: a delivery resent (ResendDelivery,
        # RecoverWebhook) that runs out again is a new alert with its own attempts (the
        # same key with other data would be refused by ingest as a conflicting duplicate).
        alert = _alert(
            "herald.webhook.delivery_exhausted",
            f"{row['id']}/{row['attempts'] + 1}",
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
            transport,
        )
        body, key = bytes(row["body"]), str(hook["webhook_id"]).encode()

        alerted = alert_about(row["event_type"])

        async def step(conn: Connection) -> None:
            await self._outbox.add_within(conn, self._dlq_topic, body, key, headers)
            if alerted:
                await self._announcements.add_within(conn, alert)

        return step

    def gone(self, row: asyncpg.Record, hook: asyncpg.Record, why: str) -> Step:
        """The webhook disabled, and announced if it was active."""

        async def step(conn: Connection) -> None:
            await self._disable_within(conn, row, hook, why)

        return step

    async def disable(self, row: asyncpg.Record, hook: asyncpg.Record, why: str) -> None:
        """The webhook disabled and announced (if it was active), in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            await self._disable_within(conn, row, hook, why)
        self.stored()

    def stored(self) -> None:
        """A transaction with steps committed: their records and alerts go out now."""
        self._outbox.wake()
        self._announcements.wake()

    async def _disable_within(
        self, conn: Connection, row: asyncpg.Record, hook: asyncpg.Record, why: str
    ) -> None:
        if await conn.fetchval(Q.disable_webhook, hook["webhook_id"]) is None:
            return  # already disabled
        log.warning("webhook.disabled", webhook_id=str(hook["webhook_id"]), reason=why)
        # Per attempt, not per delivery: a webhook re-enabled and disabled again while
        # retrying the same delivery is a new alert (the same key with another reason
        # would be refused by ingest as a conflicting duplicate).
        alert = _alert(
            "herald.webhook.disabled",
            f"{hook['webhook_id']}/{row['id']}/{row['attempts'] + 1}",
            hook,
            {"webhook_id": str(hook["webhook_id"]), "reason": why, "tenant": row["tenant"]},
            json_fast.loads(row["context"]),
        )
        await self._announcements.add_within(conn, alert)


def _alert(
    event_type: str,
    key: str,
    hook: asyncpg.Record,
    data: dict[str, Any],
    transport: dict[str, Any],
) -> Alert:
    """An alert about ``hook``, for its tenant's webhooks only, published under the trace
    of the delivery that led to it (``transport``: its event's context)."""
    return Alert(
        event_type,
        key,
        f"webhooks/{hook['webhook_id']}",
        data,
        tenant=data["tenant"],
        traceparent=event_spans.valid(str(transport.get("traceparent", ""))),
    )
