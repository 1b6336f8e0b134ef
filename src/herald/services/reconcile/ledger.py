"""The ledger: a batch of input records applied in one transaction (a consumer's batch
may be split by event into several, see :func:`split_by_lock`).

Everything about one event (the event, its orders, their refunds) is serialised by an
advisory lock on the event id (a refund takes its own event's and its order's, which
differ when the refund names another event), so replicas sharing the partitions (and transactions
running at once in one replica) agree on what was parked, released and sent. Outputs
for Vibeapp are queued in the same transaction, so a record's effect and its outputs
commit together; the Kafka offsets are committed only after that. A record taken
before (same coordinates) is skipped; an older version of an entity than the ledger's
changes nothing; a queued output is never queued again; a record dead-lettered before
is not dead-lettered again: a replay from the beginning sends nothing twice.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg
import structlog
from ticketland.v1 import ticketland_pb2 as tl

from herald.runtime.db import DATABASE_ERRORS, Connection
from herald.runtime.dlq import DLQ_TOPIC, InputRecord
from herald.runtime.dlq_outbox import DeadLetterOutbox
from herald.services.reconcile.apply import BatchApply, Found, release_refunds, store_findings
from herald.services.reconcile.checks import Finding
from herald.services.reconcile.inputs import Decoded, short_status
from herald.services.reconcile.outputs import OutputConfig, Queue
from herald.services.reconcile.store import Q

log = structlog.get_logger("herald.reconcile.ledger")


@dataclass(frozen=True, slots=True)
class DeadInput:
    """An input record for the DLQ and why."""

    record: InputRecord
    reason: str

    def dead_letter_headers(self) -> list[tuple[str, bytes]]:
        """Its dead letter's headers: its own, the reason and where it was read."""
        return self.record.dead_letter_headers(self.reason, "reconcile")


@dataclass(frozen=True, slots=True)
class Taken:
    """A decoded input record and where it was read."""

    topic: str
    partition: int
    offset: int
    decoded: Decoded


def _place(r: InputRecord) -> tuple[str, int, int]:
    return (r.topic, r.partition, r.offset)


def lock_key(d: Decoded, order_events: Mapping[str, str] | None = None) -> str:
    """The event whose lock a record takes (a refund: its order's, when
    ``order_events`` (order id → event id) knows the order)."""
    m = d.message
    if isinstance(m, tl.Event):
        return m.id
    if isinstance(m, tl.RefundRequest) and order_events:
        return order_events.get(m.order_id, m.event_id)
    return m.event_id


def split_by_lock(items: Sequence[Taken], parts: int) -> list[list[Taken]]:
    """``items`` in up to ``parts`` non-empty lists, every record of an event in the
    same one (a stable hash of its lock key; a refund goes with its order when the
    order is among ``items``), each in the order given."""
    if parts <= 1:
        return [list(items)] if items else []
    orders = {m.id: m.event_id for i in items if isinstance(m := i.decoded.message, tl.Order)}
    out: list[list[Taken]] = [[] for _ in range(parts)]
    for item in items:
        out[zlib.crc32(lock_key(item.decoded, orders).encode()) % parts].append(item)
    return [part for part in out if part]


class Ledger:
    """See the module docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        config: OutputConfig,
        dead_letters: DeadLetterOutbox | None = None,
        dlq_topic: str = DLQ_TOPIC,
    ) -> None:
        """``dead_letters``: where :meth:`dead_letter` stores records for ``dlq_topic``."""
        self._pool = pool
        self._config = config
        self._dead_letters = dead_letters
        self._dlq_topic = dlq_topic

    async def dead_letter(self, records: Sequence[DeadInput]) -> int:
        """Stores the dead letters of ``records`` not dead-lettered before, with their
        coordinates, in one transaction (the DLQ outbox sends them once it commits);
        the number stored."""
        assert self._dead_letters is not None, "built without a DLQ outbox"
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = {
                (r["topic"], r["partition"], r["offset"])
                for r in await conn.fetch(
                    Q.take_dead_inputs,
                    [d.record.topic for d in records],
                    [d.record.partition for d in records],
                    [d.record.offset for d in records],
                    [d.reason for d in records],
                )
            }
            new = [d for d in records if _place(d.record) in fresh]
            for d in new:
                await self._dead_letters.add_within(
                    conn, self._dlq_topic, d.record.value, d.record.key, d.dead_letter_headers()
                )
        if new:
            self._dead_letters.wake()
        return len(new)

    async def progressed(self, last: Mapping[tuple[str, int], int]) -> None:
        """Stores that every record up to ``last[(topic, partition)]`` is durable (taken or
        dead-lettered): retention purges coordinates only up to there. Not stored if the
        database is away (the next batch stores it; meanwhile retention waits)."""
        try:
            await self._pool.execute(
                Q.record_progress,
                [topic for topic, _ in last],
                [partition for _, partition in last],
                list(last.values()),
            )
        except DATABASE_ERRORS as exc:
            log.warning("progress.store_failed", error=repr(exc))

    async def take(self, items: Sequence[Taken]) -> int:
        """Applies ``items`` in one transaction; the number of outputs queued."""
        async with self._pool.acquire() as conn, conn.transaction():
            keys = {lock_key(i.decoded) for i in items}
            refunds = [i.decoded.message for i in items if i.decoded.kind == "refund"]
            orders = [m.order_id for m in refunds if isinstance(m, tl.RefundRequest)]
            if orders:  # a refund also takes its order's event (another if it names another)
                keys.update(r["event_id"] for r in await conn.fetch(Q.order_events, orders))
            await conn.fetchval(Q.lock_keys, list(keys))
            fresh = await conn.fetch(
                Q.take_inputs,
                [i.topic for i in items],
                [i.partition for i in items],
                [i.offset for i in items],
                [i.decoded.kind for i in items],
                [i.decoded.entity_id for i in items],
                [short_status(i.decoded.message) for i in items],
            )
            new = {(r["topic"], r["partition"], r["offset"]) for r in fresh}
            fresh_items = [
                i.decoded.message for i in items if (i.topic, i.partition, i.offset) in new
            ]
            queue = Queue(self._config)
            await BatchApply(conn, queue).run(
                [m for m in fresh_items if isinstance(m, tl.Event)],
                [m for m in fresh_items if isinstance(m, tl.Order)],
                [m for m in fresh_items if isinstance(m, tl.RefundRequest)],
            )
            return await queue.flush(conn)


class Transaction:
    """Single-refund operations for the sweeper and operator actions, on one
    connection inside a transaction (batches of input records go through
    :class:`~herald.services.reconcile.apply.BatchApply`)."""

    def __init__(self, conn: Connection, queue: Queue) -> None:
        self.conn = conn
        self.queue = queue

    async def send_or_ready(self, r: tl.RefundRequest, order: asyncpg.Record) -> None:
        """The refund goes to Vibeapp now if its order went; else when the order goes."""
        if order["delivery"] == "sent":
            self.queue.refund(r, tl.Order.FromString(order["doc"]))
            await self.conn.execute(Q.set_refund_state, r.id, "sent")
        else:
            await self.conn.execute(Q.set_refund_state, r.id, "ready")

    async def hold(
        self, refund_id: str, order_id: str, event_id: str, findings: Sequence[Finding]
    ) -> None:
        await self.store_findings(refund_id, refund_id, order_id, event_id, findings)
        await self.conn.execute(Q.set_refund_state, refund_id, "held")
        log.warning("refund.held", refund_id=refund_id, findings=sorted({f.kind for f in findings}))

    async def store_findings(
        self,
        owner: str,
        refund_id: str,
        order_id: str,
        event_id: str,
        findings: Sequence[Finding],
    ) -> None:
        await store_findings(
            self.conn, [Found(owner, refund_id, order_id, event_id, f) for f in findings]
        )

    async def release_refunds(self, order_ids: list[str]) -> None:
        await release_refunds(self.conn, self.queue, order_ids)
