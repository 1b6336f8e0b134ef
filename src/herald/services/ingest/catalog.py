"""The event-type catalog: which (type, data version) pairs exist and their rules.

Pure: the store loads definitions into a :class:`Catalog`; the catalog answers
lookups and keeps one compiled JSON Schema validator per definition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jsonschema_rs

from herald.runtime import json_fast
from herald.runtime.errors import FieldViolation, InvalidArgument

# Whole-string patterns (fullmatch: ``$`` lets a final newline through) of ASCII digits
# (``\d`` takes any script's: "١.٠" is not a version).
NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
VERSION = re.compile(r"[0-9]+(\.[0-9]+){0,2}")
MAX_NAME_CHARS = 200
MAX_VERSION_CHARS = 32
KNOWN_ATTRIBUTES = {
    "subject",
    "datacontenttype",
    "dataschema",
    "dataversion",
    "time",
    "partitionkey",
}


@dataclass(frozen=True, slots=True)
class EventTypeDef:
    """One event type at one data version."""

    name: str
    data_version: str
    json_schema: dict[str, Any]
    description: str = ""
    id_must_be_uuid: bool = False
    source_pattern: str = ""
    required_attributes: tuple[str, ...] = ()
    create_time: datetime | None = None
    _validator: jsonschema_rs.Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # jsonschema-rs: ~100x faster than the pure-Python validator on our payloads.
        validator = jsonschema_rs.Draft202012Validator(self.json_schema, validate_formats=True)
        object.__setattr__(self, "_validator", validator)

    @property
    def validator(self) -> jsonschema_rs.Draft202012Validator:
        """The compiled validator for the data."""
        return self._validator

    @property
    def version_key(self) -> tuple[int, ...]:
        """Sort key: 1.10 is newer than 1.9."""
        return version_key(self.data_version)


def version_key(version: str) -> tuple[int, ...]:
    """``"1.10"`` → ``(1, 10)``."""
    return tuple(int(p) for p in version.split("."))


def check_definition(
    name: str,
    data_version: str,
    schema_text: str,
    source_pattern: str,
    required_attributes: Iterable[str],
) -> dict[str, Any]:
    """Validates a CreateEventType request; returns the parsed schema."""
    problems: list[FieldViolation] = []
    if not NAME.fullmatch(name) or len(name) > MAX_NAME_CHARS:
        problems.append(
            FieldViolation(
                "event_type.name",
                f"lowercase dotted name of at most {MAX_NAME_CHARS} characters, e.g. "
                "'order.created' or 'user_registered'",
            )
        )
    if not VERSION.fullmatch(data_version) or len(data_version) > MAX_VERSION_CHARS:
        problems.append(
            FieldViolation("event_type.data_version", "a version like '1.0' or '2.1.3'")
        )
    schema: dict[str, Any] = {}
    try:
        loaded = json_fast.loads(schema_text) if schema_text else None
        if not isinstance(loaded, dict):
            problems.append(
                FieldViolation("event_type.json_schema", "a JSON Schema object is required")
            )
        elif "\\u0000" in schema_text and (where := _nul_at(loaded)) is not None:
            problems.append(
                FieldViolation(
                    "event_type.json_schema",
                    f"contains a NUL character (\\u0000) at {where!r}, which cannot be stored",
                )
            )
        else:
            jsonschema_rs.meta.validate(loaded)
            jsonschema_rs.Draft202012Validator(loaded, validate_formats=True)  # compiles
            schema = loaded
    except json.JSONDecodeError as exc:
        problems.append(FieldViolation("event_type.json_schema", f"not valid JSON: {exc}"))
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        message = getattr(exc, "message", str(exc))
        problems.append(
            FieldViolation("event_type.json_schema", f"not a valid JSON Schema: {message}")
        )
    if source_pattern:
        try:
            re.compile(source_pattern)
        except re.error as exc:
            problems.append(
                FieldViolation("event_type.source_pattern", f"not a regular expression: {exc}")
            )
    for i, attribute in enumerate(required_attributes):
        if attribute not in KNOWN_ATTRIBUTES:
            problems.append(
                FieldViolation(
                    f"event_type.required_attributes[{i}]", f"one of {sorted(KNOWN_ATTRIBUTES)}"
                )
            )
    if problems:
        raise InvalidArgument(problems)
    return schema


def _nul_at(value: object) -> str | None:
    """Where in a parsed JSON value a string (or key) holds U+0000, as ``a.b[2]``; else
    None. JSON may escape one (``\\u0000``), PostgreSQL's jsonb refuses it. A loop, not
    recursion: the value may be nested 1,000 deep."""
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            return path
        if isinstance(item, dict):
            for key, child in item.items():
                here = f"{path}.{key}" if path else str(key)
                if "\x00" in key:
                    return here
                stack.append((child, here))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


class Catalog:
    """The definitions known to this process, by name and version."""

    def __init__(self, definitions: Iterable[EventTypeDef] = ()) -> None:
        self._by_name: dict[str, dict[str, EventTypeDef]] = {}
        for definition in definitions:
            self.add(definition)

    def add(self, definition: EventTypeDef) -> None:
        """Adds or replaces one definition."""
        self._by_name.setdefault(definition.name, {})[definition.data_version] = definition

    def get(self, name: str, data_version: str | None = None) -> EventTypeDef | None:
        """The definition at ``data_version``, or the latest when it is None."""
        versions = self._by_name.get(name)
        if not versions:
            return None
        if data_version is None:
            return max(versions.values(), key=lambda d: d.version_key)
        return versions.get(data_version)

    def versions(self, name: str) -> list[str]:
        """The known data versions of ``name``, oldest first."""
        return sorted(self._by_name.get(name, {}), key=version_key)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_name.values())
