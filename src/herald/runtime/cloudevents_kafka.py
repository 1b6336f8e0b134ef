"""The CloudEvents Kafka protocol binding, binary content mode: the one header codec.

Value = the event data. Every context attribute travels as a ``ce_<name>`` header,
except ``datacontenttype``, which is the ``content-type`` header. The record key is
the ``partitionkey`` attribute when set. Herald adds the headers Vibeapp asks for
(``schema-version``, ``application-id``) and transport context (``traceparent``, …).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

CE_PREFIX = "ce_"
CONTENT_TYPE = "content-type"
SCHEMA_VERSION = "schema-version"
APPLICATION_ID = "application-id"
# Transport context carried from a Publish call into its record, when given.
CONTEXT_HEADERS = (
    "traceparent",
    "tracestate",
    "x-request-id",
    "x-correlation-id",
    "idempotency-key",
)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class BinaryEvent:
    """An event as the binary mode sees it: string attributes plus data bytes."""

    attributes: Mapping[str, str]
    data: bytes
    # Non-CloudEvents headers (content-type excluded: it is datacontenttype).
    extra: Mapping[str, str] = field(default_factory=dict)


def encode(event: BinaryEvent) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of the Kafka record for ``event``."""
    headers: Headers = []
    for name, value in event.attributes.items():
        if name == "datacontenttype":
            headers.append((CONTENT_TYPE, value.encode()))
        else:
            headers.append((CE_PREFIX + name, value.encode()))
    headers.extend((name, value.encode()) for name, value in event.extra.items())
    attrs = event.attributes
    key = attrs.get("partitionkey") or attrs.get("subject") or attrs["id"]
    return key.encode(), event.data, headers


def decode(headers: Sequence[tuple[str, bytes]], value: bytes | None) -> BinaryEvent:
    """The event in a binary-mode record; raises ValueError when it is not one."""
    return decode_keeping(headers, value, frozenset())[0]


def decode_keeping(
    headers: Sequence[tuple[str, bytes]], value: bytes | None, forwarded: frozenset[str]
) -> tuple[BinaryEvent, Headers]:
    """:func:`decode`, plus the headers to carry into records made from the event: its
    ``ce_*`` headers and those named in ``forwarded`` (lower case), as they came."""
    attributes: dict[str, str] = {}
    extra: dict[str, str] = {}
    kept: Headers = []
    for name, raw in headers:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise ValueError(f"header {name!r} is not UTF-8") from None
        lowered = name.lower()
        if lowered.startswith(CE_PREFIX):
            attributes[lowered[len(CE_PREFIX) :]] = text
            kept.append((name, raw))
        elif lowered == CONTENT_TYPE:
            attributes["datacontenttype"] = text
        else:
            extra[lowered] = text
            if lowered in forwarded:
                kept.append((name, raw))
    missing = [a for a in ("specversion", "id", "source", "type") if a not in attributes]
    if missing:
        raise ValueError(
            "not a CloudEvents record: missing " + ", ".join(f"ce_{m}" for m in missing)
        )
    return BinaryEvent(attributes=attributes, data=value or b"", extra=extra), kept
