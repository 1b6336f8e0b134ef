"""Which webhooks are slow, stored in PostgreSQL (``webhooks.slow_since``), so what one
delivery worker learns of an endpoint survives its restart and reaches every replica.

Without it, a started worker took every webhook as untried, and many slow untried
webhooks filled its slots with one probe each (``shares.py``) until each had timed out.

Cheap on the attempt's path: a verdict is written only when a worker's own verdict on
a webhook changes and the claimed row said otherwise (a slow endpoint timing out again
and again costs no write), by a task of its own, not awaited by the attempt. It is read
once at start and then comes with every claimed delivery (the claim reads the webhook's
row anyway).
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import structlog

from herald.runtime.db import DATABASE_ERRORS
from herald.services.webhooks.shares import MAX_KNOWN
from herald.services.webhooks.store import Q

log = structlog.get_logger("herald.webhooks.slowness")


class SlownessLog:
    """Stores and loads the webhooks' slowness verdicts."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._writes: set[asyncio.Task[None]] = set()

    async def load(self) -> list[tuple[uuid.UUID, str]]:
        """The active webhooks stored as slow (webhook, tenant); none if the database
        cannot say (they are then untried, as before a verdict was stored)."""
        try:
            rows = await self._pool.fetch(Q.slow_webhooks, MAX_KNOWN)
        except DATABASE_ERRORS as exc:
            log.warning("slowness.load_failed", error=repr(exc))
            return []
        return [(row["id"], row["tenant"]) for row in rows]

    def record(self, webhook_id: uuid.UUID, *, slow: bool) -> None:
        """Stores that the webhook is (or is no longer) slow, in the background."""
        task = asyncio.ensure_future(self._write(webhook_id, slow))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def flush(self) -> None:
        """Waits for the writes under way (on the way out)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _write(self, webhook_id: uuid.UUID, slow: bool) -> None:
        try:
            await self._pool.execute(Q.set_slow, webhook_id, slow)
        except DATABASE_ERRORS as exc:  # the next change of verdict writes again
            log.warning("slowness.store_failed", error=repr(exc), webhook_id=str(webhook_id))
            return
        log.info("webhook.slowness_stored", webhook_id=str(webhook_id), slow=slow)
