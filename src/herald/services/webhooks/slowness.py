"""Which webhooks are slow, stored in PostgreSQL (``webhooks.slow_since``), so what one
delivery worker learns of an endpoint survives its restart and reaches every replica.

Without it, a started worker took every webhook as untried, and many slow untried
webhooks filled its slots with one probe each (``shares.py``) until each had timed out.

Cheap on the attempt's path: a verdict is written only when a worker's own verdict on
a webhook changes and the claimed row said otherwise (a slow endpoint timing out again
and again costs no write), by a task of its own, not awaited by the attempt. An endpoint
flapping between quick and slow answers changes the verdict on every other attempt:
each webhook's verdict is stored at most once every ``WRITE_EVERY_SECONDS`` (the first
change at once, then the latest one at the end of each such wait, if it differs from
what was written). It is read once at start and then comes with every claimed delivery
(the claim reads the webhook's row anyway).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import asyncpg
import structlog

from herald.runtime.db import DATABASE_ERRORS
from herald.services.webhooks.shares import MAX_KNOWN
from herald.services.webhooks.store import Q

log = structlog.get_logger("herald.webhooks.slowness")

Endpoint = tuple[str, datetime]  # a webhook's url and activated_at


WRITE_EVERY_SECONDS = 10.0  # a webhook's stored verdict changes at most this often


class SlownessLog:
    """Stores and loads the webhooks' slowness verdicts."""

    def __init__(self, pool: asyncpg.Pool, write_every: float = WRITE_EVERY_SECONDS) -> None:
        self._pool = pool
        self._every = write_every
        # The latest verdict (slow, and at which endpoint), per webhook writing; and
        # what its writer stored last.
        self._wanted: dict[uuid.UUID, tuple[bool, Endpoint]] = {}
        self._written: dict[uuid.UUID, tuple[bool, Endpoint]] = {}
        self._writers: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def load(self) -> list[tuple[uuid.UUID, str, Endpoint]]:
        """The active webhooks stored as slow (webhook, tenant, endpoint); none if the
        database cannot say (they are then untried, as before a verdict was stored)."""
        try:
            rows = await self._pool.fetch(Q.slow_webhooks, MAX_KNOWN)
        except DATABASE_ERRORS as exc:
            log.warning("slowness.load_failed", error=repr(exc))
            return []
        return [(row["id"], row["tenant"], (row["url"], row["activated_at"])) for row in rows]

    def record(self, webhook_id: uuid.UUID, *, slow: bool, endpoint: Endpoint) -> None:
        """Stores that the webhook is (or is no longer) slow at ``endpoint`` (its URL and
        when it was last enabled; not stored once it has another), in the background:
        at once if nothing was stored for it in the last ``write_every`` seconds, else
        then."""
        self._wanted[webhook_id] = (slow, endpoint)
        if webhook_id not in self._writers:
            self._writers[webhook_id] = asyncio.ensure_future(self._writer(webhook_id))

    async def flush(self) -> None:
        """Stores the verdicts still waiting for their turn, now (on the way out)."""
        due = {w: v for w, v in self._wanted.items() if self._written.get(w) != v}
        writers = list(self._writers.values())
        for task in writers:
            task.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        await asyncio.gather(*(self._write(w, *verdict) for w, verdict in due.items()))

    async def _writer(self, webhook_id: uuid.UUID) -> None:
        """Writes the webhook's latest verdict while it differs from the one written
        (in slowness or in endpoint), waiting ``write_every`` after each write."""
        try:
            while (verdict := self._wanted[webhook_id]) != self._written.get(webhook_id):
                await self._write(webhook_id, *verdict)
                self._written[webhook_id] = verdict
                await asyncio.sleep(self._every)
        finally:
            del self._writers[webhook_id]
            self._wanted.pop(webhook_id, None)
            self._written.pop(webhook_id, None)

    async def _write(self, webhook_id: uuid.UUID, slow: bool, endpoint: Endpoint) -> None:
        url, activated_at = endpoint
        try:
            status = await self._pool.execute(Q.set_slow, webhook_id, slow, url, activated_at)
        except DATABASE_ERRORS as exc:  # the next change of verdict writes again
            log.warning("slowness.store_failed", error=repr(exc), webhook_id=str(webhook_id))
            return
        if status.rpartition(" ")[2] != "0":  # 0 rows: stored so already, or moved on
            log.info("webhook.slowness_stored", webhook_id=str(webhook_id), slow=slow)
