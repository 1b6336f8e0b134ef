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

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.instrumentation.grpc._aio_server import OpenTelemetryAioServerInterceptor
from opentelemetry.instrumentation.grpc._server import _wrap_rpc_behavior
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from herald.runtime.rpc_types import Continuation, MethodHandler, WrappedHandlers

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
    """The W3C traceparent of the active span, if any (what the W3C trace context
    propagator's inject writes, without a carrier and the other propagators)."""
    span = trace.get_current_span().get_span_context()
    if not span.is_valid:
        return None
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-{span.trace_flags:02x}"


def server_interceptor() -> grpc.aio.ServerInterceptor:
    """The OpenTelemetry gRPC instrumentation's server interceptor; while spans only carry
    ids (:class:`IdsOnlyTracer`), its lean variant (:class:`IdsOnlyServerInterceptor`)."""
    interceptor = aio_server_interceptor()  # type: ignore[no-untyped-call]
    if isinstance(interceptor._tracer, IdsOnlyTracer):
        return IdsOnlyServerInterceptor(interceptor._tracer)
    return interceptor  # type: ignore[no-any-return]


class _Method:
    """What the instrumentation reads of a call's details: its method."""

    __slots__ = ("method",)

    def __init__(self, method: str) -> None:
        self.method = method


class IdsOnlyServerInterceptor(OpenTelemetryAioServerInterceptor):
    """The instrumentation's interceptor, minus work whose result nobody reads.

    Measured on this machine against an empty Publish (~140 µs of server CPU a call),
    the instrumentation added ~85 µs a call: span attributes (the peer parsed three
    times, the metadata copied twice), three generator context managers and a proxy
    around the servicer context, all for a span that records nothing. Here a unary
    call (every Herald RPC) still gets a span of its own, current while the handler
    runs, under the caller's trace when the call carries one (traceparent,
    tracestate, baggage); suppressed instrumentation is still honoured; a method's
    wrapped handler is made once, not per call. ~30 µs a call remain. Streaming calls
    go through the instrumentation's own code.

    It leans on the instrumentation's internals (``_tracer``, ``_wrap_rpc_behavior``,
    ``_intercept_aio_server_stream``; the version is pinned in requirements.lock):
    tests/integration/test_rpc_tracing.py fails on a version that changes them."""

    def __init__(self, tracer: IdsOnlyTracer) -> None:
        super().__init__(tracer)  # type: ignore[no-untyped-call]
        self._handlers = WrappedHandlers()
        self._fields = frozenset(propagate.get_global_textmap().fields)

    async def intercept_service(  # type: ignore[override]  # the aio signature
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> MethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or not is_instrumentation_enabled():
            return handler
        method = handler_call_details.method
        return self._handlers.wrap(method, handler, lambda: self._wrap(method, handler))

    def _wrap(self, method: str, handler: MethodHandler) -> MethodHandler:
        details = _Method(method)

        def telemetry(behavior: Any, _request_streaming: bool, response_streaming: bool) -> Any:
            if response_streaming:
                return self._intercept_aio_server_stream(behavior, details)  # type: ignore[no-untyped-call]
            return self._intercept_aio_server_unary(behavior, details)

        return _wrap_rpc_behavior(handler, telemetry)  # type: ignore[no-any-return, no-untyped-call]

    def _intercept_aio_server_unary(self, behavior: Any, details: Any) -> Any:
        """The handler, run with a span of its own as the current span (under the
        caller's trace when it sent one). The servicer context is not wrapped: the
        wrapper only copies status codes onto the span, which records nothing."""
        tracer, fields, method = self._tracer, self._fields, details.method

        async def unary(request: Any, context: Any) -> Any:
            metadata = context.invocation_metadata() or ()
            carrier = {md.key: md.value for md in metadata if md.key in fields}
            parent = propagate.extract(carrier) if carrier else None
            span = tracer.start_span(method, parent)
            token = otel_context.attach(trace.set_span_in_context(span, parent))
            try:
                return await behavior(request, context)
            finally:
                otel_context.detach(token)
                span.end()

        return unary
