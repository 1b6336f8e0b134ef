"""OpenTelemetry: a tracer provider, and traceparent in and out of Kafka headers."""

from __future__ import annotations

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor


def configure_tracing(service: str, console: bool = False) -> None:
    """Installs an SDK tracer provider so that spans carry real, propagated ids.

    Without one the API's no-op tracer drops the caller's trace context, and the
    trace of a Publish could not continue into its Kafka record. Export is off by
    default; ``console`` prints spans (debugging).
    """
    if isinstance(trace.get_tracer_provider(), TracerProvider):
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
