"""Giving up on an event: a dead_letters row, a herald.dlq record, a metric and an
alert event through ingest; and the ListDeadLetters / RedriveDeadLetters queries.

The row, the DLQ record (``dlq_outbox``) and the alert (``announcements``) are stored in
one transaction and sent by their workers: a dead letter decided while Kafka or ingest
is away, or just before a stop or a crash, still reaches the DLQ topic and is announced.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from herald.runtime import event_spans
from herald.runtime.announcements import Announcements
from herald.runtime.cloudevents_kafka import CE_PREFIX
from herald.runtime.db import Connection
from herald.runtime.dlq import InputRecord, send_dead_letter
from herald.runtime.dlq_outbox import DeadLetterOutbox
from herald.runtime.metrics import EVENTS_DLQ
from herald.runtime.publisher import TENANT_ATTRIBUTE, Alert, alert_about
from herald.services.dispatch.store import Q

log = structlog.get_logger("herald.dispatch.dlq")
TENANT_HEADER = CE_PREFIX + TENANT_ATTRIBUTE  # the attribute as the Kafka binding writes it
NAMESPACE = uuid.UUID("7f0e2d4c-1b3a-4c5d-8e9f-a0b1c2d3e4f5")


@dataclass(frozen=True, slots=True)
class EventIds:
    """The ids of the event a dead letter holds (empty when its record could not be
    decoded)."""

    event_id: str = ""
    event_source: str = ""
    event_type: str = ""


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter to store: the record, its event's ids, the targets it failed, after
    how many tries and why; ``kind`` labels events_dlq_total."""

    record: InputRecord
    ids: EventIds
    targets: Sequence[str]
    attempts: int
    reason: str
    kind: str


def letter_id(record: InputRecord, targets: Sequence[str]) -> uuid.UUID:
    """Deterministic per record and targets: a record consumed again dies once, and a
    later dead letter of the same record for other targets is a dead letter too."""
    where = f"{record.topic}/{record.partition}/{record.offset}"
    return uuid.uuid5(NAMESPACE, f"{where}/{'|'.join(sorted(targets))}")


def record_id(record: InputRecord) -> uuid.UUID:
    """Deterministic per record: the same record parks or dies once."""
    return uuid.uuid5(NAMESPACE, f"{record.topic}/{record.partition}/{record.offset}")


def stored(record: InputRecord, ids: EventIds) -> tuple[object, ...]:
    """The columns a record and its event ids are stored in (retries, dead_letters):
    id, topic, partition, offset, key, value, header names and values, event ids."""
    return (
        record_id(record),
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        [n for n, _ in record.headers],
        [v for _, v in record.headers],
        ids.event_id,
        ids.event_source,
        ids.event_type,
    )


def reasons(by_target: dict[str, str]) -> str:
    """``target: why; target: why`` for a dead letter's or a retry's reason."""
    return "; ".join(f"{target}: {why}" for target, why in by_target.items())


class DeadLetters:
    """See the module docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: Callable[[], AIOKafkaProducer | None],
        outbox: DeadLetterOutbox,
        announcements: Announcements,
        dlq_topic: str,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._outbox = outbox
        self._announcements = announcements
        self._dlq_topic = dlq_topic

    async def bury(self, letter: Letter) -> None:
        """Stores the dead letter with its DLQ record and alert, once per record and
        targets."""
        dead = letter_id(letter.record, letter.targets)
        columns = (*stored(letter.record, letter.ids)[1:], list(letter.targets))
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                Q.dead_letter, dead, *columns, letter.attempts, letter.reason
            ):
                return  # stored before: the record was consumed again
            await self._within(conn, dead, letter)
        self._done(letter)

    async def give_up(
        self, retry_id: uuid.UUID, worker: str, letter: Letter, claimed: Sequence[str]
    ) -> None:
        """Moves a parked event to the dead letters, if ``worker`` still holds it, with
        its DLQ record and alert (targets it gained since the claim of ``claimed`` stay
        parked)."""
        async with self._pool.acquire() as conn, conn.transaction():
            dead = await conn.fetchval(
                Q.retry_to_dead_letter,
                retry_id,
                worker,
                list(letter.targets),
                letter.reason,
                list(claimed),
            )
            if dead is None:
                return  # not ours any more
            await self._within(conn, dead, letter)
        self._done(letter)

    async def not_storable(self, letter: Letter) -> None:
        """A dead letter PostgreSQL refuses to store (a NUL character in a header name):
        its DLQ record sent now, waiting as long as Kafka takes (nothing else keeps it:
        the record's offset is committed after this), and its alert stored."""
        record = letter.record
        await send_dead_letter(
            self._producer,
            self._dlq_topic,
            record.value,
            record.key,
            _headers(letter),
            until_acknowledged=True,
        )
        dead = letter_id(record, letter.targets)
        if alert_about(letter.ids.event_type):
            await self._announcements.add(_alert(dead, letter))
        self._done(letter)

    async def _within(self, conn: Connection, dead: uuid.UUID, letter: Letter) -> None:
        record = letter.record
        await self._outbox.add_within(
            conn, self._dlq_topic, record.value, record.key, _headers(letter)
        )
        if alert_about(letter.ids.event_type):
            await self._announcements.add_within(conn, _alert(dead, letter))

    def _done(self, letter: Letter) -> None:
        """A dead letter is stored (or sent): the metric, the log line, the workers woken."""
        EVENTS_DLQ.labels(letter.kind).inc()
        log.error(
            "event.dead_lettered",
            event_id=letter.ids.event_id,
            event_type=letter.ids.event_type,
            targets=list(letter.targets),
            reason=letter.reason,
            alerted=alert_about(letter.ids.event_type),
        )
        self._outbox.wake()
        self._announcements.wake()


def _headers(letter: Letter) -> list[tuple[str, bytes]]:
    return letter.record.dead_letter_headers(letter.reason, "dispatch")


def _alert(dead: uuid.UUID, letter: Letter) -> Alert:
    ids, record = letter.ids, letter.record
    return Alert(
        "herald.dispatch.dead_lettered",
        str(dead),
        f"dispatch/{ids.event_type or 'undecodable'}",
        {
            "event_id": ids.event_id,
            "event_source": ids.event_source,
            "event_type": ids.event_type,
            "targets": list(letter.targets),
            "attempts": letter.attempts,
            "reason": letter.reason,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
        },
        # The event's tenant (its heraldtenant attribute): the alert names the event, so
        # it is for that tenant's webhooks only, as the event was. Published under the
        # event's trace, so the trace shows where the event ended.
        tenant=_header(record, TENANT_HEADER),
        traceparent=event_spans.valid(_header(record, "traceparent")),
    )


def _header(record: InputRecord, name: str) -> str:
    """The record's header ``name`` (lower case) as the binding reads it, whatever case
    the producer wrote (the last one given wins); "" when it has none."""
    found = ""
    for key, value in record.headers:
        if key.lower() == name and value is not None:
            found = value.decode(errors="replace")
    return found
