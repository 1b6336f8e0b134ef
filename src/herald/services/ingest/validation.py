"""Validating a parsed :class:`Event` against the catalog: attributes, then data."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime

import jsonschema_rs

from herald.runtime import json_fast
from herald.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, besides
from herald.services.ingest.catalog import EventTypeDef
from herald.services.ingest.envelope import (
    SURROGATE_ESCAPE,
    UNPAIRED_SURROGATE,
    unpaired_surrogate,
)
from herald.services.ingest.event import NOT_PARSED, Event, is_json_media

# RFC 3339 with an explicit UTC offset: Z or +00:00 (ASCII digits, the whole string).
_UTC_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-]00:00)"
)
# A UUID as RFC 9562 writes it (hex digits in either case).
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MAX_DATA_ERRORS = 50
# (source, id) is the events' primary key, and PostgreSQL indexes at most ~2,700 bytes
# a row: longer values would fail the whole group commit they are in.
MAX_ATTRIBUTE_BYTES = {"id": 512, "source": 1024}


def check_size(event: Event, limit: int) -> None:
    """Refuses an event larger than ``limit`` bytes, before any parsing of its data."""
    size = event.size()
    if size > limit:
        raise InvalidArgument(
            [
                FieldViolation(
                    event.field_name("data"), f"event is {size} bytes; the limit is {limit} bytes"
                )
            ],
            message=f"event too large: {size} bytes, limit {limit}",
        )


def check_record_size(event: Event, record_bytes: int, limit: int) -> None:
    """Refuses an event whose Kafka record (key, data, every header: the key repeats
    partitionkey or subject, each attribute gets its ce_ prefix) exceeds ``limit``:
    accepted, it would never reach Kafka."""
    if record_bytes > limit:
        raise InvalidArgument(
            [
                FieldViolation(
                    event.field_name("data"),
                    f"the event's Kafka record (key, data and headers) is {record_bytes} "
                    f"bytes; the limit is {limit} bytes",
                )
            ],
            message=f"event too large: its record is {record_bytes} bytes, limit {limit}",
        )


def validate(
    event: Event,
    definition: EventTypeDef | None,
    known_versions: list[str],
    found: Sequence[FieldViolation] = (),
) -> None:
    """Raises InvalidArgument naming every problem (``found`` already, and those
    seen here), or FailedPrecondition when the definition is unusable (its stored
    schema no longer compiles); returns when the event is valid."""
    # A field refused while parsing is not refused again here: an attribute dropped for
    # its bad value is not also "required", undecodable data not also "null".
    seen = {v.field for v in found}
    problems = besides(list(found), _attribute_problems(event))
    if definition is None:
        type_field = event.field_name("type")
        if known_versions:
            problems.append(
                FieldViolation(
                    event.field_name("dataversion"),
                    f"unknown data version {event.data_version!r} of {event.type!r}; "
                    f"known: {', '.join(known_versions)}",
                )
            )
        elif event.type:
            problems.append(FieldViolation(type_field, f"unknown event type {event.type!r}"))
        raise InvalidArgument(problems)
    if definition.unusable:
        if problems:
            raise InvalidArgument(problems)
        raise FailedPrecondition(
            f"event type {definition.name!r} version {definition.data_version!r} cannot be "
            f"used: {definition.unusable}; register a new data version"
        )
    problems += _rule_problems(event, definition)
    if not seen or not seen & {event.field_name("data"), "data_base64"}:
        problems += _data_problems(event, definition)
    if problems:
        raise InvalidArgument(problems)


def _attribute_problems(event: Event) -> list[FieldViolation]:
    problems = []
    for name, limit in MAX_ATTRIBUTE_BYTES.items():
        size = len(event.attributes.get(name, "").encode("utf-8", "surrogatepass"))
        if size > limit:
            problems.append(
                FieldViolation(event.field_name(name), f"{size} bytes; at most {limit}")
            )
    time = event.attributes.get("time")
    if not time:
        problems.append(FieldViolation(event.field_name("time"), "required (RFC 3339, UTC)"))
    elif not _UTC_TIME.fullmatch(time) or not _parses(time):
        problems.append(
            FieldViolation(
                event.field_name("time"),
                f"{time!r} is not an RFC 3339 UTC timestamp like 2024-02-01T10:15:30Z",
            )
        )
    content_type = event.attributes.get("datacontenttype")
    if content_type and not is_json_media(content_type):
        problems.append(
            FieldViolation(
                event.field_name("datacontenttype"),
                f"{content_type!r}: event data must be JSON (application/json or a +json type)",
            )
        )
    return problems


def _rule_problems(event: Event, definition: EventTypeDef) -> list[FieldViolation]:
    problems = []
    if definition.id_must_be_uuid and event.id and not _is_uuid(event.id):
        problems.append(FieldViolation(event.field_name("id"), f"{event.id!r} is not a UUID"))
    if event.source and not definition.source_matches(event.source):
        problems.append(
            FieldViolation(
                event.field_name("source"),
                f"{event.source!r} does not match {definition.source_pattern!r}",
            )
        )
    for attribute in definition.required_attributes:
        if not event.attributes.get(attribute):
            problems.append(
                FieldViolation(event.field_name(attribute), f"required for {definition.name}")
            )
    return problems


def _data_problems(event: Event, definition: EventTypeDef) -> list[FieldViolation]:
    data_field = event.field_name("data")
    data = event.json_data
    if data is NOT_PARSED:  # bytes (the Protobuf envelope)
        raw = event.data
        try:
            # JSON between systems is UTF-8 with no byte order mark (RFC 8259 8.1): read
            # as bytes, json took UTF-16 and a BOM too, and they were sent on as they came.
            text = raw.decode()
            if text.startswith("\ufeff"):
                raise UnicodeError
        except UnicodeError:
            return [FieldViolation(data_field, "not valid JSON: not UTF-8 (or a byte order mark)")]
        try:
            data = json_fast.loads(text) if text else None
        except json.JSONDecodeError as exc:
            return [FieldViolation(data_field, f"not valid JSON: {exc}")]
        # Walked only where a surrogate escape is written (not for every \uXXXX: some
        # writers escape all non-ASCII text, and the walk costs several parses).
        if (
            b"\\u" in raw
            and SURROGATE_ESCAPE.search(text)
            and (where := unpaired_surrogate(data, data_field)) is not None
        ):
            return [FieldViolation(where, UNPAIRED_SURROGATE)]
    try:
        if definition.validator.is_valid(data):
            return []
        errors = sorted(definition.validator.iter_errors(data), key=lambda e: list(e.instance_path))
    except ValueError as exc:  # jsonschema-rs reads data only so deep ("Recursion limit")
        return [FieldViolation(data_field, f"cannot be validated: {exc}")]
    return [FieldViolation(_path(data_field, e), e.message) for e in errors[:_MAX_DATA_ERRORS]]


def _path(root: str, error: jsonschema_rs.ValidationError) -> str:
    out = root
    for part in error.instance_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    # A missing property is reported on its parent: name the property itself.
    if isinstance(error.kind, jsonschema_rs.ValidationErrorKind.Required):
        out += f".{error.kind.property}"
    return out


def _is_uuid(value: str) -> bool:
    """The 8-4-4-4-12 form only: ``uuid.UUID`` also takes hyphens anywhere, ``urn:``,
    a sign, ``0x``, underscores, spaces and any script's digits."""
    return _UUID.fullmatch(value) is not None


def _parses(time: str) -> bool:
    try:
        datetime.fromisoformat(time.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
