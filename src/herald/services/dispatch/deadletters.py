"""Giving up on an event: a dead_letters row, a herald.dlq record, a metric and an
alert event through ingest; and the ListDeadLetters / RedriveDeadLetters queries."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from herald.runtime.announcements import Announcements
from herald.runtime.dlq import dead_letter_headers, send_dead_letter
from herald.runtime.metrics import EVENTS_DLQ
from herald.runtime.publisher import Alert
from herald.services.dispatch.store import Q

log = structlog.get_logger("herald.dispatch.dlq")
NAMESPACE = uuid.UUID("7f0e2d4c-1b3a-4c5d-8e9f-a0b1c2d3e4f5")


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed record, as stored for retries and dead letters."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]

    @property
    def ident(self) -> uuid.UUID:
        """Deterministic per record: the same record parks or dies once."""
        return uuid.uuid5(NAMESPACE, f"{self.topic}/{self.partition}/{self.offset}")


@dataclass(frozen=True, slots=True)
class EventIds:
    event_id: str = ""
    event_source: str = ""
    event_type: str = ""


def stored(record: Record, ids: EventIds) -> tuple[object, ...]:
    """The columns a record and its event ids are stored in (retries, dead_letters):
    id, topic, partition, offset, key, value, header names and values, event ids."""
    return (
        record.ident,
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
        announcements: Announcements | None,
        dlq_topic: str,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._announcements = announcements
        self._dlq_topic = dlq_topic

    async def bury(
        self,
        record: Record,
        ids: EventIds,
        targets: Sequence[str],
        attempts: int,
        reason: str,
        kind: str,
    ) -> None:
        """Stores the dead letter, then the DLQ record and the alert; ``kind`` labels
        events_dlq_total."""
        await self._pool.execute(
            Q.dead_letter, *stored(record, ids), list(targets), attempts, reason
        )
        await self.announce(record, ids, targets, attempts, reason, kind)

    async def announce(
        self,
        record: Record,
        ids: EventIds,
        targets: Sequence[str],
        attempts: int,
        reason: str,
        kind: str,
    ) -> None:
        """The DLQ record, the metric and the alert for a stored dead letter."""
        EVENTS_DLQ.labels(kind).inc()
        log.error(
            "event.dead_lettered",
            event_id=ids.event_id,
            event_type=ids.event_type,
            targets=list(targets),
            reason=reason,
        )
        origin = {"topic": record.topic, "partition": str(record.partition)}
        origin["offset"] = str(record.offset)
        await send_dead_letter(
            self._producer,
            self._dlq_topic,
            record.value,
            record.key,
            dead_letter_headers(reason, "dispatch", record.headers, origin),
        )
        if self._announcements is not None:  # stored, published once ingest takes it
            await self._announcements.add(
                Alert(
                    "herald.dispatch.dead_lettered",
                    str(record.ident),
                    f"dispatch/{ids.event_type or 'undecodable'}",
                    {
                        "event_id": ids.event_id,
                        "event_source": ids.event_source,
                        "event_type": ids.event_type,
                        "targets": list(targets),
                        "attempts": attempts,
                        "reason": reason,
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                    },
                )
            )
