"""datetime → google.protobuf.Timestamp, for every service's API messages."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(at: datetime) -> Timestamp:
    """A Timestamp from an aware datetime."""
    out = Timestamp()
    out.FromDatetime(at)
    return out
