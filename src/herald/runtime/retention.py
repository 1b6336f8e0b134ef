"""Retention: rows that have outlived their time deleted by a worker of the service, a
bounded batch per statement (a day of rows at full speed is tens of millions: one
statement for all of them would hold its locks, its WAL and the table's bloat at once).

Each purge is a DELETE of at most ``$1`` rows, its own arguments after (a retention in
seconds, say), or a statement that deletes so and returns the count it deleted (one
that records what it deleted, say). Replicas may purge side by side: a batch already
deleted by another is simply smaller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import structlog

from herald.runtime.db import DATABASE_ERRORS

log = structlog.get_logger("herald.retention")
BATCH = 5_000  # rows per statement
PAUSE_SECONDS = 0.05  # between two statements of one purge: room for everything else
EVERY_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Purge:
    """One kind of row to purge: ``sql`` deletes at most ``$1`` of them."""

    name: str
    sql: str
    args: tuple[object, ...] = ()
    returns_count: bool = False  # ``sql`` returns the count deleted (not a bare DELETE)

    async def run(self, pool: asyncpg.Pool, batch: int) -> int:
        """One statement: the rows it deleted."""
        if self.returns_count:
            return int(await pool.fetchval(self.sql, batch, *self.args))
        status = await pool.execute(self.sql, batch, *self.args)
        return int(status.rsplit(" ", 1)[-1])  # "DELETE <n>"


async def purge_once(
    pool: asyncpg.Pool, purges: Sequence[Purge], batch: int = BATCH
) -> dict[str, int]:
    """Deletes, batch after batch, every row the purges name; the count of each."""
    counts: dict[str, int] = {}
    for purge in purges:
        total = 0
        while True:
            deleted = await purge.run(pool, batch)
            total += deleted
            if deleted < batch:
                break
            await asyncio.sleep(PAUSE_SECONDS)
        counts[purge.name] = total
    log.info("retention.purged", **counts)
    return counts


async def run_purges(
    pool: asyncpg.Pool, purges: Sequence[Purge], every: float = EVERY_SECONDS
) -> None:
    """Purges every ``every`` seconds (a worker of the service); database errors are
    logged and the next pass tries again."""
    while True:
        try:
            await purge_once(pool, purges)
        except DATABASE_ERRORS as exc:
            log.warning("retention.failed", error=repr(exc))
        await asyncio.sleep(every)
