"""The event-type catalog: which (type, data version) pairs exist and their rules.

Pure: the store loads definitions into a :class:`Catalog`; the catalog answers
lookups and keeps one compiled JSON Schema validator per definition.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jsonschema_rs
import re2

from herald.runtime import json_fast
from herald.runtime.errors import FieldViolation, InvalidArgument

# Whole-string patterns (fullmatch: ``$`` lets a final newline through) of ASCII digits
# (``\d`` takes any script's: "١.٠" is not a version).
NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
# No leading zeros: "1.0", "1.00" and "01.0" would be three versions of one number,
# and which is the latest a matter of insertion order.
VERSION = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*)){0,2}")
MAX_NAME_CHARS = 200
MAX_VERSION_CHARS = 32
# A definition travels whole in ListEventTypes pages, which must fit a default client's
# 4 MiB message: these keep one well under it (a page is cut by bytes too).
MAX_SCHEMA_BYTES = 256 * 1024  # the most MAX_SCHEMA_BYTES (the setting) may allow
# A loaded schema costs ~20 times its JSON in memory parsed and compiled (measured: an
# 80 KB schema of 700 properties with patterns, 0.35 MB parsed and 1.4 MB compiled).
DEFAULT_SCHEMA_BYTES = 64 * 1024
# Compiled validators are kept for at most this many bytes of their schemas' JSON (~100
# MB compiled at most), the least recently used dropped beyond and compiled again when
# next used: 1,000 versions of 64 KiB no longer hold ~1.4 GB compiled in every ingest
# process. Every version is still compiled once at load (to tell unusable ones).
COMPILED_BUDGET_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_EVENT_TYPES = 1000  # MAX_EVENT_TYPES: versions created, built-ins not counted
MAX_DESCRIPTION_CHARS = 2000
# The drafts a schema may declare in ``$schema`` (http or https, with or without the
# final '#'): the meta-schemas jsonschema-rs holds. Any other is refused: meta-validation
# would fetch it from the network.
_DRAFTS = {
    "json-schema.org/draft-04/schema",
    "json-schema.org/draft-06/schema",
    "json-schema.org/draft-07/schema",
    "json-schema.org/draft/2019-09/schema",
    "json-schema.org/draft/2020-12/schema",
}
_LOCAL_REFS_ONLY = (
    "$ref may only point inside the schema (like '#/$defs/item'); files and URLs are never fetched"
)
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
    # The JSON Schema as JSON text: parsed only to compile it or to answer with it (a
    # parsed schema takes ~4 times its text's memory, and every version is held).
    schema_text: str
    description: str = ""
    id_must_be_uuid: bool = False
    source_pattern: str = ""
    required_attributes: tuple[str, ...] = ()
    create_time: datetime | None = None
    # Compiled on first use (a definition only listed is never compiled); until then
    # _unusable is None. Dropped again while unused, beyond COMPILED_BUDGET_BYTES.
    _validator: jsonschema_rs.Validator | None = field(
        init=False, default=None, repr=False, compare=False
    )
    _source: Any = field(init=False, default=None, repr=False, compare=False)  # re2 pattern
    _unusable: str | None = field(init=False, default=None, repr=False, compare=False)

    def _compile(self) -> str:
        unusable = self._compile_now()
        if self._validator is not None:
            COMPILED.admit(self)
        return unusable

    def _compile_now(self) -> str:
        # A stored definition that no longer compiles (one stored before a rule it
        # breaks) is kept, listed and named in errors, but events of it are refused:
        # raising here would stop the catalog from loading at all.
        validator, source, unusable = None, None, ""
        try:
            validator = compile_schema(self.json_schema)
        except (ValueError, jsonschema_rs.ReferencingError) as exc:
            unusable = f"its JSON Schema does not compile: {_first_line(exc)}"
        if self.source_pattern:
            try:
                source = compile_source_pattern(self.source_pattern)
            except ValueError as exc:
                unusable = unusable or f"its source_pattern does not compile: {exc}"
        object.__setattr__(self, "_validator", validator)
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_unusable", unusable)
        return unusable

    def source_matches(self, source: str) -> bool:
        """Whether ``source`` matches the whole source_pattern (true without one)."""
        if self._unusable is None:
            self._compile()
        return self._source is None or self._source.fullmatch(source) is not None

    @property
    def validator(self) -> jsonschema_rs.Validator:
        """The compiled validator for the data (only of a usable definition)."""
        validator = self._validator
        if validator is not None:
            COMPILED.touch(self)
        else:
            self._compile()
            validator = self._validator
            if validator is None:
                raise RuntimeError(f"{self.name} {self.data_version} is unusable: {self._unusable}")
        return validator

    @property
    def unusable(self) -> str:
        """Why events of this definition cannot be validated; "" when they can."""
        unusable = self._unusable
        return self._compile() if unusable is None else unusable

    @property
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema, parsed (afresh at each use)."""
        schema: dict[str, Any] = json_fast.loads(self.schema_text)
        return schema

    @property
    def version_key(self) -> tuple[int, ...]:
        """Sort key: 1.10 is newer than 1.9."""
        return version_key(self.data_version)


class CompiledValidators:
    """Which definitions hold a compiled validator, least recently used first, within
    ``budget`` characters of their schemas' JSON text; beyond, the oldest drop theirs."""

    def __init__(self, budget: int = COMPILED_BUDGET_BYTES) -> None:
        self.budget = budget
        self._held: OrderedDict[int, tuple[EventTypeDef, int]] = OrderedDict()
        self.held_bytes = 0

    def __len__(self) -> int:
        return len(self._held)

    def touch(self, definition: EventTypeDef) -> None:
        """The definition's validator was used (kept longest)."""
        if id(definition) in self._held:
            self._held.move_to_end(id(definition))

    def admit(self, definition: EventTypeDef) -> None:
        """The definition has just been compiled: held, dropping the least recently
        used beyond the budget (never the one admitted)."""
        key = id(definition)
        if key in self._held:
            self._held.move_to_end(key)
            return
        size = len(definition.schema_text)
        self._held[key] = (definition, size)
        self.held_bytes += size
        while self.held_bytes > self.budget and len(self._held) > 1:
            _, (dropped, dropped_size) = self._held.popitem(last=False)
            self.held_bytes -= dropped_size
            object.__setattr__(dropped, "_validator", None)  # compiled again when used


COMPILED = CompiledValidators()


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is the caller's mistake, not a log line
    return options


_RE2_OPTIONS = _re2_options()


def compile_source_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2: matching takes time linear in the source, where
    Python's backtracking ``re`` spent seconds on ``(a+)+b`` against 27 characters,
    blocking the event loop. Raises ValueError naming what RE2 refuses
    (backreferences, lookarounds)."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(text) from None


def compile_schema(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """The validator of ``schema``, by the draft it declares (2020-12 by default).

    Offline: a ``$ref`` to a file or URL is refused, never read (it would let any
    caller read the server's files, or make ingest fetch URLs). jsonschema-rs is ~100x
    faster than the pure-Python validator on our payloads.
    """
    return jsonschema_rs.validator_for(schema, validate_formats=True, offline=True)


def _first_line(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return str(message).split("\n", 1)[0]


def version_key(version: str) -> tuple[int, ...]:
    """``"1.10"`` → ``(1, 10)``."""
    return tuple(int(p) for p in version.split("."))


def check_definition(
    name: str,
    data_version: str,
    schema_text: str,
    source_pattern: str,
    required_attributes: Iterable[str],
    description: str = "",
    max_schema_bytes: int = MAX_SCHEMA_BYTES,
) -> dict[str, Any]:
    """Validates a CreateEventType request (a schema of at most ``max_schema_bytes`` of
    JSON); returns the parsed schema."""
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
            FieldViolation(
                "event_type.data_version",
                "a version like '1.0' or '2.1.3' (numbers without leading zeros)",
            )
        )
    schema, problem = _parsed_schema(schema_text, max_schema_bytes)
    if problem:
        problems.append(FieldViolation("event_type.json_schema", problem))
    if len(description) > MAX_DESCRIPTION_CHARS:
        problems.append(
            FieldViolation(
                "event_type.description",
                f"{len(description)} characters; at most {MAX_DESCRIPTION_CHARS}",
            )
        )
    elif "\x00" in description:
        problems.append(
            FieldViolation(
                "event_type.description", "contains a NUL character, which cannot be stored"
            )
        )
    if source_pattern:
        try:
            compile_source_pattern(source_pattern)
        except ValueError as exc:
            problems.append(
                FieldViolation(
                    "event_type.source_pattern",
                    f"not a regular expression RE2 accepts (no backreferences or "
                    f"lookarounds): {exc}",
                )
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


def _parsed_schema(text: str, max_bytes: int) -> tuple[dict[str, Any], str]:
    """The schema in ``text`` and "", or {} and what is wrong with it; nothing fetched."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:  # not even parsed
        return {}, f"{size} bytes of JSON; at most {max_bytes} (MAX_SCHEMA_BYTES)"
    try:
        schema = json_fast.loads(text) if text else None
    except json.JSONDecodeError as exc:
        return {}, f"not valid JSON: {exc}"
    if not isinstance(schema, dict):
        return {}, "a JSON Schema object is required"
    if "\\u0000" in text and (where := _nul_at(schema)) is not None:
        return {}, f"contains a NUL character (\\u0000) at {where!r}, which cannot be stored"
    problem = _compile_problem(schema)
    return ({}, problem) if problem else (schema, "")


def _compile_problem(schema: dict[str, Any]) -> str:
    """What stops ``schema`` from compiling offline; "" when nothing does."""
    declared = schema.get("$schema")
    if isinstance(declared, str) and not _is_known_draft(declared):
        return (
            f"$schema {declared!r} is not a draft this service knows; omit $schema "
            "(draft 2020-12) or give one of https://json-schema.org/draft/2020-12/schema, "
            "https://json-schema.org/draft/2019-09/schema, "
            "http://json-schema.org/draft-07/schema#, draft-06 or draft-04"
        )
    try:
        jsonschema_rs.meta.validate(schema)
        compile_schema(schema)
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        message = _first_line(exc)
        if "Retrieval is disabled" in message:
            return f"{_LOCAL_REFS_ONLY}: {message}"
        return f"not a valid JSON Schema: {message}"
    return ""


def _is_known_draft(uri: str) -> bool:
    for scheme in ("https://", "http://"):
        if uri.startswith(scheme):
            return uri.removeprefix(scheme).removesuffix("#") in _DRAFTS
    return False


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

    def names(self) -> list[str]:
        """The names of the known types."""
        return list(self._by_name)

    def versions(self, name: str) -> list[str]:
        """The known data versions of ``name``, oldest first."""
        return sorted(self._by_name.get(name, {}), key=version_key)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_name.values())
