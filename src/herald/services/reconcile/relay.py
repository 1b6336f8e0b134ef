"""The relay: queued outputs (reconcile.outbox) to Vibeapp's Kafka cluster.

One relay sends at a time (a transaction-scoped advisory lock; other replicas' relays
wait their turn), so the order rules hold across replicas: in each round the pending
events go first and are acknowledged, then the orders, then the refunds. An order is
queued only after its event, so Vibeapp never sees an order before its event, nor a
refund before its order. A round that fails stops before the next kind and leaves its
rows for the next round; a crash between sending and marking repeats a record (the
same key and content), which is the at-least-once Kafka gives without transactions.

An output Vibeapp's Kafka refuses for good (larger than the topic takes) would stop
every round at its kind, and with it every later order and refund. It is set aside
instead (``refused_at``, ``last_error``; dead-lettered on Herald's DLQ topic) and tried
again after ``refused_retry`` seconds, in case the limit was raised; meanwhile the
outputs that depend on it (its event's orders, its order's refunds) wait, and every
other output goes on. Once a later version of its entity is
queued, it is not tried again (Vibeapp is to hold the latest content): the later one
goes instead, at once, and what depends on the entity waits until it went; then the
refused one is superseded (``superseded_at``) and its ``output_refused`` discrepancy
settled.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from herald.runtime import json_fast
from herald.runtime.db import DATABASE_ERRORS, Connection
from herald.runtime.dlq import DLQ_TOPIC, dead_letter_headers
from herald.runtime.dlq_outbox import DeadLetterOutbox
from herald.runtime.kafka import replaced_if_broken, start_when_reachable
from herald.runtime.kafka_batches import REFUSED_FOR_GOOD, BatchSender, OutRecord, rows_to_mark
from herald.runtime.kafka_producer import abandoned, abandoned_if_session_lost
from herald.runtime.metrics import EVENTS_DLQ
from herald.runtime.rounds import finished
from herald.runtime.wake import woken
from herald.services.reconcile.apply import Found, store_findings
from herald.services.reconcile.checks import Finding, discrepancy_id
from herald.services.reconcile.store import Q

log = structlog.get_logger("herald.reconcile.relay")
KINDS = ("event", "order", "refund")


@functools.lru_cache(maxsize=64)
def _headers(text: str) -> tuple[tuple[str, bytes], ...]:
    """A row's headers (few distinct values: one set per format)."""
    return tuple((n, v.encode()) for n, v in json_fast.loads(text))


class VibeRelay:
    """See the module docstring; :meth:`run` is a worker of the service."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        make_producer: Callable[[], AIOKafkaProducer],
        batch_size: int = 1000,
        ack_timeout: float = 30.0,
        poll_interval: float = 0.25,
        dead_letters: Callable[[], AIOKafkaProducer | None] = lambda: None,
        dlq_topic: str = DLQ_TOPIC,
        refused_retry: float = 600.0,
        found: Callable[[], None] = lambda: None,
    ) -> None:
        """``dead_letters``: a producer on Herald's own cluster, for the DLQ topic;
        ``found`` is called once refused outputs' discrepancies are stored."""
        self._pool = pool
        self._found = found
        # Outputs refused for good: stored with their mark, sent by this worker.
        self.dead_letters = DeadLetterOutbox(pool, dead_letters, "reconcile")
        self._dlq_topic = dlq_topic
        self._refused_retry = refused_retry
        self._make_producer = make_producer
        self._batch_size = batch_size
        self._ack_timeout = ack_timeout
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._sender = BatchSender()
        self.producer: AIOKafkaProducer | None = None

    def wake(self) -> None:
        """Something was queued: send it now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        self.producer = await start_when_reachable(self._make_producer, "vibe-producer")
        delay = 0.5
        try:
            while True:
                self.producer = await replaced_if_broken(
                    self.producer, self._make_producer, "vibe-producer"
                )
                try:
                    sent, complete = await finished(self.round(self.producer))
                    delay = 0.5
                except DATABASE_ERRORS as exc:
                    log.error("relay.database_failed", error=repr(exc), retry_in=delay)
                    sent, complete = 0, False
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                if sent and complete:
                    continue  # maybe more pending
                self._wake.clear()
                await woken(self._wake, self._poll_interval)
        finally:
            await abandoned(self.producer)
            await self.producer.stop()

    async def round(self, producer: AIOKafkaProducer) -> tuple[int, bool]:
        """Sends one round; (records sent, whether a full round went through, so more
        may be pending)."""
        async with (
            self._pool.acquire() as conn,
            conn.transaction(),
            abandoned_if_session_lost(conn, lambda: producer, "reconcile"),
        ):
            if not await conn.fetchval(Q.relay_lock):
                return 0, False
            rows = await conn.fetch(Q.pending_outputs, self._batch_size, self._refused_retry)
            sent: list[int] = []
            refused: list[tuple[asyncpg.Record, BaseException]] = []
            complete = True
            for kind in KINDS:
                group = [r for r in rows if r["kind"] == kind]
                if not group:
                    continue
                records = [
                    OutRecord(
                        r["topic"],
                        r["key"],
                        r["value"],
                        list(_headers(r["headers"])),  # aiokafka wants a list
                    )
                    for r in group
                ]
                # Cut short by a stop, it abandons the producer (another replica's
                # relay may send these rows once the lock goes).
                errors = await self._sender.send_finding_refused(
                    producer, records, self._ack_timeout
                )
                done = [e is None or isinstance(e, REFUSED_FOR_GOOD) for e in errors]
                for i in rows_to_mark([r["key"] for r in group], done):
                    error = errors[i]
                    if error is None:
                        sent.append(group[i]["id"])
                    else:
                        refused.append((group[i], error))
                        await conn.execute(Q.mark_refused, group[i]["id"], repr(error))
                        await self._dead_letter(conn, group[i], error)
                failed = [e for e, ok in zip(errors, done, strict=True) if not ok]
                if failed:
                    log.warning(
                        "relay.send_failed", kind=kind, failed=len(failed), error=repr(failed[0])
                    )
                if failed or refused:
                    complete = False
                    break  # what depends on these waits for the next round
            if sent and (superseded := await conn.fetch(Q.mark_sent, sent)):
                await _settle_superseded(conn, superseded)
        if refused:
            self.dead_letters.wake()
            self._found()
        return len(sent), complete and len(rows) == self._batch_size

    async def _dead_letter(
        self, conn: Connection, row: asyncpg.Record, error: BaseException
    ) -> None:
        """Stores, with its mark, the DLQ record of an output Vibeapp's Kafka refused
        for good (and set aside), and an ``output_refused`` discrepancy (one per version
        of the output; announced like any other)."""
        log.error(
            "relay.refused",
            kind=row["kind"],
            entity_id=row["entity_id"],
            topic=row["topic"],
            error=repr(error),
            retry_in=self._refused_retry,
        )
        EVENTS_DLQ.labels("refused_by_vibe").inc()
        reason = f"Vibeapp's Kafka refused the {row['kind']} for good: {error!r}"
        owners = await conn.fetchrow(Q.output_owners, row["kind"], row["entity_id"])
        assert owners is not None
        finding = Finding(
            "output_refused",
            f"{reason}; set aside, tried again every {self._refused_retry:g} s",
            aspect=row["content_hash"],
        )
        found = Found(
            _refused_owner(row["kind"], row["entity_id"]),
            refund_id=owners["refund_id"],
            order_id=owners["order_id"],
            event_id=owners["event_id"],
            finding=finding,
        )
        await store_findings(conn, [found])
        await self.dead_letters.add_within(
            conn,
            self._dlq_topic,
            row["value"],
            row["key"],
            dead_letter_headers(
                reason,
                "reconcile",
                list(_headers(row["headers"])),
                {"topic": row["topic"], "entity-id": row["entity_id"]},
            ),
        )


def _refused_owner(kind: str, entity_id: str) -> str:
    """What an ``output_refused`` discrepancy's id derives from (with the content hash)."""
    return f"{kind}/{entity_id}"


async def _settle_superseded(conn: Connection, rows: list[asyncpg.Record]) -> None:
    """Refused outputs that went on a retry, or that a later version of their entity
    went after (superseded): logged, and their ``output_refused`` discrepancies settled."""
    for row in rows:
        log.info("relay.refused_settled", kind=row["kind"], entity_id=row["entity_id"])
    await conn.execute(
        Q.settle_superseded,
        [
            discrepancy_id(
                _refused_owner(r["kind"], r["entity_id"]), "output_refused", "", r["content_hash"]
            )
            for r in rows
        ],
        [r["kind"] for r in rows],
        [r["entity_id"] for r in rows],
        [r["content_hash"] for r in rows],
        "settled: it, or a later version of it, went to Vibeapp",
    )
