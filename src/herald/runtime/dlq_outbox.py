"""Dead-letter records stored in the same transaction as the dead letter itself (the
service's ``dlq_outbox`` table), then sent to the DLQ topic by :meth:`DeadLetterOutbox.run`,
a worker of the service, until Kafka acknowledges each.

A dead letter decided while Kafka is away, or just before the process stops or
crashes, reaches the DLQ topic once Kafka (or a replica, or the restarted process) is
back: nothing is dropped after a timeout. A record is sent at least once; two replicas
never send the same one at the same time (rows are locked while they are sent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from herald.runtime.db import Connection, Queries
from herald.runtime.dlq import try_dead_letter
from herald.runtime.rounds import send_in_rounds

log = structlog.get_logger("herald.dlq")
_SQL = Path(__file__).with_name("sql") / "dlq_outbox.sql"
BATCH = 100
SEND_SECONDS = 5.0  # one record's wait for Kafka before the round gives way


class DeadLetterOutbox:
    """See the module docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: Callable[[], AIOKafkaProducer | None],
        schema: str,
    ) -> None:
        """``schema``: the service's schema, which has a ``dlq_outbox`` table."""
        if not schema.isidentifier():
            raise ValueError(f"not a schema name: {schema!r}")
        self._q = Queries(_SQL, _SQL.read_text().replace("{schema}", schema))
        self._pool = pool
        self._producer = producer
        self._wake = asyncio.Event()

    async def add_within(
        self,
        conn: Connection,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        """Stores a record in the caller's transaction; :meth:`wake` once it commits."""
        await conn.execute(
            self._q.add, topic, key, value, [n for n, _ in headers], [v for _, v in headers]
        )

    def wake(self) -> None:
        """Records were stored: send them now."""
        self._wake.set()

    async def run(self) -> None:
        """Sends what is stored, until cancelled."""
        await send_in_rounds(self.send_stored, self._wake, "dlq_outbox")

    async def send_stored(self) -> tuple[int, bool]:
        """One round: (records sent, whether some are left)."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(self._q.take, BATCH)
            done: list[int] = []
            left = len(rows) == BATCH
            for row in rows:
                outcome = await try_dead_letter(
                    self._producer,
                    row["topic"],
                    row["value"],
                    row["key"],
                    list(zip(row["header_names"], row["header_values"], strict=True)),
                    SEND_SECONDS,
                )
                if outcome == "timeout":  # Kafka is away: the rest waits too
                    left = True
                    break
                if outcome == "refused":  # even cut down: nothing more can be done
                    log.error("dlq_outbox.dropped", id=row["id"], topic=row["topic"])
                done.append(row["id"])
            if done:
                await conn.execute(self._q.sent, done)
        return len(done), left
