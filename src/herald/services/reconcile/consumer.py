"""The consumer: Ticketland's three streams in one consumer group, into the ledger.

Per batch: decode every record by its stream and content type; one that does not
decode or validate goes to herald.dlq with its reason (through the ledger's DLQ
outbox, once: see :meth:`Ledger.dead_letter`); the rest are applied to the
ledger, split by event into up to LEDGER_CONCURRENCY transactions run at once; only
then are each partition's last offset stored (how far retention may purge, see
:meth:`Ledger.progressed`) and the offsets committed. A crash repeats the batch, which
the ledger recognises. When every stream has a backlog, Ticketland's events are read first
(runtime.kafka_first).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeAlias, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from herald.runtime.db import apply_isolating_refused, refusal_reason
from herald.runtime.dlq import InputRecord, send_dead_letter
from herald.runtime.kafka import consume
from herald.runtime.kafka_first import TopicFirst
from herald.runtime.metrics import EVENTS_DLQ
from herald.services.reconcile.inputs import BadRecord, Kind, decode
from herald.services.reconcile.ledger import DeadInput, Ledger, Taken, split_by_lock

log = structlog.get_logger("herald.reconcile.consumer")
Rec: TypeAlias = ConsumerRecord[bytes, bytes]
KIND_ORDER = {"event": 0, "order": 1, "refund": 2}
T = TypeVar("T")


async def _until_stored(
    items: Sequence[T],
    apply: Callable[[Sequence[T]], Awaitable[int]],
    refused: Callable[[T, BaseException], Awaitable[None]],
    failed_event: str,
) -> int:
    """The ledger's retry of ``apply(items)`` while PostgreSQL is away: the consumer's
    offsets wait for it (runtime.db.apply_isolating_refused)."""
    return await apply_isolating_refused(
        items,
        apply,
        refused,
        failed_event=failed_event,
        first_delay=0.5,
        max_delay=10.0,
        level=logging.ERROR,
    )


class InputConsumer:
    """See the module docstring; :meth:`run` is a worker of the service."""

    def __init__(
        self,
        make_consumer: Callable[[], AIOKafkaConsumer],
        producer: Callable[[], AIOKafkaProducer | None],
        kinds: Mapping[str, Kind],
        ledger: Ledger,
        dlq_topic: str,
        on_queued: Callable[[], None],
        max_records: int = 1000,
        concurrency: int = 1,
    ) -> None:
        """``concurrency``: transactions a batch is split into (by event, see
        :meth:`_durably`)."""
        self._make_consumer = make_consumer
        self._producer = producer
        self._kinds = kinds
        self._ledger = ledger
        self._dlq_topic = dlq_topic
        self._on_queued = on_queued
        self._max_records = max_records
        self._concurrency = concurrency

    async def run(self) -> None:
        # Events before orders and refunds when all have a backlog: an order read
        # before its event is parked and released later, which costs more.
        events = [topic for topic, kind in self._kinds.items() if kind == "event"]
        await consume(
            self._make_consumer,
            "ticketland-consumer",
            self.take,
            self._max_records,
            first=TopicFirst(events[0]) if events else None,
        )

    async def take(self, records: Sequence[Rec]) -> None:
        """Applies ``records``; returns once their effect (or dead letter) is durable."""
        taken: list[Taken] = []
        bad: list[tuple[Rec, str]] = []
        for r in records:
            try:
                decoded = decode(self._kinds[r.topic], r.headers, r.value)
            except BadRecord as exc:
                bad.append((r, str(exc)))
                continue
            except Exception as exc:  # unforeseen: still the record's fault, not a crash
                log.exception("record.undecodable", topic=r.topic, offset=r.offset)
                bad.append((r, f"cannot be decoded: {type(exc).__name__}: {exc}"))
                continue
            taken.append(Taken(r.topic, r.partition, r.offset, decoded))
        # Events, then orders, then refunds (a stable sort keeps each entity's order):
        # within a batch nothing waits for what the same batch brings.
        taken.sort(key=lambda t: KIND_ORDER[t.decoded.kind])
        if bad:
            await self._dead_letter(bad)
        if taken:
            by_place = {(r.topic, r.partition, r.offset): r for r in records}
            await self._durably(taken, by_place)
            # Woken even when no output was queued: the batch may have stored
            # discrepancies, whose alerts otherwise waited for the next poll (30 s).
            self._on_queued()
        # The whole batch is durable only now (dead letters and each part committed on
        # their own): how far retention may purge each partition's coordinates.
        last: dict[tuple[str, int], int] = {}
        for r in records:
            last[(r.topic, r.partition)] = max(r.offset, last.get((r.topic, r.partition), -1))
        await self._ledger.progressed(last)

    async def _durably(self, taken: list[Taken], records: dict[tuple[str, int, int], Rec]) -> int:
        """Applies ``taken``, retrying while PostgreSQL is unreachable or busy. A record
        PostgreSQL refuses for its data is dead-lettered with PostgreSQL's reason and
        the rest applied (runtime.db.apply_isolating_refused).

        The records are split by the event whose lock they take into up to
        ``concurrency`` parts, applied at once in transactions of their own: their
        locks are disjoint, so neither waits for the other, and one's Python work runs
        while PostgreSQL works on another's. Each part keeps the batch's order."""

        async def refused(t: Taken, exc: BaseException) -> None:
            record = records[(t.topic, t.partition, t.offset)]
            await self._dead_letter([(record, refusal_reason(exc))])

        parts = split_by_lock(taken, self._concurrency)
        applied = await asyncio.gather(
            *(_until_stored(part, self._ledger.take, refused, "ledger.failed") for part in parts)
        )
        return sum(applied)

    async def _dead_letter(self, bad: list[tuple[Rec, str]]) -> None:
        """Stores each bad record's dead letter with its coordinates (the ledger's DLQ
        outbox sends it; a record dead-lettered before, as on a replay, is not stored
        again); returns once that is durable (the offsets are committed after this)."""
        dead = [DeadInput(InputRecord.of(r), reason) for r, reason in bad]

        async def refused(d: DeadInput, exc: BaseException) -> None:
            # Not even its coordinates can be stored: straight to Kafka (a replay sends
            # this one again).
            await send_dead_letter(
                self._producer,
                self._dlq_topic,
                d.record.value,
                d.record.key,
                d.dead_letter_headers(),
                until_acknowledged=True,
            )

        stored = await _until_stored(dead, self._ledger.dead_letter, refused, "dead_letter.failed")
        EVENTS_DLQ.labels("reconcile").inc(stored)
        for r, reason in bad:
            log.warning(
                "record.dead_lettered",
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                reason=reason,
            )
