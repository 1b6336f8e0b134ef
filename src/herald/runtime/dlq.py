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
) -> bool:
    """Sends a dead letter's record and waits for Kafka's acknowledgement; while Kafka is
    away or the producer is being replaced (``producer()`` is None), tries again for up
    to WAIT_SECONDS. False (logged) if it never went: its dead-letter row, stored
    before, still shows it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    error: BaseException | None = None
    while True:
        current = producer()
        if current is not None:
            try:
                await (await current.send(topic, value, key=key, headers=headers))
                return True
            except Exception as exc:  # not acknowledged: again, until the deadline
                error = exc
        if loop.time() >= deadline:
            log.error("dlq.send_failed", topic=topic, error=repr(error))
            return False
        await asyncio.sleep(RETRY_SECONDS)
