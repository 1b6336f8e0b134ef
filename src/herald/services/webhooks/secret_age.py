"""Secrets due for rotation (seed 000: HMAC keys are rotated at least every 90 days).

A worker: every ``every`` seconds, each active webhook whose secret is older than
``max_age`` and not announced yet gets one ``herald.webhook.secret_rotation_due`` alert
(for its tenant's webhooks only: Alert.tenant), stored in the transaction that marks
the secret announced. RotateWebhookSecret makes a new secret, which is announced in turn
once it is as old.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from herald.runtime.announcements import Announcements
from herald.runtime.db import DATABASE_ERRORS
from herald.runtime.publisher import Alert
from herald.services.webhooks.store import Q

log = structlog.get_logger("herald.webhooks.secrets")
BATCH = 500
DUE_EVENT = "herald.webhook.secret_rotation_due"


async def announce_due(pool: asyncpg.Pool, announcements: Announcements, max_age: float) -> int:
    """One round: the alerts stored (at most BATCH)."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(Q.secrets_due, max_age, BATCH)
        for row in rows:
            webhook_id = str(row["id"])
            await announcements.add_within(
                conn,
                Alert(
                    DUE_EVENT,
                    f"{webhook_id}/{row['secret_created_at'].timestamp():.6f}",
                    f"webhooks/{webhook_id}",
                    {
                        "webhook_id": webhook_id,
                        "name": row["name"],
                        "secret_created_at": row["secret_created_at"].isoformat(),
                        "max_age_days": round(max_age / 86400, 3),
                        "tenant": row["tenant"],
                    },
                    tenant=row["tenant"],
                ),
            )
    if rows:
        announcements.wake()
        log.warning("webhook.secret_rotation_due", webhooks=[str(r["id"]) for r in rows])
    return len(rows)


async def run_secret_age(
    pool: asyncpg.Pool, announcements: Announcements, max_age: float, every: float = 3600.0
) -> None:
    """The worker (``max_age`` 0: never started): a round every ``every`` seconds, or a
    tenth of ``max_age`` when that is shorter."""
    every = min(every, max_age / 10)
    while True:
        try:
            while await announce_due(pool, announcements, max_age) == BATCH:
                pass
        except DATABASE_ERRORS as exc:
            log.warning("secret_age.failed", error=repr(exc))
        await asyncio.sleep(every)
