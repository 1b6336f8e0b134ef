"""Webhook messages ↔ the domain. Unset proto fields take the seed's defaults."""

from __future__ import annotations

from typing import Any

from google.protobuf.duration_pb2 import Duration
from herald.webhooks.v1 import webhooks_pb2

from herald.runtime.errors import FieldViolation
from herald.runtime.timestamps import timestamp
from herald.services.webhooks.model import RateLimit, RetryPolicy, WebhookSpec
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
        )
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
        ),
        rate_limit=webhooks_pb2.RateLimit(
            per_second=spec.rate_limit.per_second, per_minute=spec.rate_limit.per_minute
        ),
        headers=dict(spec.headers),
        description=spec.description,
        metadata=dict(spec.metadata),
        create_time=timestamp(stored.created_at),
        update_time=timestamp(stored.updated_at),
    )
    if stored.last_delivery_at is not None:
        message.last_delivery_time.CopyFrom(timestamp(stored.last_delivery_at))
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
        message.next_attempt_time.CopyFrom(timestamp(row["next_attempt_at"]))
    return message


def _seconds(duration: Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _duration(seconds: float) -> Duration:
    out = Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out
