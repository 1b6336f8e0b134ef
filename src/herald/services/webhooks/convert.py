"""Webhook messages ↔ the domain. Unset proto fields take the seed's defaults."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.duration_pb2 import Duration
from herald.webhooks.v1 import webhooks_pb2

from herald.runtime.errors import FieldViolation
from herald.runtime.timestamps import timestamp
from herald.services.webhooks.model import MAX_RETRIES, RateLimit, RetryPolicy, WebhookSpec
from herald.services.webhooks.store import StoredWebhook


def spec_of(message: webhooks_pb2.Webhook) -> WebhookSpec:
    """The spec a request describes (defaults where it says nothing)."""
    policy = RetryPolicy()
    if message.HasField("retry_policy"):
        given = message.retry_policy
        policy = RetryPolicy(
            max_retries=given.max_retries,
            initial_delay=_seconds(given.initial_delay)
            if given.HasField("initial_delay")
            else policy.initial_delay,
            backoff_multiplier=given.backoff_multiplier or policy.backoff_multiplier,
            max_delay=_seconds(given.max_delay)
            if given.HasField("max_delay")
            else policy.max_delay,
            delays=tuple(_seconds(d) for d in given.delays),
            retry_statuses=tuple(given.retry_statuses),
        )
        if policy.delays and not policy.max_retries:  # a fixed schedule: one retry a delay
            policy = replace(policy, max_retries=len(policy.delays))
    return WebhookSpec(
        name=message.name,
        url=message.url,
        event_types=tuple(message.event_types),
        active=message.active if message.HasField("active") else True,
        retry_policy=policy,
        rate_limit=RateLimit(message.rate_limit.per_second, message.rate_limit.per_minute),
        headers=dict(message.headers),
        description=message.description,
        metadata=dict(message.metadata),
    )


def malformed_durations(message: webhooks_pb2.Webhook) -> list[FieldViolation]:
    """The request's Durations that protobuf itself defines invalid (see
    :func:`duration_problems`), which ``spec_of`` would otherwise read as some number."""
    problems: list[FieldViolation] = []
    if message.HasField("retry_policy"):
        for name in ("initial_delay", "max_delay"):
            if message.retry_policy.HasField(name):
                value = getattr(message.retry_policy, name)
                problems += duration_problems(value, f"webhook.retry_policy.{name}")
        # Beyond the most a policy may hold, the count alone is the problem (model.check).
        for i, value in enumerate(message.retry_policy.delays[: MAX_RETRIES + 1]):
            problems += duration_problems(value, f"webhook.retry_policy.delays[{i}]")
    return problems


MAX_DURATION_SECONDS = 315_576_000_000  # about 10,000 years: protobuf's own bound
MAX_NANOS = 999_999_999


def duration_problems(value: Duration, field: str) -> list[FieldViolation]:
    """What makes ``value`` an invalid Duration by protobuf's definition: nanos beyond
    ±999,999,999, seconds and nanos of opposite signs, seconds beyond ±10,000 years."""
    if not -MAX_NANOS <= value.nanos <= MAX_NANOS:
        problem = f"nanos between -{MAX_NANOS} and {MAX_NANOS}"
    elif value.seconds * value.nanos < 0:
        problem = "seconds and nanos must not have opposite signs"
    elif not -MAX_DURATION_SECONDS <= value.seconds <= MAX_DURATION_SECONDS:
        problem = f"seconds between -{MAX_DURATION_SECONDS} and {MAX_DURATION_SECONDS}"
    else:
        return []
    return [FieldViolation(field, f"not a valid duration: {problem}")]


def to_proto(stored: StoredWebhook) -> webhooks_pb2.Webhook:
    """The Webhook message (never with its secret)."""
    spec = stored.spec
    message = webhooks_pb2.Webhook(
        id=stored.id,
        name=spec.name,
        url=spec.url,
        event_types=list(spec.event_types),
        active=spec.active,
        retry_policy=webhooks_pb2.RetryPolicy(
            max_retries=spec.retry_policy.max_retries,
            initial_delay=_duration(spec.retry_policy.initial_delay),
            backoff_multiplier=spec.retry_policy.backoff_multiplier,
            max_delay=_duration(spec.retry_policy.max_delay),
            delays=[_duration(d) for d in spec.retry_policy.delays],
            retry_statuses=spec.retry_policy.retry_statuses,
        ),
        rate_limit=webhooks_pb2.RateLimit(
            per_second=spec.rate_limit.per_second, per_minute=spec.rate_limit.per_minute
        ),
        headers=dict(spec.headers),
        description=spec.description,
        metadata=dict(spec.metadata),
        create_time=timestamp(stored.created_at),
        update_time=timestamp(stored.updated_at),
        secret_create_time=timestamp(stored.secret_created_at),
    )
    if stored.last_delivery_at is not None:
        message.last_delivery_time.CopyFrom(timestamp(stored.last_delivery_at))
    if stored.slow_since is not None:
        message.slow_since.CopyFrom(timestamp(stored.slow_since))
    return message


_STATUS = {
    "pending": webhooks_pb2.DELIVERY_STATUS_PENDING,
    "delivered": webhooks_pb2.DELIVERY_STATUS_DELIVERED,
    "failed": webhooks_pb2.DELIVERY_STATUS_FAILED,
}


def delivery_to_proto(row: Any) -> webhooks_pb2.Delivery:
    """A delivery log entry from a deliveries row."""
    message = webhooks_pb2.Delivery(
        id=str(row["id"]),
        webhook_id=str(row["webhook_id"]),
        event_id=row["event_id"],
        event_type=row["event_type"],
        status=_STATUS.get(row["status"], webhooks_pb2.DELIVERY_STATUS_UNSPECIFIED),
        attempts=row["attempts"],
        response_status_code=row["last_status_code"] or 0,
        response_body=row["last_response"] or "",
        last_error=row["last_error"] or "",
        create_time=timestamp(row["created_at"]),
    )
    if row["last_response_ms"] is not None:
        message.response_time.FromMilliseconds(row["last_response_ms"])
    if row["delivered_at"] is not None:
        message.deliver_time.CopyFrom(timestamp(row["delivered_at"]))
    if row["status"] == "pending" and row["next_attempt_at"] is not None:
        due = row["next_attempt_at"]
        if row["claimed"]:  # its next_attempt_at is the claim's lease: the attempt is now
            due = min(due, datetime.now(UTC))
        message.next_attempt_time.CopyFrom(timestamp(due))
    return message


MAX_TEST_DATA_BYTES = 65_536
_EXACT = 2**53  # doubles up to this are whole numbers exactly


class _NotJSON(ValueError):
    """A Struct value JSON cannot hold."""


def data_of_test_event(
    request: webhooks_pb2.SendTestEventRequest,
) -> tuple[dict[str, Any] | None, list[FieldViolation]]:
    """The data a SendTestEvent request gives the test event (None when it gives none),
    and what is wrong with it."""
    if not request.HasField("data"):
        return None, []
    try:
        data = _object(request.data)
    except _NotJSON as exc:
        return None, [FieldViolation("data", str(exc))]
    size = len(json.dumps(data))  # as the body will carry it
    if size > MAX_TEST_DATA_BYTES:
        return None, [
            FieldViolation("data", f"at most {MAX_TEST_DATA_BYTES:,} bytes as JSON, not {size:,}")
        ]
    return data, []


def _object(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _json(value) for key, value in struct.fields.items()}


def _json(value: struct_pb2.Value) -> Any:
    """``value`` as plain JSON data. A Struct's numbers are doubles: a whole one is
    written as the integer it stands for (``3``, not ``3.0``)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise _NotJSON("numbers must be finite (no NaN or Infinity)")
        return int(number) if number.is_integer() and abs(number) <= _EXACT else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _object(value.struct_value)
    if kind == "list_value":
        return [_json(v) for v in value.list_value.values]
    return None  # null_value, or a Value with nothing set


def _seconds(duration: Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _duration(seconds: float) -> Duration:
    out = Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out
