"""Seed 000's traces, with ``OTEL_TRACES_EXPORTER=console``: ingest, dispatch and
webhooks as processes print their spans, and an event's ``event.publish`` and
``event.consume`` spans join into one trace, from the publisher's call to the POST.
(The tracer provider is set once per process: this needs processes of their own.)"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from herald.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc

from tests.acceptance.conftest import ServiceProcess, free_port
from tests.conftest import Infra
from tests.integration.conftest import ACME_KEY, INTERNAL_KEY
from tests.receiver import Receiver

pytestmark = pytest.mark.acceptance
CALLER_TRACE = uuid.uuid4().hex
CALLER_SPAN = uuid.uuid4().hex[:16]


def printed_spans(log: Path) -> list[dict[str, Any]]:
    """The spans the console exporter printed (indented JSON) among the log lines."""
    spans, block = [], []
    for line in log.read_text().splitlines():
        if line == "{":
            block = [line]
        elif block:
            block.append(line)
            if line == "}":
                spans.append(json.loads("\n".join(block)))
                block = []
    return spans


def one(spans: list[dict[str, Any]], name: str, **attributes: object) -> dict[str, Any]:
    found = [
        s
        for s in spans
        if s["name"] == name and all(s["attributes"].get(k) == v for k, v in attributes.items())
    ]
    assert len(found) == 1, (name, attributes, spans)
    return found[0]


def ids(span: dict[str, Any]) -> tuple[str, str]:
    """(trace id, span id) as a traceparent writes them."""
    return span["context"]["trace_id"].removeprefix("0x"), span["context"]["span_id"][2:]


async def test_an_events_spans_join_from_the_call_to_the_post(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    ingest_addr, hooks_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    common = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
        "OTEL_TRACES_EXPORTER": "console",
        "LOG_LEVEL": "WARNING",
        "DELIVERIES_TOPIC": f"herald.deliveries.{suffix}",
        "DLQ_TOPIC": f"herald.dlq.{suffix}",
        "INGEST_ADDR": ingest_addr,
        "WEBHOOKS_ADDR": hooks_addr,
        "WEBHOOKS_INTERNAL_KEY": INTERNAL_KEY,
    }
    ingest = ServiceProcess(
        "ingest",
        {**common, "INGEST_METRICS_ADDR": f"127.0.0.1:{free_port()}", "EVENTS_TOPIC": topic},
        tmp_path / "ingest.log",
    )
    webhooks = ServiceProcess(
        "webhooks",
        {
            **common,
            "WEBHOOKS_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "WEBHOOKS_API_KEYS": f"{ACME_KEY}=acme",
            "WEBHOOKS_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "DELIVERIES_GROUP": f"w{suffix}",
            "WEBHOOKS_ALLOWED_NETWORKS": "127.0.0.0/8",
        },
        tmp_path / "webhooks.log",
    )
    dispatch = ServiceProcess(
        "dispatch",
        {
            **common,
            "DISPATCH_ADDR": f"127.0.0.1:{free_port()}",
            "DISPATCH_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "EVENTS_TOPIC": topic,
            "DISPATCH_GROUP": f"d{suffix}",
            "BUILTIN_ROUTES": "false",
        },
        tmp_path / "dispatch.log",
    )
    services = [ingest, webhooks, dispatch]
    event_id = str(uuid.uuid4())
    try:
        for service in services:
            await asyncio.to_thread(service.start)
        async with Receiver() as receiver:
            async with grpc.aio.insecure_channel(hooks_addr) as channel:
                created = await webhooks_pb2_grpc.WebhookServiceStub(channel).CreateWebhook(
                    webhooks_pb2.CreateWebhookRequest(
                        webhook=webhooks_pb2.Webhook(
                            name="traced", url=receiver.url(), event_types=["message.created"]
                        )
                    ),
                    metadata=(("authorization", f"Bearer {ACME_KEY}"),),
                )
            await asyncio.sleep(1.5)  # dispatch has seen the webhook
            doc = {
                "specversion": "1.0",
                "id": event_id,
                "source": "urn:traced",
                "type": "message.created",
                "time": "2026-11-22T10:00:00Z",
                "datacontenttype": "application/json",
                "data": {"id": "m", "content": "c"},
            }
            async with grpc.aio.insecure_channel(ingest_addr) as channel:
                await ingest_pb2_grpc.IngestServiceStub(channel).Publish(
                    ingest_pb2.PublishRequest(json=json.dumps(doc)),
                    metadata=(
                        ("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),
                        ("x-request-id", "req-spans"),
                    ),
                )
            [post] = await receiver.wait_for(1, timeout=30)
            await asyncio.sleep(0.5)  # the attempt's span ends once its outcome is known
    finally:
        for service in services:
            if service.proc is not None and service.proc.poll() is None:
                await asyncio.to_thread(service.terminate)

    call = one(printed_spans(ingest.log_path), "/herald.ingest.v1.IngestService/Publish")
    publish = one(printed_spans(ingest.log_path), "event.publish")
    consume = one(printed_spans(dispatch.log_path), "event.consume")
    attempt = one(printed_spans(webhooks.log_path), "event.consume")
    assert call["parent_id"] == f"0x{CALLER_SPAN}"
    assert publish["parent_id"] == call["context"]["span_id"], "a child of the call's span"
    assert consume["parent_id"] == publish["context"]["span_id"], "joined by the record"
    assert attempt["parent_id"] == consume["context"]["span_id"], "joined by the job"
    for span in (call, publish, consume, attempt):
        assert ids(span)[0] == CALLER_TRACE, "one trace, the caller's"
    assert post.headers["traceparent"] == "00-{}-{}-01".format(*ids(attempt))
    assert post.headers["x-request-id"] == "req-spans"

    # What ingest's event.publish and dispatch's event.consume both say of the event.
    the_event = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.message.id": event_id,
        "cloudevents.event_id": event_id,
        "cloudevents.event_type": "message.created",
        "cloudevents.event_source": "urn:traced",
        "herald.request_id": "req-spans",
    }
    assert publish["kind"] == "SpanKind.PRODUCER"
    assert publish["attributes"] == {
        **the_event,
        "messaging.operation.type": "publish",
        "herald.outcome": "stored",
    }
    assert consume["kind"] == "SpanKind.CONSUMER"
    assert consume["attributes"] == {
        **the_event,
        "messaging.operation.type": "process",
        "herald.jobs": 1,
    }
    assert attempt["attributes"] == {
        "cloudevents.event_id": event_id,
        "cloudevents.event_type": "message.created",
        "herald.webhook.id": created.webhook.id,
        "herald.delivery.id": post.headers["x-herald-delivery"],
        "herald.delivery.attempt": 1,
        "http.request.method": "POST",
        "herald.request_id": "req-spans",
        "http.response.status_code": 200,
        "herald.outcome": "delivered",
    }
