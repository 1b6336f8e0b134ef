"""Delivery jobs from herald.deliveries into PostgreSQL rows.

Offsets are committed only after the rows are in; a job seen before has no second
effect (unique on webhook and job id). A record that is not a valid job goes to
herald.dlq with its reason, and consumption carries on.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from google.protobuf.message import DecodeError
from herald.webhooks.v1 import delivery_pb2

from herald.runtime import json_fast
from herald.runtime.db import apply_isolating_refused, refusal_reason
from herald.runtime.dlq import DLQ_TOPIC, InputRecord, send_dead_letter
from herald.runtime.kafka import consume
from herald.runtime.metrics import EVENTS_DLQ
from herald.services.webhooks.signing import body_of
from herald.services.webhooks.store import Q

log = structlog.get_logger("herald.webhooks.intake")
NAMESPACE = uuid.UUID("5d1b8a4e-6b0c-4c3e-9a57-0b1f4f5c2a10")
# Fewest fresh deliveries fetched at once while the local engine is busy (fewer, larger
# inserts); a quiet engine has room for far more.
MIN_BATCH = 16
# Offsets of taken batches are committed together at most this often (and when Kafka has
# nothing new): the small batches a busy engine takes cost a commit each otherwise.
# The rows are already in PostgreSQL; a repeat after a crash inserts nothing.
COMMIT_EVERY_SECONDS = 0.2


class LocalEngine(Protocol):
    """What intake needs of the engine in its own process."""

    worker: str
    lease: float

    def room(self) -> int: ...

    async def wait_for_room(self, at_least: int) -> int: ...

    def offer(self, rows: list[asyncpg.Record]) -> None: ...


class NewDelivery(NamedTuple):
    """A decoded job, ready to insert (a tuple: intake makes thousands a second)."""

    id: str  # the delivery's UUID as 32 hex digits (delivery_id's, without the hyphens)
    webhook_id: uuid.UUID
    job_id: str
    event_id: str
    event_type: str
    body: bytes
    context: str


_Pair = tuple[NewDelivery, ConsumerRecord[bytes, bytes]]  # a job and its record
_NAMESPACE_BYTES = NAMESPACE.bytes


def delivery_id(webhook_id: str, job_id: str) -> uuid.UUID:
    """Deterministic: the same job for the same webhook is the same delivery
    (``uuid.uuid5(NAMESPACE, f"{webhook_id}/{job_id}")``)."""
    return uuid.UUID(_delivery_hex(webhook_id, job_id))


def _delivery_hex(webhook_id: str, job_id: str) -> str:
    """:func:`delivery_id` as 32 hex digits, computed as ``uuid.uuid5`` does: the first
    16 bytes of SHA-1 over the namespace and the name, with the version (5) and variant
    bits set. A third of ``uuid5``'s cost (no UUID object), which PostgreSQL takes as is."""
    name = f"{webhook_id}/{job_id}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


@functools.lru_cache(maxsize=10_000)
def _webhook_uuid(text: str) -> uuid.UUID:
    """``text`` as a UUID (remembered: a few webhooks get most jobs); ValueError if not."""
    return uuid.UUID(text)


def decode(value: bytes | None) -> NewDelivery:
    """A job from a record value; raises ValueError saying what is wrong."""
    try:
        job = delivery_pb2.DeliveryJob.FromString(value or b"")
    except DecodeError as exc:
        raise ValueError(f"not a herald.webhooks.v1.DeliveryJob: {exc}") from None
    job_id, webhook_id, event_id, event_type = (
        job.job_id,
        job.webhook_id,
        job.event_id,
        job.event_type,
    )
    if not (job_id and webhook_id and event_id and event_type):
        names = ("job_id", "webhook_id", "event_id", "event_type")
        missing = [f for f in names if not getattr(job, f)]
        raise ValueError(f"DeliveryJob without {', '.join(missing)}")
    context = job.context
    if "\x00" in f"{job_id}{event_id}{event_type}" or (
        context and any("\x00" in k or "\x00" in v for k, v in context.items())
    ):
        raise ValueError("DeliveryJob with a NUL character (\\u0000) in a text field")
    try:
        webhook = _webhook_uuid(webhook_id)
    except ValueError:
        raise ValueError(f"webhook_id {webhook_id!r} is not a UUID") from None
    try:
        data = json_fast.loads(job.data) if job.data else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"data is not JSON: {exc}") from None
    created = job.event_time.ToJsonString() if job.HasField("event_time") else ""
    return NewDelivery(
        _delivery_hex(webhook_id, job_id),
        webhook,
        job_id,
        event_id,
        event_type,
        _body(event_id, event_type, created, data),
        json_fast.dumps(dict(context)) if context else "{}",
    )


def _body(event_id: str, event_type: str, created: str, data: object) -> bytes:
    try:
        return body_of(event_id, event_type, created, data)
    except RecursionError:  # parsed (orjson goes 1,024 deep), but too deep to write
        raise ValueError("data is nested too deeply") from None


class Intake:
    """Consumes herald.deliveries in a consumer group; a worker of the service."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        make_consumer: Callable[[], AIOKafkaConsumer],
        producer: Callable[[], AIOKafkaProducer | None],
        on_new: Callable[[], None],
        max_records: int = 500,
        dlq_topic: str = DLQ_TOPIC,
        local: LocalEngine | None = None,
    ) -> None:
        """``local``: the engine in this process, handed fresh deliveries it has room
        for already claimed (no claim round trip for them)."""
        self._local = local
        self._pool = pool
        self._make_consumer = make_consumer
        self._producer = producer
        self._on_new = on_new
        self._max_records = max_records
        self._dlq_topic = dlq_topic

    async def run(self) -> None:
        """Consumes until cancelled; stops the consumer on the way out."""
        # Offsets are committed once take() returns (the rows are durable); a commit
        # refused by a rebalance is logged, and the new owner's repeats are skipped.
        # With an engine in this process, only what it has room for is fetched: fresh
        # deliveries are then inserted already claimed for it (no claim, no second
        # update), and a burst waits on Kafka instead of as unclaimed rows.
        local = self._local
        await consume(
            self._make_consumer,
            "deliveries-consumer",
            self.take,
            self._max_records,
            None if local is None else lambda: local.wait_for_room(MIN_BATCH),
            commit_every=COMMIT_EVERY_SECONDS,
        )

    async def take(self, records: list[ConsumerRecord[bytes, bytes]]) -> int:
        """Inserts the jobs, dead-letters the rest; returns how many were new."""
        jobs: list[NewDelivery] = []
        taken: list[ConsumerRecord[bytes, bytes]] = []
        bad: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
        for record in records:
            try:
                jobs.append(decode(record.value))
            except ValueError as exc:
                bad.append((record, str(exc)))
            except Exception as exc:  # unforeseen: still the record's fault, not a crash
                log.exception("deliveries.undecodable", offset=record.offset)
                bad.append((record, f"cannot be decoded: {type(exc).__name__}: {exc}"))
            else:
                taken.append(record)
        # All at once: one after another, each waiting for Kafka's acknowledgement, a
        # flood of them went at ~360 a second and held up the jobs behind them.
        await asyncio.gather(*(self._dead_letter(record, reason) for record, reason in bad))
        return await self._insert(jobs, taken) if jobs else 0

    async def _insert(
        self, jobs: list[NewDelivery], records: list[ConsumerRecord[bytes, bytes]]
    ) -> int:
        """Inserts ``jobs`` (read from ``records``). A job PostgreSQL refuses for its
        data is dead-lettered with PostgreSQL's reason and the rest go in; any other
        database error (unreachable, a deadlock with a replica inserting the same jobs
        during a rebalance) is retried: the insert is idempotent, and offsets wait for
        it (runtime.db.apply_isolating_refused)."""

        async def insert(pairs: Sequence[_Pair]) -> int:
            return await self._insert_now([job for job, _ in pairs])

        async def refused(pair: _Pair, exc: BaseException) -> None:
            await self._dead_letter(pair[1], refusal_reason(exc))

        return await apply_isolating_refused(
            list(zip(jobs, records, strict=True)),
            insert,
            refused,
            failed_event="deliveries.insert_failed",
            first_delay=0.1,
            max_delay=5.0,
        )

    async def _insert_now(self, jobs: Sequence[NewDelivery]) -> int:
        local = self._local
        room = local.room() if local is not None else 0
        rows = await self._pool.fetch(
            Q.insert_deliveries,
            [j.id for j in jobs],
            [j.webhook_id for j in jobs],
            [j.job_id for j in jobs],
            [j.event_id for j in jobs],
            [j.event_type for j in jobs],
            [j.body for j in jobs],
            [j.context for j in jobs],
            local.worker if local is not None else None,
            local.lease if local is not None else 0.0,
            room,
        )
        claimed = [r for r in rows if r["claimed"]]
        if claimed and local is not None:
            local.offer(claimed)
        if len(claimed) < len(rows):
            self._on_new()
        log.info("deliveries.queued", jobs=len(jobs), new=len(rows))
        return len(rows)

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        headers = InputRecord.of(record).dead_letter_headers(reason, "webhooks")
        # Until Kafka has it: the record's offset is committed after this.
        await send_dead_letter(
            self._producer,
            self._dlq_topic,
            record.value,
            record.key,
            headers,
            until_acknowledged=True,
        )
        EVENTS_DLQ.labels("undecodable_job").inc()
        log.warning(
            "deliveries.dead_lettered",
            reason=reason,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
