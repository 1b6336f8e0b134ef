"""From one consumed event to the records it owes its targets. Pure: no I/O.

Targets are named ``webhooks`` (one DeliveryJob per matching webhook, on the deliveries
topic, key = webhook id) and ``route:<id>`` (the route's NotificationJobs, key = the
event's own key, so one key's jobs stay in order). Every record carries the event's
context forward: its ``ce_*`` attributes, ``x-correlation-id`` and the like, with
``content-type: application/x-protobuf`` and ``schema-version``; its ``traceparent`` is
that of the event's ``event.consume`` span, a child of the record's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from herald.dispatch.v1 import notification_pb2
from herald.webhooks.v1 import delivery_pb2
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from herald.runtime import cloudevents_kafka as ce
from herald.runtime import event_spans, json_fast
from herald.runtime.ids import uuid5_text
from herald.runtime.kafka_batches import OutRecord
from herald.services.dispatch.routes import CompiledRoute, Event, JobSpec

Outgoing = OutRecord  # one record a target is owed

WEBHOOKS = "webhooks"
ROUTE_PREFIX = "route:"
PROTOBUF = b"application/x-protobuf"
JOB_SCHEMA_VERSION = b"1"
DELIVERY_NAMESPACE = uuid.UUID("a3e4c1d2-5b6f-4a7e-8c9d-0e1f2a3b4c5d")

Headers = list[tuple[str, bytes]]


class Consumed(NamedTuple):
    """A decoded event, its key, and the headers every record made from it carries."""

    binary: ce.BinaryEvent
    event: Event
    key: bytes
    headers: Headers
    time: timestamp_pb2.Timestamp | None  # the event's time, parsed once for all its jobs
    traceparent: str | None = None  # of the event.consume span: every job carries it
    span: trace.Span | None = None  # that span, while spans are recorded


TRACEPARENT = "traceparent"
_CONTEXT = tuple(n for n in ce.CONTEXT_HEADERS if n != TRACEPARENT)  # + the span's own
_FORWARDED = frozenset(_CONTEXT)
_JOB_HEADERS: Headers = [(ce.CONTENT_TYPE, PROTOBUF), (ce.SCHEMA_VERSION, JOB_SCHEMA_VERSION)]


def decode(
    headers: Sequence[tuple[str, bytes]],
    key: bytes | None,
    value: bytes | None,
    topic: str = "",
) -> Consumed:
    """The event in a herald.events record (of ``topic``); ValueError saying why it is
    not one. Starts its event.consume span (ended by whoever dispatches it).

    Every record made from it carries the event's context: its ``ce_*`` headers and
    transport context as they came (no re-encoding), the span's traceparent, then the
    job's content type and schema version.
    """
    binary, kept = ce.decode_keeping(headers, value, _FORWARDED)
    data: Any = None
    if binary.data:
        try:
            data = json_fast.loads(binary.data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            content_type = binary.attributes.get("datacontenttype", "application/json")
            if "json" in content_type:
                raise ValueError(f"data is not valid JSON ({content_type})") from None
    hop = event_spans.start(event_spans.CONSUME, binary.extra.get(TRACEPARENT), SpanKind.CONSUMER)
    if hop.traceparent:
        kept.append((TRACEPARENT, hop.traceparent.encode()))
    if hop.span is not None:
        _describe(hop.span, binary, topic)
    kept += _JOB_HEADERS
    return Consumed(
        binary,
        Event(binary.attributes, data),
        key or b"",
        kept,
        _event_time(binary.attributes.get("time")),
        hop.traceparent,
        hop.span,
    )


def _describe(span: trace.Span, binary: ce.BinaryEvent, topic: str) -> None:
    """The event.consume span's attributes."""
    attrs = binary.attributes
    span.set_attributes(
        {
            event_spans.MESSAGING_SYSTEM: "kafka",
            event_spans.OPERATION: "process",
            event_spans.DESTINATION: topic,
            event_spans.MESSAGE_ID: attrs["id"],
            event_spans.EVENT_ID: attrs["id"],
            event_spans.EVENT_TYPE: attrs["type"],
            event_spans.EVENT_SOURCE: attrs["source"],
        }
    )
    if request_id := binary.extra.get("x-request-id"):
        span.set_attribute(event_spans.REQUEST_ID, request_id)


def end_span(consumed: Consumed, jobs: int, failed: Iterable[str], dead: Iterable[str]) -> None:
    """Ends the event's event.consume span (while spans are recorded): how many jobs
    were sent, which targets failed for now or for good."""
    span = consumed.span
    if span is None:
        return
    span.set_attribute("herald.jobs", jobs)
    if failed := sorted(failed):
        span.set_attribute("herald.targets.failed", failed)
    if dead := sorted(dead):
        span.set_attribute("herald.targets.dead", dead)
        span.set_status(trace.Status(trace.StatusCode.ERROR, "dead-lettered: " + ", ".join(dead)))
    span.end()


def delivery_job_id(consumed: Consumed, webhook_id: str) -> str:
    """Deterministic per (event, webhook)."""
    attrs = consumed.binary.attributes
    return uuid5_text(DELIVERY_NAMESPACE, f"{attrs['source']}\n{attrs['id']}\n{webhook_id}")


def deliveries(consumed: Consumed, webhook_ids: Iterable[str], topic: str) -> list[Outgoing]:
    """One DeliveryJob per webhook."""
    attrs = consumed.binary.attributes
    headers = consumed.headers
    context = {n: consumed.binary.extra[n] for n in _CONTEXT if n in consumed.binary.extra}
    if consumed.traceparent:
        context[TRACEPARENT] = consumed.traceparent
    out = []
    for webhook_id in webhook_ids:
        job = delivery_pb2.DeliveryJob(
            job_id=delivery_job_id(consumed, webhook_id),
            webhook_id=webhook_id,
            event_id=attrs["id"],
            event_source=attrs["source"],
            event_type=attrs["type"],
            data=consumed.binary.data,
            context=context,
        )
        if consumed.time is not None:
            job.event_time.CopyFrom(consumed.time)
        out.append(Outgoing(topic, webhook_id.encode(), job.SerializeToString(), headers))
    return out


def notifications(consumed: Consumed, route: CompiledRoute) -> list[Outgoing]:
    """The route's NotificationJobs; raises TargetError when the data cannot make them."""
    specs = route.jobs(consumed.event)
    return [
        Outgoing(
            spec.topic, consumed.key, _job(consumed, spec).SerializeToString(), consumed.headers
        )
        for spec in specs
    ]


def _job(consumed: Consumed, spec: JobSpec) -> notification_pb2.NotificationJob:
    attrs = consumed.binary.attributes
    job = notification_pb2.NotificationJob(
        job_id=spec.job_id,
        event_id=attrs["id"],
        event_source=attrs["source"],
        event_type=attrs["type"],
        channel=spec.channel,
        template_code=spec.template_code,
        route_id=spec.route_id,
    )
    if consumed.time is not None:
        job.event_time.CopyFrom(consumed.time)
    if spec.recipient:
        job.recipient = spec.recipient
    elif spec.segment is not None:
        # Set even when empty ({} is an audience too, not a missing one).
        job.segment.SetInParent()
        job.segment.update(spec.segment)  # Struct.update: far cheaper than ParseDict
    data = consumed.event.data
    if isinstance(data, dict):
        job.payload.struct_value.update(data)
    elif data is not None:
        json_format.ParseDict(data, job.payload)
    else:
        job.payload.null_value = struct_pb2.NULL_VALUE
    return job


def _event_time(text: str | None) -> timestamp_pb2.Timestamp | None:
    """The event's RFC 3339 ``time`` as a Timestamp. ``datetime.fromisoformat`` (C)
    rather than ``Timestamp.FromJsonString`` (strptime: ~20 µs, most of a job's cost)."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None  # ingest validated it; a foreign producer's odd time is left out
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = int(when.timestamp() // 1)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=when.microsecond * 1000)
