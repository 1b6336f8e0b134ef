"""The dead-letter record: one format for every service's herald.dlq records.

Value = the original bytes; headers = the original headers plus ``dlq-reason``,
``dlq-service``, ``dlq-time`` and, for a Kafka input, where it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

DLQ_TOPIC = "herald.dlq"


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
