"""The ids-only tracer (no exporter configured): spans carry ids, record nothing."""

from __future__ import annotations

import pytest
from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan

from herald.runtime import event_spans
from herald.runtime.tracing import (
    IdsOnlyTracer,
    current_traceparent,
    traces_exporter,
    tracing_enabled,
)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
# Traceparents valid and not, as the W3C propagator judges them.
PARENTS = [
    f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
    f"00-{CALLER_TRACE}-{CALLER_SPAN}-00",
    f" 00-{CALLER_TRACE}-{CALLER_SPAN}-01 ",
    f"01-{CALLER_TRACE}-{CALLER_SPAN}-01-later-fields",
    f"ff-{CALLER_TRACE}-{CALLER_SPAN}-01",
    f"00-{CALLER_TRACE}-{CALLER_SPAN}-01-extra",
    f"00-{'0' * 32}-{CALLER_SPAN}-01",
    f"00-{CALLER_TRACE}-{'0' * 16}-01",
    f"00-{CALLER_TRACE.upper()}-{CALLER_SPAN}-01",
    "00-abc-def-01",
    "",
]


def _traceparent_inside(tracer: IdsOnlyTracer, carrier: dict[str, str]) -> str:
    """The traceparent a call sees inside a span started under ``carrier``'s context."""
    with tracer.start_as_current_span("call", context=propagate.extract(carrier)):
        out: dict[str, str] = {}
        propagate.inject(out)
        return out["traceparent"]


def test_a_call_continues_the_callers_trace_with_a_span_of_its_own() -> None:
    tracer = IdsOnlyTracer()
    for flags in ("01", "00"):  # the caller's sampling decision is kept either way
        parent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}"
        version, trace_id, span_id, kept = _traceparent_inside(
            tracer, {"traceparent": parent}
        ).split("-")
        assert (version, trace_id, kept) == ("00", CALLER_TRACE, flags)
        assert span_id != CALLER_SPAN
        assert len(span_id) == 16
        assert int(span_id, 16) != 0


def test_a_call_without_a_trace_starts_a_sampled_one() -> None:
    tracer = IdsOnlyTracer()
    first = _traceparent_inside(tracer, {}).split("-")
    second = _traceparent_inside(tracer, {}).split("-")
    assert first[3] == "01"
    assert first[1] != second[1], "each root call is a trace of its own"
    assert int(first[1], 16) != 0


def test_spans_record_nothing_and_the_context_is_restored() -> None:
    tracer = IdsOnlyTracer()
    before = trace.get_current_span()
    with tracer.start_as_current_span("call") as span:
        assert isinstance(span, NonRecordingSpan)
        assert not span.is_recording()
        span.set_attribute("rpc.method", "Publish")  # accepted, and dropped
        assert trace.get_current_span() is span
    assert trace.get_current_span() is before


def test_only_known_exporters_are_accepted() -> None:
    assert traces_exporter({}) == "none"
    assert traces_exporter({"OTEL_TRACES_EXPORTER": " Console "}) == "console"
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER='otlp'"):
        traces_exporter({"OTEL_TRACES_EXPORTER": "otlp"})


def test_otel_sdk_disabled_is_true_or_false_and_nothing_else() -> None:
    assert tracing_enabled({})
    assert tracing_enabled({"OTEL_SDK_DISABLED": "False"})
    assert not tracing_enabled({"OTEL_SDK_DISABLED": " TRUE "})
    for wrong in ("maybe", "1", "yes"):  # the SDK would take each for false, silently
        with pytest.raises(ValueError, match=f"OTEL_SDK_DISABLED='{wrong}'"):
            tracing_enabled({"OTEL_SDK_DISABLED": wrong})


def test_the_current_traceparent_is_what_the_w3c_propagator_writes() -> None:
    tracer = IdsOnlyTracer()
    assert current_traceparent() is None
    for flags in ("01", "00"):
        carrier = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}"}
        with tracer.start_as_current_span("call", context=propagate.extract(carrier)):
            written: dict[str, str] = {}
            propagate.inject(written)
            assert current_traceparent() == written["traceparent"]


@pytest.mark.parametrize("parent", PARENTS)
def test_an_event_hop_continues_a_parent_as_the_w3c_propagator_and_tracer_would(
    parent: str,
) -> None:
    """event_spans' lean hop (no span object) against the propagator's extract and the
    ids-only tracer: same trace id and flags, a new span id; a new trace when the
    propagator refuses the parent."""
    expected = _traceparent_inside(IdsOnlyTracer(), {"traceparent": parent}).split("-")
    hop = event_spans._child(parent).split("-")
    assert len(hop[1]) == 32
    assert len(hop[2]) == 16
    assert hop[2] not in (expected[2], CALLER_SPAN)
    if expected[1] == CALLER_TRACE:
        assert (hop[0], hop[1], hop[3]) == (expected[0], expected[1], expected[3])
    else:
        assert hop[1] not in (CALLER_TRACE, "0" * 32)
        assert (hop[0], hop[3]) == ("00", "01")


@pytest.mark.parametrize("parent", PARENTS)
def test_a_traceparent_handed_on_is_one_the_w3c_propagator_takes_as_it_is(parent: str) -> None:
    """event_spans.valid (an alert's traceparent, from a record's header): the parent in
    version-00 form when the propagator extracts it, the same trace, span and flags;
    nothing when it refuses it (gRPC metadata cannot carry just anything)."""
    extracted = trace.get_current_span(propagate.extract({"traceparent": parent}))
    valid = event_spans.valid(parent)
    if not extracted.get_span_context().is_valid:
        assert valid == ""
        return
    again = trace.get_current_span(propagate.extract({"traceparent": valid}))
    assert again.get_span_context() == extracted.get_span_context()
    assert valid.startswith("00-")
    assert len(valid) == 55
