"""The event as Herald holds it once parsed: string attributes plus data bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from json.encoder import encode_basestring_ascii as _json_str


class Envelope(Enum):
    """How the event reached Herald; decides how fields are named in errors."""

    PROTOBUF = "protobuf"
    STRUCTURED_JSON = "structured"
    LEGACY_JSON = "legacy"


# Canonical attribute → the field name each envelope uses for it in error messages.
_PROTO_NAMES = {
    "id": "event.id",
    "source": "event.source",
    "specversion": "event.spec_version",
    "type": "event.type",
    "data": "event.data",
}
_LEGACY_NAMES = {
    "id": "event_id",
    "type": "event_type",
    "time": "occurred_at",
    "data": "payload",
    "dataversion": "data_version",
}


NOT_PARSED: object = object()  # Event.json_data when the data was never parsed


@dataclass(frozen=True, slots=True)
class Event:
    """A CloudEvent: every context attribute in its canonical string form, and data.

    ``attributes`` holds the required ones (id, source, type, specversion) too, so
    it maps one to one onto the Kafka binding's headers. ``spelled`` remembers the
    name a JSON client used for an attribute (``data_version`` for ``dataversion``).
    """

    attributes: Mapping[str, str]
    data: bytes
    envelope: Envelope
    spelled: Mapping[str, str] = field(default_factory=dict)
    # The data as already parsed from a JSON envelope: validation need not parse it again.
    json_data: object = field(default=NOT_PARSED, compare=False, repr=False)

    @property
    def id(self) -> str:
        """The event id."""
        return self.attributes.get("id", "")

    @property
    def source(self) -> str:
        """The event source."""
        return self.attributes.get("source", "")

    @property
    def type(self) -> str:
        """The event type."""
        return self.attributes.get("type", "")

    @property
    def data_version(self) -> str | None:
        """The data version, when given."""
        return self.attributes.get("dataversion")

    def field_name(self, attribute: str) -> str:
        """How the client named ``attribute`` (for field violations)."""
        if self.envelope is Envelope.LEGACY_JSON:
            return _LEGACY_NAMES.get(attribute, attribute)
        if self.envelope is Envelope.PROTOBUF:
            return _PROTO_NAMES.get(attribute, f"event.attributes[{attribute}]")
        return self.spelled.get(attribute, attribute)

    def with_attribute(self, name: str, value: str) -> Event:
        """A copy with one more attribute."""
        return Event(
            {**self.attributes, name: value}, self.data, self.envelope, self.spelled, self.json_data
        )

    def fingerprint(self, data: bytes | None = None) -> bytes:
        """SHA-256 of the attributes and data (``data`` instead of the event's when
        given): equal for the same event sent twice.

        The attributes are hashed as ``json.dumps(sorted(attributes.items()))`` (what
        stored fingerprints were made of), written out with the encoder ``json.dumps``
        uses for each string: the same bytes in ~60% of the time."""
        items = sorted(self.attributes.items())
        pairs = ", ".join(f"[{_json_str(k)}, {_json_str(v)}]" for k, v in items)
        digest = hashlib.sha256(f"[{pairs}]".encode())
        digest.update(b"\0")
        digest.update(self.data if data is None else data)
        return digest.digest()

    def size(self) -> int:
        """Bytes on the wire: data plus attribute names and values, in UTF-8."""
        return len(self.data) + sum(_utf8_len(k) + _utf8_len(v) for k, v in self.attributes.items())


def is_json_media(content_type: str) -> bool:
    """Whether ``content_type`` (parameters aside) is a JSON media type:
    ``application/json``, ``…+json`` or ``text/json``."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json") or media == "text/json"


def _utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (a character is up to 4; counting characters let an
    event of 300,000 emoji through a 1 MB limit, then Kafka refused its record)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
