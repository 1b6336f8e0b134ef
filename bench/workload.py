"""The events the benchmarks send, and the Kafka records ingest makes of them.

Every event is the Notification API's legacy ``user_registered`` example with a
unique event id and user id, and a realistic mobile user agent so that the record
value is about 300 bytes. :func:`expected_record` runs ingest's own parsing and
outbox code, so the raw producer baseline sends byte-for-byte the value, key and
headers that ingest's relay sends for the same event.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass

from herald.ingest.v1 import ingest_pb2

from herald.services.ingest import envelope
from herald.services.ingest.outbox import headers_of, make_pending

EVENT_TYPE = "user_registered"
SOURCE = "auth_service"
DATA_VERSION = "1.0"  # the built-in definition's; ingest adds it as ``dataversion``
USER_AGENT = (
    "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.135 "
    "Mobile Safari/537.36 YaBrowser/24.12.1.71"
)


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record as ingest's relay would send it."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def event_json(event_id: str | None = None) -> tuple[str, str]:
    """(event id, legacy-envelope JSON text) of one fresh ``user_registered`` event."""
    event_id = event_id or str(uuid.uuid4())
    document = {
        "event_id": event_id,
        "event_type": EVENT_TYPE,
        "source": SOURCE,
        "occurred_at": "2025-11-14T12:34:56Z",
        "payload": {
            "user_id": str(uuid.uuid4()),
            "registration_channel": "web",
            "locale": "ru",
            "user_agent": USER_AGENT,
        },
    }
    return event_id, json.dumps(document)


def traceparent() -> str:
    """A fresh W3C traceparent, as ingest's Publish span puts on every record."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def expected_record(text: str, topic: str) -> Record:
    """The record ingest would produce for the legacy JSON ``text`` (no call metadata)."""
    event, problems = envelope.parse_json(text)
    if problems:
        raise ValueError(f"benchmark event is invalid: {problems}")
    event = event.with_attribute("dataversion", DATA_VERSION)
    pending = make_pending(event, topic, {"traceparent": traceparent()}, None, event.source)
    row = pending.row
    return Record(row.key, row.value, headers_of(row.headers_json))


def records(count: int, topic: str) -> list[Record]:
    """``count`` records of distinct events, ready for a producer."""
    return [expected_record(event_json()[1], topic) for _ in range(count)]


def publish_requests(count: int) -> list[tuple[str, ingest_pb2.PublishRequest]]:
    """``count`` (event id, PublishRequest) pairs of distinct events."""
    out = []
    for _ in range(count):
        event_id, text = event_json()
        out.append((event_id, ingest_pb2.PublishRequest(json=text)))
    return out


def batch_requests(count: int, batch_size: int) -> list[ingest_pb2.PublishBatchRequest]:
    """``count`` distinct events in PublishBatch requests of ``batch_size``."""
    items = [request for _, request in publish_requests(count)]
    return [
        ingest_pb2.PublishBatchRequest(requests=items[i : i + batch_size])
        for i in range(0, count, batch_size)
    ]


def record_size(record: Record) -> dict[str, int]:
    """Bytes of one record's parts (for the report)."""
    return {
        "key": len(record.key),
        "value": len(record.value),
        "headers": sum(len(k) + len(v) for k, v in record.headers),
        "header_count": len(record.headers),
    }
