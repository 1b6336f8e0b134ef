"""A delivery attempt's ``event.consume`` span: a child of the delivery job's
traceparent (dispatch's event.consume span); the POST carries its traceparent."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from herald.runtime import event_spans

TRACEPARENT = "traceparent"


def start(row: asyncpg.Record, hook: asyncpg.Record, context: Mapping[str, str]) -> event_spans.Hop:
    """The attempt's span under the job's traceparent (in ``context``), with what is
    known before the POST: the event, the webhook, the delivery, the attempt's number."""
    hop = event_spans.start(event_spans.CONSUME, context.get(TRACEPARENT), SpanKind.CONSUMER)
    if hop.span is not None:
        hop.span.set_attributes(
            {
                event_spans.EVENT_ID: row["event_id"],
                event_spans.EVENT_TYPE: row["event_type"],
                "herald.webhook.id": str(hook["webhook_id"]),
                "herald.delivery.id": str(row["id"]),
                "herald.delivery.attempt": row["attempts"] + 1,
                "http.request.method": "POST",
            }
        )
        if request_id := context.get("x-request-id"):
            hop.span.set_attribute(event_spans.REQUEST_ID, request_id)
    return hop


def end(span: trace.Span, status_code: int | None, error: str | None, outcome: str) -> None:
    """Ends the span with the HTTP status code (or the error) and the outcome."""
    if status_code is not None:
        span.set_attribute("http.response.status_code", status_code)
    if error:
        span.set_attribute("error.type", error)
    span.set_attribute("herald.outcome", outcome)
    if outcome != "delivered":
        span.set_status(trace.Status(trace.StatusCode.ERROR, error or f"HTTP {status_code}"))
    span.end()
