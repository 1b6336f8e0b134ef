"""The outbox relay: publishes outbox rows to Kafka in order per key, then marks them.

Any number of relays (tasks or processes) run side by side: each transaction locks
the lanes it works (``pg_try_advisory_xact_lock``, lanes with pending rows only),
sends their oldest rows, waits for Kafka's acknowledgements and marks them before
the locks are released. A row that
Kafka did not acknowledge stays for the next round; killing a relay at any moment
loses nothing (a record repeated after a crash carries the same ``ce_id``).

A row Kafka refuses for good (larger than the topic takes) would block its key and
keep the relay backing off forever: it leaves the outbox with ``last_error`` set and
is dead-lettered on the DLQ topic (without its value when that is too large too; the
row keeps it), and the key's later rows go on.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from herald.runtime.db import DATABASE_ERRORS, Connection
from herald.runtime.dlq import DLQ_TOPIC, dead_letter_headers
from herald.runtime.dlq_outbox import DeadLetterOutbox
from herald.runtime.kafka import replaced_if_broken, start_when_reachable
from herald.runtime.kafka_batches import REFUSED_FOR_GOOD, BatchSender, OutRecord, rows_to_mark
from herald.runtime.kafka_producer import abandoned, abandoned_if_session_lost
from herald.runtime.metrics import EVENTS_DLQ, EVENTS_LATENCY, EVENTS_PUBLISHED, EVENTS_RETRY
from herald.runtime.rounds import finished
from herald.runtime.wake import woken
from herald.services.ingest.outbox import LANES, headers_of
from herald.services.ingest.writer import Q

# A batch Kafka has not acknowledged by then counts as failed: its rows are retried.
ACK_TIMEOUT_SECONDS = 30.0

log = structlog.get_logger("herald.ingest.relay")


class Relay:
    """Moves outbox rows to Kafka; :meth:`run` is a worker of the service."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        make_producer: Callable[[], AIOKafkaProducer],
        concurrency: int = 1,
        batch_size: int = 1000,
        linger: float = 0.005,
        lanes_per_round: int = LANES,
        poll_interval: float = 1.0,
        max_backoff: float = 5.0,
        dlq_topic: str = DLQ_TOPIC,
    ) -> None:
        self._pool = pool
        self._dlq_topic = dlq_topic
        self._make_producer = make_producer
        self._producer: AIOKafkaProducer | None = None
        self._concurrency = concurrency
        self._batch_size = batch_size
        self._lanes_per_round = lanes_per_round
        self._linger = linger
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._sender = BatchSender()
        self._replacing = asyncio.Lock()  # one relay loop replaces a broken producer
        # Records Kafka refuses for good: stored with their mark, sent by this worker.
        self.dead_letters = DeadLetterOutbox(pool, lambda: self._producer, "ingest")

    def wake(self, _payload: str = "") -> None:
        """New rows were committed (called in-process, or on NOTIFY herald_outbox)."""
        self._wake.set()

    @property
    def producer(self) -> AIOKafkaProducer | None:
        """The started producer, once Kafka has answered."""
        return self._producer

    async def start_producer(self) -> None:
        """Starts a producer, retrying while Kafka is unreachable: events are safe
        in the outbox meanwhile."""
        if self._producer is None:
            self._producer = await start_when_reachable(self._make_producer, "relay")

    async def drain(self, seconds: float) -> None:
        """Sends what is pending (on shutdown, after the server stopped accepting),
        for at most ``seconds``; what is left waits for the next relay."""
        if self._producer is None:
            return
        try:
            async with asyncio.timeout(seconds):
                while True:
                    sent, failed = await self.relay_once()
                    if failed or not sent:
                        break
        except TimeoutError:
            log.warning("relay.drain_timed_out", seconds=seconds)

    async def stop(self) -> None:
        """Flushes and stops the producer (one abandoned is stopped once that is over)."""
        if self._producer is not None:
            await abandoned(self._producer)
            await self._producer.stop()
            self._producer = None

    async def run(self) -> None:
        """Runs the relay loops until cancelled (wake them with :meth:`wake`)."""
        await self.start_producer()
        await asyncio.gather(*(self._loop(n) for n in range(self._concurrency)))

    async def _loop(self, n: int) -> None:
        backoff = 0.0
        while True:
            self._wake.clear()
            try:
                # Finished even if a stop cancels the loop: cancelled between sending and
                # marking, the drain on stop sent the same records again.
                sent, failed = await finished(self.relay_once(n * LANES // self._concurrency))
            except DATABASE_ERRORS as exc:
                log.warning("relay.database_error", error=repr(exc))
                sent, failed = 0, 1
            if failed:
                backoff = min(self._max_backoff, max(0.1, backoff * 2))
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))  # noqa: S311
                continue
            backoff = 0.0
            if sent >= self._batch_size:
                continue  # a backlog: go on at once
            if sent == 0:
                await woken(self._wake, self._poll_interval)
            # Caught up: let a few milliseconds of commits gather into the next round
            # (far fewer rounds and queries at a steady rate, for a few ms of latency).
            await asyncio.sleep(self._linger)

    async def relay_once(self, offset: int = 0) -> tuple[int, int]:
        """Sends the oldest pending rows of the lanes it can lock. Returns (marked, failed)."""
        async with self._pool.acquire() as conn, conn.transaction():
            lanes = [
                r["lane"]
                for r in await conn.fetch(Q.claim_lanes, LANES, offset, self._lanes_per_round)
            ]
            if not lanes:
                return 0, 0
            # The lanes are this transaction's locks: its session lost, they are free
            # while the records may be on their way (see abandoned_if_session_lost).
            async with abandoned_if_session_lost(conn, lambda: self._producer, "ingest"):
                rows = await conn.fetch(
                    Q.pending_in_lanes,
                    lanes,
                    max(1, self._batch_size // len(lanes)),
                    self._sender.unknown_topics(),
                )
                acked = await self._send(rows)
            refused = [i for i, a in enumerate(acked) if isinstance(a, REFUSED_FOR_GOOD)]
            done = [a is None or isinstance(a, REFUSED_FOR_GOOD) for a in acked]
            marked = rows_to_mark([bytes(r["key"]) for r in rows], done)
            published = [i for i in marked if acked[i] is None]
            if published:
                await conn.execute(Q.mark_published, [rows[i]["id"] for i in published])
            for i in refused:
                await conn.execute(Q.mark_refused, rows[i]["id"], f"refused by Kafka: {acked[i]!r}")
                await self._dead_letter(conn, rows[i], acked[i])
            failed = [i for i, a in enumerate(acked) if not done[i]]
            if failed:
                error = repr(acked[failed[0]])
                await conn.execute(Q.mark_failed, [rows[i]["id"] for i in failed], error[:500])
        now = datetime.now(UTC)
        by_type: collections.Counter[str] = collections.Counter()
        for i in published:
            row = rows[i]
            by_type[row["event_type"]] += 1
            EVENTS_LATENCY.observe((now - row["accepted_at"]).total_seconds())
        for event_type, count in by_type.items():  # a labelled child looked up once a type
            EVENTS_PUBLISHED.labels(event_type).inc(count)
        if refused:
            self.dead_letters.wake()
        if failed:
            EVENTS_RETRY.labels("relay").inc(len(failed))
            log.warning("relay.publish_failed", lanes=lanes, failed=len(failed), error=error)
        return len(published), len(failed)

    async def _dead_letter(
        self, conn: Connection, row: asyncpg.Record, error: BaseException | None
    ) -> None:
        """Stores, with its mark, the DLQ record of a row Kafka refused for good (the row
        stays in the outbox, with its value and ``last_error``)."""
        reason = f"Kafka refused the event's record for good: {error!r}"
        log.error("relay.refused", outbox_id=row["id"], topic=row["topic"], error=repr(error))
        EVENTS_DLQ.labels("refused_by_kafka").inc()
        await self.dead_letters.add_within(
            conn,
            self._dlq_topic,
            bytes(row["value"]),
            bytes(row["key"]),
            dead_letter_headers(
                reason,
                "ingest",
                headers_of(row["headers"]),
                {"topic": row["topic"], "outbox-id": str(row["id"])},
            ),
        )

    async def _send(self, rows: list[asyncpg.Record]) -> list[BaseException | None]:
        """Sends rows; the error of each one Kafka did not acknowledge, else None.

        Rows go out as one batch per partition (runtime.kafka_batches); a batch keeps
        the rows' order, so a key's order holds.
        """
        assert self._producer is not None, "start_producer() first"
        async with self._replacing:  # a broken producer is replaced before the next send
            producer = self._producer = await replaced_if_broken(
                self._producer, self._make_producer, "relay"
            )
        records = [
            OutRecord(
                row["topic"], bytes(row["key"]), bytes(row["value"]), headers_of(row["headers"])
            )
            for row in rows
        ]
        # Cut short by a stop, it abandons the producer, replaced if the relay sends again.
        return await self._sender.send_finding_refused(producer, records, ACK_TIMEOUT_SECONDS)
