"""The dead-letter record: one format for every service's herald.dlq records.

Value = the original bytes; headers = the original headers plus ``dlq-reason``,
``dlq-service``, ``dlq-time`` and, for a Kafka input, where it came from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaProducer

log = structlog.get_logger("herald.dlq")
DLQ_TOPIC = "herald.dlq"
WAIT_SECONDS = 30.0  # a dead letter waits this long for Kafka to take its record
RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 10.0


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
    """
    loop = asyncio.get_running_loop()
    deadline = None if until_acknowledged else loop.time() + WAIT_SECONDS
    delay = RETRY_SECONDS
    error: BaseException | None = None
    while True:
        current = producer()
        if current is not None:
            try:
                await (await current.send(topic, value, key=key, headers=headers))
                return True
            except Exception as exc:  # not acknowledged: again
                error = exc
                if deadline is None:
                    log.error("dlq.send_failed", topic=topic, error=repr(exc), retry_in=delay)
        if deadline is not None and loop.time() >= deadline:
            log.error("dlq.send_failed", topic=topic, error=repr(error))
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_SECONDS)
