"""The dead-letter record: one format for every service's herald.dlq records.

Value = the original bytes; headers = the original headers plus ``dlq-reason``,
``dlq-service``, ``dlq-time`` and, for a Kafka input, where it came from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import structlog
from aiokafka import AIOKafkaProducer

from herald.runtime.kafka_batches import REFUSED_FOR_GOOD

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

log = structlog.get_logger("herald.dlq")
DLQ_TOPIC = "herald.dlq"
WAIT_SECONDS = 30.0  # a dead letter waits this long for Kafka to take its record
RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 10.0
# Most a queued record is waited for past its bound: the producer fails it after its
# request timeout (15 s); a producer that never answers still cannot hold a worker.
QUEUED_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class InputRecord:
    """A record a consumer read, kept for a retry or a dead letter: where it was read
    and its content."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]

    @classmethod
    def of(cls, r: ConsumerRecord[bytes, bytes]) -> InputRecord:
        return cls(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers))

    def dead_letter_headers(self, reason: str, service: str) -> list[tuple[str, bytes]]:
        """Its dead letter's headers: its own, the reason and where it was read."""
        origin = {"topic": self.topic, "partition": str(self.partition)}
        origin["offset"] = str(self.offset)
        return dead_letter_headers(reason, service, self.headers, origin)


def dead_letter_headers(
    reason: str,
    service: str,
    original: Sequence[tuple[str, bytes]] = (),
    origin: Mapping[str, str] | None = None,
) -> list[tuple[str, bytes]]:
    """Headers of a dead-letter record. ``origin`` names where the input was, e.g.
    {"topic": …, "partition": …, "offset": …} or {"webhook-id": …, "delivery-id": …}."""
    headers = [(k, v) for k, v in original if not k.startswith("dlq-")]
    headers.append(("dlq-reason", reason[:1000].encode()))
    headers.append(("dlq-service", service.encode()))
    headers.append(("dlq-time", datetime.now(UTC).isoformat().encode()))
    for key, value in (origin or {}).items():
        headers.append((f"dlq-{key}", value.encode()))
    return headers


async def send_dead_letter(
    producer: Callable[[], AIOKafkaProducer | None],
    topic: str,
    value: bytes | None,
    key: bytes | None,
    headers: list[tuple[str, bytes]],
    *,
    until_acknowledged: bool = False,
) -> bool:
    """Sends a dead letter's record and waits for Kafka's acknowledgement; while Kafka is
    away, refuses the record or the producer is being replaced (``producer()`` is None),
    tries again, every RETRY_SECONDS at first and at most every MAX_RETRY_SECONDS.

    It gives up after WAIT_SECONDS, returning False (logged), for a dead letter whose row,
    stored before, still shows it. ``until_acknowledged`` waits as long as it takes, for
    a Kafka input's poison record: its offset must not be committed before the DLQ has
    it (each failure is logged).

    A record too large for Kafka (an input near the size limit plus the ``dlq-`` headers,
    a webhook body grown by JSON escapes) is never taken, so it is sent without its
    value, with ``dlq-value-omitted`` saying how large it was (the input stays in its
    topic, a webhook body in its dead-letter row); without the original headers too if
    that is still too large.
    """
    wait = None if until_acknowledged else WAIT_SECONDS
    return await try_dead_letter(producer, topic, value, key, headers, wait) == "sent"


async def try_dead_letter(
    producer: Callable[[], AIOKafkaProducer | None],
    topic: str,
    value: bytes | None,
    key: bytes | None,
    headers: list[tuple[str, bytes]],
    wait_seconds: float | None,
) -> Literal["sent", "refused", "timeout"]:
    """:func:`send_dead_letter`'s attempts for up to ``wait_seconds`` (None: as long as it
    takes): "sent"; "refused" when Kafka refuses even the cut-down record (logged);
    "timeout" when Kafka did not acknowledge it in time (logged). ``wait_seconds`` bounds
    the wait for a record to be queued; a queued one is waited for until the producer
    has its outcome (at most its request timeout later; QUEUED_SECONDS more at most), so
    "timeout" means the record will not be sent, and sending it again sends it once."""
    loop = asyncio.get_running_loop()
    deadline = None if wait_seconds is None else loop.time() + wait_seconds
    delay = RETRY_SECONDS
    error: BaseException | None = None
    while True:
        current = producer()
        if current is not None:
            try:
                # A send can wait on metadata far longer than we want to; once queued, the
                # record's outcome is awaited (the producer gives up on it after its
                # request timeout): a record abandoned while queued is still sent when
                # Kafka is back, and so was the copy sent in its place. (asyncio.timeout,
                # not wait_for, which can lose a stop's cancellation on Python 3.11.)
                async with asyncio.timeout(_left(loop, deadline, 0.1)):
                    delivery = await current.send(topic, value, key=key, headers=headers)
                async with asyncio.timeout(_left(loop, deadline, 0.0, QUEUED_SECONDS)):
                    await asyncio.shield(delivery)
                return "sent"
            except REFUSED_FOR_GOOD as exc:
                smaller = _smaller(value, headers)
                if smaller is None:
                    log.error("dlq.send_failed", topic=topic, error=repr(exc))
                    return "refused"
                log.warning("dlq.record_too_large", topic=topic, error=repr(exc))
                value, headers = smaller
                continue
            except Exception as exc:  # not acknowledged: again
                error = exc
                if deadline is None:
                    log.error("dlq.send_failed", topic=topic, error=repr(exc), retry_in=delay)
        if deadline is not None and loop.time() >= deadline:
            log.error("dlq.send_failed", topic=topic, error=repr(error))
            return "timeout"
        pause = delay if deadline is None else min(delay, max(0.0, deadline - loop.time()))
        await asyncio.sleep(pause)
        delay = min(delay * 2, MAX_RETRY_SECONDS)


def _left(
    loop: asyncio.AbstractEventLoop, deadline: float | None, least: float, more: float = 0.0
) -> float | None:
    """Seconds until ``deadline`` (at least ``least``) plus ``more``; None (no bound)
    without a deadline."""
    if deadline is None:
        return None
    return max(deadline - loop.time(), least) + more


def _smaller(
    value: bytes | None, headers: list[tuple[str, bytes]]
) -> tuple[None, list[tuple[str, bytes]]] | None:
    """The record cut down for Kafka: first without its value, then also without the
    original headers (the ``dlq-`` ones stay). None once there is nothing left to cut."""
    if value is not None:
        omitted = f"{len(value)} bytes, too large for the topic".encode()
        return None, [*headers, ("dlq-value-omitted", omitted)]
    own = [(k, v) for k, v in headers if k.startswith("dlq-")]
    return (None, own) if len(own) < len(headers) else None
