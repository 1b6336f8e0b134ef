"""Ingest, dispatch and webhooks as processes with mutual TLS on every port and ingest's
keys on: an event published to ingest reaches a webhook (dispatch asks webhooks for
subscriptions over TLS with the internal key), and webhooks' own calls to ingest (the
catalog, an alert) go over TLS with INGEST_CLIENT_KEY."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from pathlib import Path

import grpc
import pytest
from herald.dispatch.v1 import dispatch_pb2, dispatch_pb2_grpc
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from herald.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc

from tests.acceptance.conftest import ServiceProcess, free_port
from tests.conftest import Infra
from tests.integration.conftest import ACME_KEY, INTERNAL_KEY
from tests.receiver import Receiver
from tests.tls_certs import make_pki

pytestmark = pytest.mark.acceptance

PUBLISHER_KEY = "publisher-key-0123456789"
HERALD_KEY = "herald-ingest-key-0123456789"
OPERATOR_KEY = "operator-key-0123456789"
ROTATION_DUE = "herald.webhook.secret_rotation_due"


async def test_an_event_and_an_alert_reach_a_webhook_over_mutual_tls_with_keys(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    suffix = uuid.uuid4().hex[:8]
    ingest_addr, hooks_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    dispatch_addr = f"127.0.0.1:{free_port()}"
    common = {
        **pki.server_env(mutual=True),  # each service presents client-a to the others
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
        "LOG_LEVEL": "WARNING",
        "DELIVERIES_TOPIC": f"herald.deliveries.{suffix}",
        "DLQ_TOPIC": f"herald.dlq.{suffix}",
        "INGEST_ADDR": ingest_addr,
        "WEBHOOKS_ADDR": hooks_addr,
        "WEBHOOKS_INTERNAL_KEY": INTERNAL_KEY,
        "INGEST_CLIENT_KEY": HERALD_KEY,
    }
    probe = pki.credentials(pki.client_cert, pki.client_key)
    ingest = ServiceProcess(
        "ingest",
        {
            **common,
            "INGEST_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "EVENTS_TOPIC": topic,
            "INGEST_API_KEYS": f"{PUBLISHER_KEY}=publisher,{HERALD_KEY}=herald",
        },
        tmp_path / "ingest.log",
        probe,
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
            "SECRET_ROTATION_DAYS": "0.00003",  # a webhook's secret is due after ~2.6 s
        },
        tmp_path / "webhooks.log",
        probe,
    )
    dispatch = ServiceProcess(
        "dispatch",
        {
            **common,
            "DISPATCH_ADDR": dispatch_addr,
            "DISPATCH_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "DISPATCH_API_KEYS": f"{OPERATOR_KEY}=operator",
            "EVENTS_TOPIC": topic,
            "DISPATCH_GROUP": f"d{suffix}",
            "BUILTIN_ROUTES": "false",
        },
        tmp_path / "dispatch.log",
        probe,
    )
    services = [ingest, webhooks, dispatch]
    event_id = str(uuid.uuid4())
    try:
        for service in services:
            await asyncio.to_thread(service.start)
        async with Receiver() as receiver:
            async with grpc.aio.secure_channel(hooks_addr, probe) as channel:
                # Its event types are checked against ingest's catalog: a call of
                # webhooks to ingest, over TLS with INGEST_CLIENT_KEY.
                await webhooks_pb2_grpc.WebhookServiceStub(channel).CreateWebhook(
                    webhooks_pb2.CreateWebhookRequest(
                        webhook=webhooks_pb2.Webhook(
                            name="over-tls",
                            url=receiver.url(),
                            event_types=["message.created", ROTATION_DUE],
                        )
                    ),
                    metadata=(("authorization", f"Bearer {ACME_KEY}"),),
                )
            await asyncio.sleep(1.5)  # dispatch has seen the webhook
            doc = {
                "specversion": "1.0",
                "id": event_id,
                "source": "urn:over-tls",
                "type": "message.created",
                "time": "2026-11-22T10:00:00Z",
                "datacontenttype": "application/json",
                "data": {"id": "m", "content": "c"},
            }
            async with grpc.aio.secure_channel(ingest_addr, probe) as channel:
                await ingest_pb2_grpc.IngestServiceStub(channel).Publish(
                    ingest_pb2.PublishRequest(json=json.dumps(doc)),
                    metadata=(("authorization", f"Bearer {PUBLISHER_KEY}"),),
                )
            async with grpc.aio.secure_channel(dispatch_addr, probe) as channel:
                await dispatch_pb2_grpc.DispatchServiceStub(channel).ListRoutes(
                    dispatch_pb2.ListRoutesRequest(),
                    metadata=(("authorization", f"Bearer {OPERATOR_KEY}"),),
                )
            # The event, and the secret's rotation alert webhooks published to ingest.
            posts = await receiver.wait_for(2, timeout=45)
    finally:
        for service in services:
            if service.proc is not None and service.proc.poll() is None:
                await asyncio.to_thread(service.terminate)

    by_type = {json.loads(p.body)["type"]: json.loads(p.body) for p in posts}
    assert by_type["message.created"]["id"] == event_id
    assert by_type[ROTATION_DUE]["data"]["name"] == "over-tls"
    assert by_type[ROTATION_DUE]["data"]["tenant"] == "acme"
    for service in services:
        assert "Traceback" not in service.log_path.read_text(), service.name
