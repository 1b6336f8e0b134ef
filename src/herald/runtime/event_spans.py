"""The spans of an event's hops: ingest's ``event.publish`` (the event becomes a Kafka
record), dispatch's ``event.consume`` (the record becomes jobs) and webhooks'
``event.consume`` (a delivery attempt, its POST).

Each hop starts a span under the traceparent it was handed (the call's span, the
record's ``traceparent`` header, the delivery job's context), and what it sends on
carries the hop's own traceparent: one trace from the publisher's call to the POST.

While spans only carry ids (the default, :class:`~herald.runtime.tracing.IdsOnlyTracer`)
a hop makes no span object: its traceparent is the parent's trace id and flags with a
new span id, a malformed or missing parent starting a new trace (as the W3C propagator
and the tracer would). With ``OTEL_TRACES_EXPORTER=console`` a real span is started;
the caller sets its attributes (only then: :attr:`Hop.span` is None otherwise) and
ends it. With tracing off (``OTEL_SDK_DISABLED=true``) the parent passes on unchanged.
"""

from __future__ import annotations

import functools
import random
import re
from typing import NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from herald.runtime.tracing import IdsOnlyTracerProvider

PUBLISH = "event.publish"
CONSUME = "event.consume"
# Attribute names: OpenTelemetry's semantic conventions where they have one.
MESSAGING_SYSTEM = "messaging.system"
OPERATION = "messaging.operation.type"
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
EVENT_ID = "cloudevents.event_id"
EVENT_TYPE = "cloudevents.event_type"
EVENT_SOURCE = "cloudevents.event_source"
REQUEST_ID = "herald.request_id"  # the event's X-Request-Id (no convention names it)

# What the W3C trace context propagator accepts (its own pattern): a version other than
# ff, a trace id and a span id not all zeros, flags; nothing after them in version 00.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_V00 = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class Hop(NamedTuple):
    """A hop's traceparent (None only with tracing off and no parent) and its span when
    one is being recorded (to set attributes on and end)."""

    traceparent: str | None
    span: trace.Span | None


def start(name: str, parent: str | None, kind: SpanKind) -> Hop:
    """A hop named ``name`` under the traceparent ``parent`` (see the module docstring)."""
    provider = trace.get_tracer_provider()
    if type(provider) is IdsOnlyTracerProvider:
        return Hop(_child(parent), None)
    if isinstance(provider, TracerProvider):
        span = _tracer(provider).start_span(name, _context(parent), kind)
        return Hop(_format(span.get_span_context()), span if span.is_recording() else None)
    return Hop(parent, None)


def _child(parent: str | None) -> str:
    """The traceparent of a new span under ``parent``; of a new trace when it is not a
    valid traceparent."""
    span_id = random.getrandbits(64) or 1
    if parent is not None:
        # What Herald and most tracers write: only the span id changes (~0.5 µs).
        if _V00.fullmatch(parent) and parent[3:35] != _ZERO_TRACE and parent[36:52] != _ZERO_SPAN:
            return f"{parent[:36]}{span_id:016x}{parent[52:]}"
        if (found := _parse(parent)) is not None:
            return f"00-{found[0]}-{span_id:016x}-{found[2]}"
    return f"00-{random.getrandbits(128) or 1:032x}-{span_id:016x}-01"


def valid(value: str | None) -> str:
    """``value`` as a version-00 traceparent when it is a valid one (what W3C's parsing
    accepts, a future version's extra fields dropped), else "": what may be handed on
    as a call's ``traceparent`` metadata, whatever a record's header held."""
    found = _parse(value) if value is not None else None
    if found is None:
        return ""
    trace_id, span_id, flags = found
    return f"00-{trace_id}-{span_id}-{flags}"


def _parse(value: str) -> tuple[str, str, str] | None:
    """(trace id, span id, flags) of a valid traceparent, else None."""
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE:
        return None
    if span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, flags


def _context(parent: str | None) -> otel_context.Context:
    """A context holding ``parent`` as a remote span; an empty one (a new trace) when
    there is no valid parent: a consumer's span is never the child of whatever span
    happens to be current."""
    found = _parse(parent) if parent is not None else None
    if found is None:
        return otel_context.Context()
    trace_id, span_id, flags = found
    remote = SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16))
    )
    return trace.set_span_in_context(NonRecordingSpan(remote), otel_context.Context())


def _format(span: SpanContext) -> str | None:
    if not span.is_valid:
        return None
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-{span.trace_flags:02x}"


@functools.lru_cache(maxsize=4)
def _tracer(provider: TracerProvider) -> trace.Tracer:
    return provider.get_tracer("herald")
