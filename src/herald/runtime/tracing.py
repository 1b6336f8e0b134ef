"""OpenTelemetry: a tracer provider, and traceparent in and out of Kafka headers.

Herald exports no spans unless ``OTEL_TRACES_EXPORTER=console`` (spans printed, for
debugging). Without an exporter a recorded span is work nobody reads (in ingest's
unary Publish it was ~10% of the process's CPU), so the tracer installed then only
carries ids: every span gets a span id of its own under the caller's trace (or a new
trace), the caller's sampled flag is kept, and the trace of a call continues into the
Kafka records it causes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

EXPORTERS = ("none", "console")


def tracing_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """False when the standard ``OTEL_SDK_DISABLED=true`` is set: no spans, no
    interceptor (the instrumentation costs a measurable share of each call).
    ValueError naming the variable for anything but true, false or empty (the SDK
    would take ``maybe`` or ``1`` for false without a word)."""
    value = environ.get("OTEL_SDK_DISABLED", "").strip().lower()
    if value not in ("", "true", "false"):
        raise ValueError(f"OTEL_SDK_DISABLED={value!r} is not supported: use true or false")
    return value != "true"


def traces_exporter(environ: Mapping[str, str] = os.environ) -> str:
    """The standard ``OTEL_TRACES_EXPORTER``: ``none`` (the default) or ``console``;
    ValueError naming the variable for anything else (no other exporter is installed)."""
    value = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "none"
    if value not in EXPORTERS:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={value!r} is not supported: use one of {', '.join(EXPORTERS)}"
        )
    return value


class IdsOnlyTracer(trace.Tracer):
    """Spans that record nothing and carry ids (see the module docstring): the child of
    a valid parent keeps its trace id, flags and state; a root starts a sampled trace,
    as the SDK's default sampler (parent-based, always on) would."""

    def __init__(self) -> None:
        self._ids = RandomIdGenerator()

    def start_span(
        self,
        name: str,
        context: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        span_id = self._ids.generate_span_id()
        if parent.is_valid:
            return NonRecordingSpan(
                SpanContext(
                    parent.trace_id,
                    span_id,
                    is_remote=False,
                    trace_flags=parent.trace_flags,
                    trace_state=parent.trace_state,
                )
            )
        return NonRecordingSpan(
            SpanContext(
                self._ids.generate_trace_id(),
                span_id,
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
        )

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]  # the base's is a private CM type
        self,
        name: str,
        context: Any = None,
        *args: Any,
        end_on_exit: bool = True,
        **kwargs: Any,
    ) -> Iterator[trace.Span]:
        with trace.use_span(self.start_span(name, context), end_on_exit=end_on_exit) as span:
            yield span


class IdsOnlyTracerProvider(trace.TracerProvider):
    """Hands out :class:`IdsOnlyTracer`."""

    def __init__(self) -> None:
        self._tracer = IdsOnlyTracer()

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return self._tracer


def configure_tracing(service: str) -> None:
    """Installs the tracer provider (once per process).

    With ``OTEL_TRACES_EXPORTER=console`` the SDK's provider records spans and prints
    them; its sampler follows the standard ``OTEL_TRACES_SAMPLER`` /
    ``OTEL_TRACES_SAMPLER_ARG``. Otherwise :class:`IdsOnlyTracerProvider`. Either way a
    real provider is needed: the API's no-op tracer would drop the caller's trace
    context, and the trace of a Publish could not continue into its Kafka record.
    """
    try:  # as load_settings does: a message naming the variable
        if not tracing_enabled():
            return
        exporter = traces_exporter()
    except ValueError as exc:
        sys.stderr.write(f"invalid configuration: {exc}\n")
        raise SystemExit(2) from None
    if isinstance(trace.get_tracer_provider(), TracerProvider | IdsOnlyTracerProvider):
        return
    if exporter == "console":
        provider = TracerProvider(resource=Resource.create({"service.name": f"herald-{service}"}))
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(provider)
    else:
        trace.set_tracer_provider(IdsOnlyTracerProvider())


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, if any."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")
