"""OpenTelemetry: a tracer provider, and traceparent in and out of Kafka headers."""

from __future__ import annotations

import os

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor


def tracing_enabled() -> bool:
    """False when the standard ``OTEL_SDK_DISABLED=true`` is set: no spans, no
    interceptor (the instrumentation costs a measurable share of each call)."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def configure_tracing(service: str, console: bool = False) -> None:
    """Installs an SDK tracer provider so that spans carry real, propagated ids.

    Without one the API's no-op tracer drops the caller's trace context, and the
    trace of a Publish could not continue into its Kafka record. Export is off by
    default; ``console`` prints spans (debugging). The sampler follows the standard
    ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (default: parent-based,
    always on); ids propagate whether or not a span is sampled.
    """
    if isinstance(trace.get_tracer_provider(), TracerProvider) or not tracing_enabled():
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"herald-{service}"}))
    if console:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, if any."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")
