"""Routes: which events become which NotificationJobs. Pure: no I/O, no clock.

A route's filter selects events (type, source, subject prefix, conditions on any value
of the event); its target says what jobs a selected event makes. Text in a target that
starts with ``$`` is a path: ``$data.user_id`` into the event, ``$item`` into the
element when the route fans out (``for_each``) over an array of the data.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from google.protobuf import json_format, struct_pb2
from herald.dispatch.v1 import dispatch_pb2

from herald.runtime.errors import FieldViolation
from herald.runtime.ids import uuid5_text
from herald.runtime.settings import is_topic_name

Op = dispatch_pb2.Condition.Operator
DEFAULT_TOPIC = "herald.notifications.{channel}"
JOB_NAMESPACE = uuid.UUID("0c1f7a52-93c4-4b8e-9a0e-6d3b2f1e8a77")
_MISSING = object()
_ROOTS = {"data", "attributes", "id", "source", "type", "subject", "time", "specversion"}
_CHANNEL = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Event(NamedTuple):
    """What routing sees of an event: its attributes and its data (parsed JSON)."""

    attributes: Mapping[str, str]
    data: Any  # None when absent or not JSON

    def get(self, path: str, item: Any = _MISSING) -> Any:
        """The value at a dotted ``path`` (``_MISSING`` when absent)."""
        head, *rest = path.split(".")
        if head == "item":
            value = item
        elif head == "data":
            value = self.data
        elif head == "attributes":
            value = self.attributes
        else:
            value = self.attributes.get(head, _MISSING)
        for part in rest:
            # type() first: JSON data is dicts, and an ABC isinstance costs ~10x more.
            if (type(value) is dict or isinstance(value, Mapping)) and part in value:
                value = value[part]
            # isdigit alone takes "²" (which int() refuses) and other scripts' digits.
            elif (
                isinstance(value, list)
                and part.isascii()
                and part.isdigit()
                and int(part) < len(value)
            ):
                value = value[int(part)]
            else:
                return _MISSING
        return value


class JobSpec(NamedTuple):
    """One job a route makes of an event."""

    job_id: str
    topic: str
    channel: str
    template_code: str
    recipient: str
    segment: dict[str, Any] | None
    route_id: str


class TargetError(ValueError):
    """The event matched but its data cannot make the route's jobs (a data problem:
    retrying will not help)."""


def _wildcard(pattern: str) -> Callable[[str], bool]:
    """A test of whole types against ``pattern``, where ``*`` matches any run of
    characters and everything else is literal.

    Greedy, not a regex: a regex of ``.*`` runs backtracks exponentially (``*a*a*…c``
    against a run of ``a``s took seconds on the event loop). Taking each middle part at
    its first place after the previous one is correct for ``*``-only globs, since
    a later place never leaves more room for the parts after it; so one scan, O(n·m).
    """
    if "*" not in pattern:
        return lambda text: text == pattern
    head, *middle, tail = pattern.split("*")
    least = len(head) + len(tail)

    def test(text: str) -> bool:
        if len(text) < least or not text.startswith(head) or not text.endswith(tail):
            return False
        at, end = len(head), len(text) - len(tail)
        for part in middle:
            found = text.find(part, at, end)
            if found < 0:
                return False
            at = found + len(part)
        return True

    return test


def _value(v: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(v) if v.WhichOneof("kind") else None


def _same(a: Any, b: Any) -> bool:
    """JSON equality: Python's, except that a boolean equals only a boolean (Python
    has ``True == 1``, JSON's ``true`` is not the number 1); ``1 == 1.0`` still."""
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb and a is b
    if ta is list and tb is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if ta is dict and tb is dict:
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    return bool(a == b)


def _compare(op: int, got: Any, want: Any) -> bool:
    """``got`` (present in the event) against ``want`` under ``op``."""
    if op == Op.OPERATOR_EQUALS:
        return _same(got, want)
    if op == Op.OPERATOR_NOT_EQUALS:
        return not _same(got, want)
    if op == Op.OPERATOR_CONTAINS:
        return (
            any(_same(item, want) for item in got)
            if isinstance(got, list)
            else isinstance(got, str) and isinstance(want, str) and want in got
        )
    if op == Op.OPERATOR_IN:
        return isinstance(want, list) and any(_same(got, item) for item in want)
    return (
        op == Op.OPERATOR_PREFIX
        and isinstance(got, str)
        and isinstance(want, str)
        and got.startswith(want)
    )


def _condition(cond: dispatch_pb2.Condition) -> Callable[[Event], bool]:
    path, op, want = cond.path, cond.operator, _value(cond.value)

    def test(event: Event) -> bool:
        got = event.get(path)
        if op == Op.OPERATOR_EXISTS:
            return got is not _MISSING
        if got is _MISSING:
            return op == Op.OPERATOR_NOT_EQUALS
        return _compare(op, got, want)

    return test


def _type_test(match: dispatch_pb2.TypeMatch) -> Callable[[Event], bool]:
    """Exact, prefix or ``*``-wildcard; an empty match matches every type. The match is
    read once here, not from protobuf per event."""
    kind = match.WhichOneof("match")
    if kind == "exact":
        exact = match.exact
        return lambda e: e.attributes.get("type", "") == exact
    if kind == "prefix":
        prefix = match.prefix
        return lambda e: e.attributes.get("type", "").startswith(prefix)
    if kind == "wildcard":
        fits = _wildcard(match.wildcard)
        return lambda e: fits(e.attributes.get("type", ""))
    return lambda e: True


def _source_test(source: str) -> Callable[[Event], bool]:
    return lambda e: e.attributes.get("source") == source


def _subject_test(prefix: str) -> Callable[[Event], bool]:
    return lambda e: e.attributes.get("subject", "").startswith(prefix)


@dataclass(frozen=True, slots=True)
class _Target:
    """A route's target as plain strings (read per event: no protobuf access)."""

    for_each: str
    channel: str
    recipient: str
    segment: str
    template_code: str
    topic: str  # DEFAULT_TOPIC when not set

    @classmethod
    def of(cls, t: dispatch_pb2.JobTarget) -> _Target:
        return cls(
            t.for_each, t.channel, t.recipient, t.segment, t.template_code, t.topic or DEFAULT_TOPIC
        )


@dataclass(frozen=True)
class CompiledRoute:
    """A route ready to apply to events."""

    id: str
    name: str
    route: dispatch_pb2.Route
    _tests: tuple[Callable[[Event], bool], ...]
    _target: _Target
    disabled: bool  # the route's own flag, read per event without protobuf access

    @classmethod
    def of(cls, route: dispatch_pb2.Route) -> CompiledRoute:
        f = route.filter
        tests: list[Callable[[Event], bool]] = []
        if f.HasField("type"):
            tests.append(_type_test(f.type))
        if f.source:
            tests.append(_source_test(f.source))
        if f.subject_prefix:
            tests.append(_subject_test(f.subject_prefix))
        tests += [_condition(c) for c in f.conditions]
        return cls(
            route.id, route.name, route, tuple(tests), _Target.of(route.target), route.disabled
        )

    def matches(self, event: Event) -> bool:
        return not self.disabled and all(t(event) for t in self._tests)

    def jobs(self, event: Event) -> list[JobSpec]:
        """The jobs ``event`` makes; raises TargetError when its data cannot."""
        t = self._target
        if not t.for_each:
            return [self._job(event, t, _MISSING, 0)]
        items = event.get(t.for_each[1:])
        if not isinstance(items, list):
            raise TargetError(f"{t.for_each} is not an array in event {_name(event)}")
        return [self._job(event, t, item, index) for index, item in enumerate(items)]

    def _job(self, event: Event, t: _Target, item: Any, index: int) -> JobSpec:
        channel = _text(event, t.channel, item, "channel")
        a = event.attributes
        return JobSpec(
            uuid5_text(JOB_NAMESPACE, f"{a.get('source')}\n{a.get('id')}\n{self.id}\n{index}"),
            t.topic.replace("{channel}", channel),
            channel,
            _text(event, t.template_code, item, "template_code"),
            _text(event, t.recipient, item, "recipient") if t.recipient else "",
            _object(event, t.segment, item) if t.segment else None,
            self.id,
        )


def _name(event: Event) -> str:
    return f"{event.attributes.get('source')}/{event.attributes.get('id')}"


def is_channel(name: str) -> bool:
    """A channel name: 1 to 64 ASCII letters, digits, '_' and '-' (a part of a topic name)."""
    return bool(_CHANNEL.fullmatch(name))


def _text(event: Event, spec: str, item: Any, what: str) -> str:
    if not spec.startswith("$"):
        return spec
    value = event.get(spec[1:], item)
    if value is _MISSING or value is None or isinstance(value, dict | list):
        raise TargetError(f"{what}: {spec} is not a value in event {_name(event)}")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if what == "channel" and not is_channel(text):
        raise TargetError(f"channel {text!r} from {spec} is not a channel name")
    return text


def _object(event: Event, spec: str, item: Any) -> dict[str, Any]:
    value = event.get(spec[1:], item)
    if not isinstance(value, dict):
        raise TargetError(f"segment: {spec} is not an object in event {_name(event)}")
    return value


# --- validation ---------------------------------------------------------------------


def check(
    route: dispatch_pb2.Route, field: str = "route", reserved: Collection[str] = ()
) -> list[FieldViolation]:
    """Every problem with ``route``, named by field path. ``reserved``: topics a route's
    jobs may not go to (dispatch's own: a job on the events topic is consumed as the
    event again, for ever)."""
    problems: list[FieldViolation] = []
    if not route.name.strip() or len(route.name) > 200:
        problems.append(FieldViolation(f"{field}.name", "required, at most 200 characters"))
    if len(route.description) > 2000:
        problems.append(FieldViolation(f"{field}.description", "at most 2000 characters"))
    problems += _check_filter(route.filter, f"{field}.filter")
    problems += _check_target(route.target, f"{field}.target")
    t = route.target
    topic = t.topic or DEFAULT_TOPIC
    # A channel taken from the event names the topic per event (see reserved_topic).
    if "{channel}" not in topic or not t.channel.startswith("$"):
        topic = topic.replace("{channel}", t.channel)
        if reason := reserved_topic(topic, reserved):
            problems.append(FieldViolation(f"{field}.target.topic", reason))
    return problems


def reserved_topic(topic: str, reserved: Collection[str]) -> str | None:
    """Why a job may not go to ``topic``, or None."""
    if topic in reserved:
        return f"{topic} is one of dispatch's own topics (events, deliveries, dead letters)"
    return None


def _check_filter(f: dispatch_pb2.RouteFilter, field: str) -> list[FieldViolation]:
    problems = []
    kind = f.type.WhichOneof("match")
    if kind is not None and not getattr(f.type, kind):
        problems.append(FieldViolation(f"{field}.type.{kind}", "must not be empty"))
    for i, c in enumerate(f.conditions):
        at = f"{field}.conditions[{i}]"
        if not _path_ok(c.path):
            problems.append(
                FieldViolation(f"{at}.path", f"a dotted path starting with one of {_roots()}")
            )
        if c.operator == Op.OPERATOR_UNSPECIFIED:
            problems.append(FieldViolation(f"{at}.operator", "required"))
        elif c.operator not in _OPERATORS:
            problems.append(
                FieldViolation(f"{at}.operator", f"{c.operator} is not a defined operator")
            )
        elif c.operator != Op.OPERATOR_EXISTS and not c.value.WhichOneof("kind"):
            problems.append(FieldViolation(f"{at}.value", "required for this operator"))
        elif c.operator == Op.OPERATOR_IN and c.value.WhichOneof("kind") != "list_value":
            problems.append(FieldViolation(f"{at}.value", "a list for OPERATOR_IN"))
        if not _finite(c.value):
            problems.append(
                FieldViolation(f"{at}.value", "numbers must be finite (no NaN or Infinity)")
            )
    return problems


_OPERATORS = frozenset(Op.values())


def _finite(value: struct_pb2.Value) -> bool:
    """False when ``value`` has a NaN or an infinity anywhere: JSON (the route's stored
    form) has no such numbers, and no event's data can hold one to compare with."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return math.isfinite(value.number_value)
    if kind == "list_value":
        return all(_finite(v) for v in value.list_value.values)
    if kind == "struct_value":
        return all(_finite(v) for v in value.struct_value.fields.values())
    return True


def _check_target(t: dispatch_pb2.JobTarget, field: str) -> list[FieldViolation]:
    problems = []
    each = bool(t.for_each)
    if each and not (t.for_each.startswith("$data") and _path_ok(t.for_each[1:])):
        problems.append(FieldViolation(f"{field}.for_each", "a path into the data: $data.<...>"))
    for name in ("channel", "template_code", "recipient", "segment"):
        value = getattr(t, name)
        if name in ("channel", "template_code") and not value:
            problems.append(FieldViolation(f"{field}.{name}", "required"))
        elif value.startswith("$") and not _path_ok(value[1:], item=each):
            problems.append(
                FieldViolation(f"{field}.{name}", f"{value} is not a path into the event")
            )
    if t.channel and not t.channel.startswith("$") and not is_channel(t.channel):
        problems.append(FieldViolation(f"{field}.channel", "letters, digits, '_' and '-'"))
    if t.segment and not t.segment.startswith("$"):
        problems.append(FieldViolation(f"{field}.segment", "a path to an object ($data.<...>)"))
    if t.recipient and t.segment:
        problems.append(FieldViolation(f"{field}.segment", "give recipient or segment, not both"))
    topic = (t.topic or DEFAULT_TOPIC).replace("{channel}", "x")
    if not is_topic_name(topic):
        problems.append(
            FieldViolation(f"{field}.topic", "a Kafka topic name (letters, digits, . _ -)")
        )
    return problems


def _path_ok(path: str, item: bool = False) -> bool:
    parts = path.split(".")
    roots = _ROOTS | ({"item"} if item else set())
    return bool(path) and parts[0] in roots and all(parts)


def _roots() -> str:
    return ", ".join(sorted(_ROOTS))


def route_from_json(doc: Mapping[str, Any]) -> dispatch_pb2.Route:
    """A route from its proto JSON form (configuration files); ValueError if malformed."""
    try:
        return json_format.ParseDict(dict(doc), dispatch_pb2.Route())
    except json_format.ParseError as exc:
        raise ValueError(str(exc)) from None


def routes_from_json(text: str, reserved: Collection[str] = ()) -> list[dispatch_pb2.Route]:
    """The routes of a routes file's text (a JSON list of Route objects); ValueError
    naming the route, and the field, of the first problem."""
    try:
        docs = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(docs, list):
        raise ValueError("expected a JSON list of routes")
    routes: list[dispatch_pb2.Route] = []
    names: set[str] = set()
    for n, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ValueError(f"route {n}: expected a JSON object")
        try:
            route = route_from_json(doc)
        except ValueError as exc:
            raise ValueError(f"route {n}: {exc}") from None
        if problems := check(route, f"[{n}]", reserved):
            raise ValueError("; ".join(f"{p.field}: {p.description}" for p in problems))
        if route.name in names:  # stored by name: the later would replace the earlier
            raise ValueError(f"[{n}].name: {route.name!r} is given twice")
        names.add(route.name)
        routes.append(route)
    return routes
