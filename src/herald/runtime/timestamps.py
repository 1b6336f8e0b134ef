"""datetime ↔ google.protobuf.Timestamp (and Duration), for every service's API
messages. A request's Timestamp or Duration can be out of protobuf's own range (seconds
beyond years 1–9999, nanos outside 0–999,999,999): read through ``datetime_of`` and
``seconds_of`` it is INVALID_ARGUMENT naming the field, not a ValueError."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from herald.runtime.errors import FieldViolation, InvalidArgument


def timestamp(at: datetime) -> Timestamp:
    """A Timestamp from an aware datetime."""
    out = Timestamp()
    out.FromDatetime(at)
    return out


def datetime_of(value: Timestamp, field: str) -> datetime:
    """The aware UTC datetime of a request's Timestamp ``field``."""
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument([FieldViolation(field, f"not a valid timestamp: {exc}")]) from None


def seconds_of(value: Duration, field: str) -> float:
    """The seconds of a request's Duration ``field``."""
    try:
        return value.ToTimedelta().total_seconds()
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument([FieldViolation(field, f"not a valid duration: {exc}")]) from None
