"""Parsing a PublishRequest into an :class:`Event`: three envelopes, one result.

- the CloudEvents Protobuf format (``PublishRequest.event``);
- CloudEvents structured JSON (``PublishRequest.json`` with ``specversion``),
  including the events seed's spellings ``data_content_type``, ``data_schema``,
  ``data_version``;
- the legacy envelope ``{event_id, event_type, source, occurred_at, payload}``.

Every problem found becomes a field violation. A request that is not an event at
all raises InvalidArgument; otherwise the event is returned with the problems found
so far, so that validation can add its own and the caller hears of all at once.
Nothing here does I/O.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from herald.cloudevents.v1 import cloudevents_pb2

from herald.runtime import json_fast
from herald.runtime.errors import FieldViolation, InvalidArgument, besides
from herald.services.ingest.event import NOT_PARSED, Envelope, Event

_REQUIRED = ("id", "source", "type", "specversion")
# CloudEvents attributes whose JSON form is a string (the other context attributes).
_STRING_ATTRIBUTES = {
    *_REQUIRED,
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
}
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
# The events seed (000) spells some attributes with underscores; CloudEvents does not.
ALIASES = {
    "data_content_type": "datacontenttype",
    "data_schema": "dataschema",
    "data_version": "dataversion",
    "spec_version": "specversion",
}
# CloudEvents: attribute names are lowercase ASCII letters and digits, at most 20 of them.
_ATTRIBUTE_NAME = re.compile(r"[a-z0-9]{1,20}")
_ATTRIBUTE_NAME_RULE = "attribute names are 1-20 lowercase ASCII letters or digits"
# A \uD800–\uDFFF escape: JSON allows one without its pair, Unicode text does not.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# CloudEvents forbids control characters in string attributes.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Cheap URI checks (RFC 3986 allows neither whitespace nor control characters).
_WHITESPACE = re.compile(r"\s")
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s\x00-\x1f\x7f-\x9f]*")
# The event, and the problems found while reading it.
Parsed = tuple[Event, list[FieldViolation]]
_LEGACY_FIELDS = {"event_id", "event_type", "source", "occurred_at", "payload", "data_version"}


def parse_proto(event: cloudevents_pb2.CloudEvent) -> Parsed:
    """An Event from the CloudEvents Protobuf format."""
    problems: list[FieldViolation] = []
    attributes = {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "specversion": event.spec_version,
    }
    for raw_name, value in event.attributes.items():
        name = ALIASES.get(raw_name, raw_name)
        if name in attributes:
            problems.append(
                FieldViolation(
                    f"event.attributes[{raw_name}]",
                    f"{name} is a required field of CloudEvent, not an attribute",
                )
            )
            continue
        if not _ATTRIBUTE_NAME.fullmatch(name):
            problems.append(FieldViolation(f"event.attributes[{raw_name}]", _ATTRIBUTE_NAME_RULE))
            continue
        if value.WhichOneof("attr") is None:  # would travel as an empty header
            problems.append(
                FieldViolation(f"event.attributes[{raw_name}]", "no value is set (attr oneof)")
            )
            continue
        try:
            attributes[name] = _proto_attribute(value)
        except ValueError as exc:  # a Timestamp out of protobuf's own range
            problems.append(FieldViolation(f"event.attributes[{raw_name}]", str(exc)))
    kind = event.WhichOneof("data")
    data = b""
    if kind == "binary_data":
        data = event.binary_data
    elif kind == "text_data":
        data = event.text_data.encode()
    elif kind == "proto_data":
        problems.append(
            FieldViolation(
                "event.proto_data",
                "proto_data is not accepted: event data is validated against JSON Schema; "
                "send JSON in text_data or binary_data",
            )
        )
    parsed = Event(attributes, data, Envelope.PROTOBUF)
    return parsed, problems + _check_attributes(parsed)


UNPAIRED_SURROGATE = (
    "contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff without its pair), "
    "which is not Unicode text"
)


def parse_json(text: str) -> Parsed:
    """An Event from structured JSON or the legacy envelope, told apart by their keys."""
    try:
        document = json_fast.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument([FieldViolation("json", f"not valid JSON: {exc}")]) from None
    if not isinstance(document, dict):
        raise InvalidArgument([FieldViolation("json", "must be a JSON object")])
    if "\\u" in text and SURROGATE_ESCAPE.search(text):
        where = unpaired_surrogate(document)
        if where is not None:
            raise InvalidArgument([FieldViolation(where, UNPAIRED_SURROGATE)])
    if "specversion" in document or "spec_version" in document:
        return _parse_structured(document)
    if "event_type" in document or "event_id" in document:
        return _parse_legacy(document)
    raise InvalidArgument(
        [
            FieldViolation(
                "json",
                "neither CloudEvents structured JSON (needs specversion) nor the legacy "
                "envelope (needs event_id, event_type, source, occurred_at, payload)",
            )
        ]
    )


def _parse_structured(document: dict[str, Any]) -> Parsed:
    problems: list[FieldViolation] = []
    attributes: dict[str, str] = {}
    spelled: dict[str, str] = {}
    data = b""
    has_data = False
    parsed: object = NOT_PARSED
    for key, value in document.items():
        if value is None and key != "data":
            # The JSON format: an attribute whose value is null is unset (data_base64
            # too); data null is JSON's null, data like any other.
            continue
        if key == "data":
            has_data = True
            # JSON data is a JSON value (a string too); Herald's data is always JSON.
            data, parsed = _json_bytes(value), value
            continue
        if key == "data_base64":
            has_data = True
            try:
                data = base64.b64decode(value, validate=True)
            except (ValueError, TypeError):
                problems.append(FieldViolation("data_base64", "not valid base64"))
            continue
        name = ALIASES.get(key, key)
        if name in attributes:
            problems.append(FieldViolation(key, f"{name} is given twice"))
            continue
        spelled[name] = key
        if not _ATTRIBUTE_NAME.fullmatch(name):
            problems.append(FieldViolation(key, _ATTRIBUTE_NAME_RULE))
            continue
        text, problem = _structured_attribute(name, value)
        if problem:
            problems.append(FieldViolation(key, problem))
        else:
            attributes[name] = text
    if has_data and "data" in document and document.get("data_base64") is not None:
        problems.append(FieldViolation("data", "give data or data_base64, not both"))
    event = Event(attributes, data, Envelope.STRUCTURED_JSON, spelled, parsed)
    return event, besides(problems, _check_attributes(event))  # refused: not "required" too


def _structured_attribute(name: str, value: object) -> tuple[str, str]:
    """The attribute's canonical string and "", or "" and what is wrong with it. The
    CloudEvents JSON format: context attributes are JSON strings; an extension is a
    string, a boolean or an integer within 32 bits (not 1.5, 1e300 or 30 digits)."""
    if isinstance(value, str):
        return value, ""
    if name in _STRING_ATTRIBUTES:
        return "", "must be a JSON string"
    if isinstance(value, bool):
        return ("true" if value else "false"), ""
    if isinstance(value, int) and _INT32_MIN <= value <= _INT32_MAX:
        return str(value), ""
    return "", "extension values are strings, booleans or integers within 32-bit signed range"


def _parse_legacy(document: dict[str, Any]) -> Parsed:
    problems = [
        FieldViolation(k, "unknown field of the legacy envelope")
        for k in document
        if k not in _LEGACY_FIELDS
    ]
    attributes: dict[str, str] = {"specversion": "1.0", "datacontenttype": "application/json"}
    for key, name in (
        ("event_id", "id"),
        ("event_type", "type"),
        ("source", "source"),
        ("occurred_at", "time"),
        ("data_version", "dataversion"),
    ):
        if key not in document:
            continue
        value = document[key]
        if not isinstance(value, str):
            problems.append(FieldViolation(key, "must be a string"))
        else:
            attributes[name] = value
    for key in ("event_id", "event_type", "source", "occurred_at", "payload"):
        if key not in document:
            problems.append(FieldViolation(key, "required"))
    payload = document.get("payload")
    if "payload" in document and not isinstance(payload, dict):
        problems.append(FieldViolation("payload", "must be a JSON object"))
    event = Event(
        attributes,
        _json_bytes(payload) if payload is not None else b"",
        Envelope.LEGACY_JSON,
        json_data=payload if payload is not None else NOT_PARSED,
    )
    return event, besides(problems, _check_attributes(event))


_NON_EMPTY = ("subject", "datacontenttype")


def _check_attributes(event: Event) -> list[FieldViolation]:
    problems = []
    for name in _REQUIRED:
        if not event.attributes.get(name):
            problems.append(FieldViolation(event.field_name(name), "required"))
    for name in _NON_EMPTY:
        if event.attributes.get(name) == "":
            # An empty ce_subject or content-type header went out: the spec's subject
            # is non-empty when present, a content type an RFC 2046 media type.
            problems.append(FieldViolation(event.field_name(name), "empty: omit it instead"))
    for name, value in event.attributes.items():
        if not _CONTROL.search(value):
            continue
        if "\x00" in value:  # named apart: PostgreSQL cannot even look it up
            problems.append(
                FieldViolation(
                    event.field_name(name),
                    "contains a NUL character (\\u0000); control characters are not allowed",
                )
            )
        else:
            problems.append(FieldViolation(event.field_name(name), "contains control characters"))
    source, schema = event.attributes.get("source", ""), event.attributes.get("dataschema")
    # isprintable() is False for every whitespace but the space: the regex only then.
    if (" " in source or not source.isprintable()) and _WHITESPACE.search(source):
        problems.append(
            FieldViolation(event.field_name("source"), "a URI-reference holds no whitespace")
        )
    if schema is not None and not _ABSOLUTE_URI.fullmatch(schema):
        problems.append(
            FieldViolation(
                event.field_name("dataschema"),
                f"{schema!r} is not an absolute URI (a scheme, no whitespace), e.g. "
                "https://example.com/schemas/order.json",
            )
        )
    version = event.attributes.get("specversion")
    if version and version != "1.0":
        problems.append(
            FieldViolation(
                event.field_name("specversion"),
                f"unsupported specversion {version!r}; expected '1.0'",
            )
        )
    return problems


def _proto_attribute(value: cloudevents_pb2.CloudEvent.CloudEventAttributeValue) -> str:
    kind = value.WhichOneof("attr")
    if kind == "ce_boolean":
        return "true" if value.ce_boolean else "false"
    if kind == "ce_integer":
        return str(value.ce_integer)
    if kind == "ce_bytes":
        return base64.b64encode(value.ce_bytes).decode()
    if kind == "ce_timestamp":
        return value.ce_timestamp.ToJsonString()
    text: str = getattr(value, kind or "ce_string")  # unset: refused by the caller
    return text


def _json_bytes(value: object) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except RecursionError:  # parsed (orjson goes 1,024 deep), but too deep to write
        raise InvalidArgument([FieldViolation("data", "nested too deeply")]) from None


def unpaired_surrogate(value: object, path: str = "") -> str | None:
    """Where in a parsed JSON value a string (or key) holds a lone surrogate (what
    ``json.loads`` makes of an unpaired ``\\udXXX`` escape), as ``a.b[2]``; else None."""
    if isinstance(value, str):
        return None if value.isascii() or _is_unicode(value) else (path or "json")
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if not _is_unicode(key):
                return here
            found = unpaired_surrogate(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = unpaired_surrogate(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
