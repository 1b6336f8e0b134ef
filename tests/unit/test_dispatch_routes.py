"""Routing, fan-out and the retry schedule: pure logic."""

from __future__ import annotations

import random
import re

import pytest
from google.protobuf import struct_pb2
from herald.dispatch.v1 import dispatch_pb2, notification_pb2

from herald.runtime.cloudevents_kafka import BinaryEvent
from herald.runtime.dlq import InputRecord
from herald.services.dispatch import fanout
from herald.services.dispatch.deadletters import letter_id
from herald.services.dispatch.retry import Schedule
from herald.services.dispatch.routes import CompiledRoute, Event, TargetError, check

Op = dispatch_pb2.Condition.Operator
ATTRS = {"id": "e1", "source": "urn:s", "type": "message.created", "specversion": "1.0"}


def route(**target: str) -> dispatch_pb2.Route:
    return dispatch_pb2.Route(
        id="r1",
        name="r",
        target=dispatch_pb2.JobTarget(**{"channel": "email", "template_code": "t", **target}),
    )


def cond(path: str, op: int, value: object = None) -> dispatch_pb2.Condition:
    v = struct_pb2.Value()
    if isinstance(value, str):
        v.string_value = value
    elif isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int | float):
        v.number_value = value
    elif isinstance(value, list):
        v.list_value.extend(value)
    return dispatch_pb2.Condition(path=path, operator=op, value=v)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("match", "event_type", "expected"),
    [
        (dispatch_pb2.TypeMatch(exact="message.created"), "message.created", True),
        (dispatch_pb2.TypeMatch(exact="message.created"), "message.created.v2", False),
        (dispatch_pb2.TypeMatch(prefix="message."), "message.deleted", True),
        (dispatch_pb2.TypeMatch(prefix="message."), "messages", False),
        (dispatch_pb2.TypeMatch(wildcard="*.created"), "order.created", True),
        (dispatch_pb2.TypeMatch(wildcard="*.created"), "order.created.x", False),
        (dispatch_pb2.TypeMatch(wildcard="m*e.*"), "message.created", True),
        (dispatch_pb2.TypeMatch(wildcard="*"), "anything", True),
        (dispatch_pb2.TypeMatch(wildcard="a.b"), "aXb", False),  # dots are literal
        (dispatch_pb2.TypeMatch(), "anything", True),  # an empty match: every type
    ],
)
def test_type_matches(match: dispatch_pb2.TypeMatch, event_type: str, expected: bool) -> None:
    r = route()
    r.filter.type.CopyFrom(match)
    event = Event({**ATTRS, "type": event_type}, {})
    assert CompiledRoute.of(r).matches(event) is expected


def _type_matches(pattern: str, event_type: str) -> bool:
    r = route()
    r.filter.type.wildcard = pattern
    return CompiledRoute.of(r).matches(Event({**ATTRS, "type": event_type}, {}))


@pytest.mark.timeout(10)  # the regex this replaced takes years here (it backtracked)
def test_a_wildcard_is_matched_in_linear_time() -> None:
    pattern = "*a" * 19 + "*c"  # 20 stars
    assert not _type_matches(pattern, "a" * 200)
    assert _type_matches(pattern, "a" * 199 + "c")
    assert not _type_matches("*a*a*a*a*a*a*a*a*a*a*c", "a" * 40)


def test_wildcards_match_as_the_regex_did() -> None:
    """The greedy match answers as the ``.*`` regex it replaced, on every small case."""
    rng = random.Random(7)
    for _ in range(20000):
        pattern = "".join(rng.choices("ab*.\n", k=rng.randint(0, 7)))
        text = "".join(rng.choices("ab.\n", k=rng.randint(0, 9)))
        regex = ".*".join(re.escape(p) for p in pattern.split("*"))
        expected = re.fullmatch(regex, text, re.DOTALL) is not None
        assert _type_matches(pattern, text) is expected, (pattern, text)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (cond("data.channels", Op.OPERATOR_CONTAINS, "push"), True),
        (cond("data.channels", Op.OPERATOR_CONTAINS, "sms"), False),
        (cond("data.title", Op.OPERATOR_CONTAINS, "Mat"), True),
        (cond("data.segment.min_age", Op.OPERATOR_EQUALS, 16), True),
        (cond("data.segment.min_age", Op.OPERATOR_NOT_EQUALS, 16), False),
        (cond("data.missing", Op.OPERATOR_NOT_EQUALS, 16), True),
        (cond("data.missing", Op.OPERATOR_EQUALS, 16), False),
        (cond("data.segment", Op.OPERATOR_EXISTS), True),
        (cond("data.nothing", Op.OPERATOR_EXISTS), False),
        (cond("data.locale", Op.OPERATOR_IN, ["ru", "en"]), True),
        (cond("data.locale", Op.OPERATOR_IN, ["de"]), False),
        (cond("source", Op.OPERATOR_PREFIX, "urn:"), True),
        (cond("attributes.tenant", Op.OPERATOR_EQUALS, "acme"), True),
        (cond("data.channels.0", Op.OPERATOR_EQUALS, "email"), True),
        (cond("data.vip", Op.OPERATOR_EQUALS, True), True),
        # list indexes are ASCII digits: "²" is a digit to str.isdigit, not to int()
        (cond("data.channels.²", Op.OPERATOR_EXISTS), False),
        (cond("data.channels.١", Op.OPERATOR_EXISTS), False),
    ],
)
def test_conditions(condition: dispatch_pb2.Condition, expected: bool) -> None:
    r = route()
    r.filter.conditions.append(condition)
    data = {
        "channels": ["email", "push"],
        "title": "The Matrix",
        "segment": {"min_age": 16},
        "locale": "ru",
        "vip": True,
    }
    event = Event({**ATTRS, "tenant": "acme"}, data)
    assert CompiledRoute.of(r).matches(event) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (cond("data.on", Op.OPERATOR_IN, [1, 2]), False),
        (cond("data.on", Op.OPERATOR_EQUALS, 1), False),
        (cond("data.on", Op.OPERATOR_NOT_EQUALS, 1), True),
        (cond("data.on", Op.OPERATOR_EQUALS, True), True),
        (cond("data.on", Op.OPERATOR_IN, [True]), True),
        (cond("data.off", Op.OPERATOR_EQUALS, 0), False),
        (cond("data.off", Op.OPERATOR_IN, [0, 2]), False),
        (cond("data.off", Op.OPERATOR_EQUALS, False), True),
        (cond("data.one", Op.OPERATOR_EQUALS, True), False),
        (cond("data.one", Op.OPERATOR_IN, [True, False]), False),
        (cond("data.one", Op.OPERATOR_EQUALS, 1), True),  # 1 and 1.0 are one number
        (cond("data.flags", Op.OPERATOR_CONTAINS, 1), False),
        (cond("data.flags", Op.OPERATOR_CONTAINS, True), True),
        (cond("data.counts", Op.OPERATOR_CONTAINS, True), False),
        (cond("data.counts", Op.OPERATOR_CONTAINS, 1), True),
        (cond("data.pairs", Op.OPERATOR_IN, [[1, 0]]), False),  # nested values too
        (cond("data.pairs", Op.OPERATOR_IN, [[True, False]]), True),
    ],
)
def test_booleans_equal_only_booleans(condition: dispatch_pb2.Condition, expected: bool) -> None:
    r = route()
    r.filter.conditions.append(condition)
    data = {
        "on": True,
        "off": False,
        "one": 1,
        "flags": [True, False],
        "counts": [1, 0],
        "pairs": [True, False],
    }
    assert CompiledRoute.of(r).matches(Event(ATTRS, data)) is expected


def test_a_disabled_route_matches_nothing() -> None:
    r = route()
    r.disabled = True
    assert not CompiledRoute.of(r).matches(Event(ATTRS, {}))


def test_fan_out_over_an_array_makes_one_job_per_element_with_stable_ids() -> None:
    r = CompiledRoute.of(
        route(for_each="$data.channels", channel="$item", template_code="$data.tpl")
    )
    event = Event(ATTRS, {"channels": ["email", "push"], "tpl": "bf"})
    jobs = r.jobs(event)
    assert [(j.channel, j.topic, j.template_code) for j in jobs] == [
        ("email", "herald.notifications.email", "bf"),
        ("push", "herald.notifications.push", "bf"),
    ]
    assert len({j.job_id for j in jobs}) == 2
    assert [j.job_id for j in r.jobs(event)] == [j.job_id for j in jobs], "deterministic"
    other = Event({**ATTRS, "id": "e2"}, event.data)
    assert not {j.job_id for j in r.jobs(other)} & {j.job_id for j in jobs}


@pytest.mark.parametrize(
    ("target", "data", "message"),
    [
        ({"for_each": "$data.channels"}, {"channels": "email"}, "is not an array"),
        ({"recipient": "$data.user"}, {}, "recipient: $data.user is not a value"),
        ({"segment": "$data.seg"}, {"seg": 5}, "is not an object"),
        ({"channel": "$data.ch"}, {"ch": "no spaces please"}, "is not a channel name"),
    ],
)
def test_data_that_cannot_make_jobs_is_a_target_error(
    target: dict[str, str], data: dict[str, object], message: str
) -> None:
    with pytest.raises(TargetError, match=message.replace("$", r"\$")):
        CompiledRoute.of(route(**target)).jobs(Event(ATTRS, data))


def test_check_names_every_problem() -> None:
    bad = dispatch_pb2.Route(
        filter=dispatch_pb2.RouteFilter(
            type=dispatch_pb2.TypeMatch(exact=""),
            conditions=[
                dispatch_pb2.Condition(path="x.y", operator=Op.OPERATOR_EQUALS),
                cond("data.a", Op.OPERATOR_IN, "not a list"),
            ],
        ),
        target=dispatch_pb2.JobTarget(
            topic="bad topic/{channel}",
            channel="$item",
            recipient="$data.u",
            segment="$data.s",
        ),
    )
    assert {p.field for p in check(bad)} == {
        "route.name",
        "route.filter.type.exact",
        "route.filter.conditions[0].path",
        "route.filter.conditions[0].value",
        "route.filter.conditions[1].value",
        "route.target.channel",  # $item without for_each
        "route.target.template_code",
        "route.target.segment",  # both recipient and segment
        "route.target.topic",
    }
    assert check(route()) == []


PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_notification_records_carry_the_event_context() -> None:
    binary = BinaryEvent(
        {**ATTRS, "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json"},
        b'{"user_id": "u1"}',
        {"traceparent": PARENT, "x-correlation-id": "c1", "other": "x"},
    )
    consumed = fanout.decode(*_record(binary))
    [out] = fanout.notifications(consumed, CompiledRoute.of(route(recipient="$data.user_id")))
    names = dict(out.headers)
    assert names["ce_id"] == b"e1"
    assert names["ce_time"] == b"2026-01-01T00:00:00Z"
    # The event's trace continues (under dispatch's event.consume span once tracing is
    # configured: another span id; the parent as it is before).
    assert names["traceparent"].decode()[:36] == PARENT[:36]
    assert names["traceparent"].decode().endswith("-01")
    assert names["x-correlation-id"] == b"c1"
    assert names["content-type"] == b"application/x-protobuf"
    assert names["schema-version"] == b"1"
    assert "other" not in names
    assert out.key == b"key-1"
    job = notification_pb2.NotificationJob.FromString(out.value)
    assert (job.recipient, job.event_id, job.route_id) == ("u1", "e1", "r1")
    assert job.event_time.ToJsonString() == "2026-01-01T00:00:00Z"


def test_delivery_jobs_are_keyed_by_webhook_with_deterministic_ids() -> None:
    consumed = fanout.decode(*_record(BinaryEvent(ATTRS, b'{"a": 1}', {})))
    first = fanout.deliveries(consumed, ["w1", "w2"], "herald.deliveries")
    assert [o.key for o in first] == [b"w1", b"w2"]
    again = fanout.deliveries(consumed, ["w1"], "herald.deliveries")
    assert again[0].value == first[0].value


def test_undecodable_records_say_why() -> None:
    with pytest.raises(ValueError, match="missing ce_specversion"):
        fanout.decode([("ce_id", b"1")], None, b"{}")
    binary = BinaryEvent({**ATTRS, "datacontenttype": "application/json"}, b"{oops", {})
    with pytest.raises(ValueError, match="not valid JSON"):
        fanout.decode(*_record(binary))


def _record(binary: BinaryEvent) -> tuple[list[tuple[str, bytes]], bytes, bytes]:
    from herald.runtime.cloudevents_kafka import encode  # noqa: PLC0415

    _key, value, headers = encode(binary)
    return headers, b"key-1", value


def test_schedule() -> None:
    s = Schedule.parse("5m,30m,2h,6h,24h")
    assert s.delays == (300.0, 1800.0, 7200.0, 21600.0, 86400.0)
    assert [s.delay_after(n) for n in (1, 2, 5)] == [300.0, 1800.0, 86400.0]
    assert not s.exhausted(6 - 1)
    assert s.exhausted(6), "the first try and five retries, then the DLQ"
    assert Schedule.parse("0.3s, 2").delays == (0.3, 2.0)
    for bad, why in (("", "at least one"), ("5x", "expected a number"), ("-1s", "negative")):
        with pytest.raises(ValueError, match=why):
            Schedule.parse(bad)


def test_a_records_dead_letters_are_one_per_set_of_targets() -> None:
    # A record dead for one target at first and for another on a retry is two dead
    # letters (the second had the first's id, so its row and alert were dropped); the
    # same record and targets again (consumed again after a crash) is the same one.
    record = InputRecord("herald.events", 3, 42, b"k", b"v", [])
    again = InputRecord("herald.events", 3, 42, b"k", b"v", [("h", b"x")])
    assert letter_id(record, ["a", "b"]) == letter_id(again, ["b", "a"])
    assert letter_id(record, ["a"]) != letter_id(record, ["b"])
    assert letter_id(record, ["a"]) != letter_id(
        InputRecord("herald.events", 3, 43, None, None, []), ["a"]
    )


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), [1, float("nan")]],
)
def test_a_condition_value_that_is_not_a_finite_number_is_refused(value: object) -> None:
    """JSON (a route's stored form) has no NaN or Infinity: storing one had failed."""
    r = route()
    op = Op.OPERATOR_IN if isinstance(value, list) else Op.OPERATOR_EQUALS
    r.filter.conditions.append(cond("data.x", op, value))
    assert {(p.field, "finite" in p.description) for p in check(r)} == {
        ("route.filter.conditions[0].value", True)
    }


def test_a_nan_nested_in_a_struct_value_is_refused() -> None:
    r = route()
    c = cond("data.x", Op.OPERATOR_EQUALS)
    c.value.struct_value.update({"a": {"b": [float("inf")]}})
    r.filter.conditions.append(c)
    assert [p.field for p in check(r)] == ["route.filter.conditions[0].value"]


def test_an_undefined_operator_is_refused() -> None:
    r = route()
    r.filter.conditions.extend([cond("data.x", Op.OPERATOR_EQUALS, 1), cond("data.x", 99, "a")])
    assert [p.field for p in check(r)] == ["route.filter.conditions[1].operator"]


class _CrashingSubscriptions:
    """A subscription view whose matching fails: a bug meeting an event it never saw."""

    def match(self, event_type: str, tenant: str | None = None) -> list[object]:
        raise RuntimeError(f"cannot match {event_type}")


class _NoRoutes:
    def matching(self, event: Event) -> list[CompiledRoute]:
        return []

    def get(self, route_id: str) -> CompiledRoute | None:
        return None


async def test_a_target_that_crashes_is_dead_for_that_event_not_a_consumer_crash() -> None:
    from typing import Any, cast  # noqa: PLC0415

    from herald.services.dispatch.dispatcher import Dispatcher  # noqa: PLC0415

    dispatcher = Dispatcher(
        lambda: None, cast(Any, _NoRoutes()), cast(Any, _CrashingSubscriptions()), "deliveries"
    )
    consumed = fanout.decode(*_record(BinaryEvent(ATTRS, b'{"a": 1}', {})))
    [outcome] = await dispatcher.dispatch([(consumed, ["webhooks"])])
    assert outcome.dead == {
        "webhooks": "processing it failed: RuntimeError: cannot match message.created"
    }
    assert (outcome.failed, outcome.sent) == ({}, {})
