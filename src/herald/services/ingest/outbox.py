"""What goes into the outbox for an accepted event, and what the relay may mark. Pure."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from herald.runtime import cloudevents_kafka as binding
from herald.runtime import json_fast
from herald.services.ingest.event import Event

LANES = 16  # fixed: changing it would let two relays share a key's rows
# Kafka's framing around a record's bytes, at most: a batch of one (61 bytes of batch
# header, up to 25 of the record's own lengths and deltas), and two lengths a header.
_RECORD_FRAMING = 61 + 25
_HEADER_FRAMING = 10


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """Unique on (key, endpoint, actor) for 72 hours."""

    key: str
    endpoint: str
    actor: str


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A ready-to-send Kafka record."""

    lane: int
    topic: str
    key: bytes
    value: bytes
    headers_json: str
    event_type: str
    size: int = 0
    """Bytes of the Kafka record at most: key, value, every header and their framing."""


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A valid event on its way into PostgreSQL: ``sent`` is the event as the client sent
    it (``event`` has the defaults filled in), which a retry repeats."""

    event: Event
    fingerprint: bytes
    idempotency: IdempotencyKey | None
    row: OutboxRow
    sent: Event


def make_pending(
    event: Event,
    topic: str,
    context: Mapping[str, str],
    idempotency: IdempotencyKey | None,
    application_id: str,
    sent: Event | None = None,
    traceparent: str | None = None,
) -> PendingEvent:
    """Builds the outbox row (CloudEvents Kafka binding, binary mode) for ``event``.

    ``context`` holds the transport headers of the call (traceparent, x-request-id, …);
    ``sent`` is the event as the client sent it, before defaults were filled in
    (``event`` when not given): its fingerprint tells a retry from a different request;
    ``traceparent`` is the event's own (its ``event.publish`` span's).
    """
    extra = {
        binding.SCHEMA_VERSION: event.attributes.get("dataversion", ""),
        binding.APPLICATION_ID: application_id,
    }
    extra.update(context)
    if traceparent:
        extra["traceparent"] = traceparent
    if not extra[binding.SCHEMA_VERSION]:
        del extra[binding.SCHEMA_VERSION]
    key, value, headers = binding.encode(binding.BinaryEvent(event.attributes, event.data, extra))
    headers_json = json_fast.dumps([[name, raw.decode()] for name, raw in headers])
    row = OutboxRow(
        lane=zlib.crc32(key) % LANES,
        topic=topic,
        key=key,
        value=value,
        headers_json=headers_json,
        event_type=event.type,
        # The headers' JSON holds every name and value, quoted (escapes only add): a
        # bound of their bytes in one C call instead of a sum over the headers.
        size=_RECORD_FRAMING
        + len(key)
        + len(value)
        + len(headers_json.encode())
        + _HEADER_FRAMING * len(headers),
    )
    sent = sent or event
    return PendingEvent(event, sent.fingerprint(), idempotency, row, sent)


def headers_of(headers_json: str) -> list[tuple[str, bytes]]:
    """Kafka headers from a stored outbox row."""
    return [(name, value.encode()) for name, value in json_fast.loads(headers_json)]
