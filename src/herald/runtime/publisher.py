"""Publishing Herald's own operational events through ingest, like any other event,
so that alerts are routed by the same subscriptions and routes."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import structlog
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc

from herald.runtime.channels import ingest_call_hint

log = structlog.get_logger("herald.publisher")
NAMESPACE = uuid.UUID("0f5e2f3c-8d7a-4b61-9c2e-5a4d3b2c1e0f")
# The CloudEvents extension attribute naming the webhooks tenant an event concerns: an
# event carrying it is delivered only to that tenant's webhooks (dispatch's matching).
TENANT_ATTRIBUTE = "heraldtenant"


# Herald's own alerts about a failure to deliver or dispatch. A failure to deliver or
# dispatch one of these raises no further alert (its dead letter is still stored and
# sent): a webhook or route taking every type ("*") that fails would otherwise alert
# about its alert about its alert, for ever.
FAILURE_ALERTS = frozenset(
    {
        "herald.dispatch.dead_lettered",
        "herald.webhook.delivery_exhausted",
        "herald.webhook.disabled",
    }
)


def alert_about(event_type: str) -> bool:
    """Whether a failure to deliver or dispatch an event of ``event_type`` is announced."""
    return event_type not in FAILURE_ALERTS


@dataclass(frozen=True, slots=True)
class Alert:
    """One operational event: its id derives from (``event_type``, ``key``), so a repeat
    (a retry, a second worker) is a duplicate, not a second event. ``dataschema`` is
    required by the catalog for ``integration.*`` types; ``time`` is when it happened
    (default: when it is published). ``tenant``: the webhooks tenant it concerns, sent as
    the ``heraldtenant`` attribute (TENANT_ATTRIBUTE): only that tenant's webhooks
    receive it. ``traceparent``: the W3C trace context of what it is about (the event
    that died, the RPC that asked for it); it is published under it, so ingest's
    ``event.publish`` span, its record and its deliveries join that trace."""

    event_type: str
    key: str
    subject: str
    data: dict[str, Any]
    dataschema: str = ""
    time: datetime | None = None
    tenant: str = ""
    traceparent: str = ""


class EventPublisher:
    """Publishes :class:`Alert` events to ingest as CloudEvents."""

    def __init__(self, channel: grpc.aio.Channel, source: str, attempts: int = 5) -> None:
        self._stub = ingest_pb2_grpc.IngestServiceStub(channel)
        self._source = source
        self._attempts = attempts

    async def publish(
        self,
        event_type: str,
        key: str,
        subject: str,
        data: dict[str, Any],
        dataschema: str = "",
    ) -> bool:
        """True once ingest has accepted it; False after the retries (logged)."""
        alert = Alert(event_type, key, subject, data, dataschema)
        delay = 0.2
        for attempt in range(1, self._attempts + 1):
            error = await self.publish_once(alert, attempt)
            if error is None:
                return True
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return False
            await asyncio.sleep(delay)
            delay *= 2
        return False

    async def publish_once(self, alert: Alert, attempt: int = 1) -> grpc.aio.AioRpcError | None:
        """One try, for a caller that retries on its own: None once ingest has accepted
        it, else ingest's error (logged)."""
        event = {
            "specversion": "1.0",
            "id": str(uuid.uuid5(NAMESPACE, f"{alert.event_type}/{alert.key}")),
            "source": self._source,
            "type": alert.event_type,
            "time": (alert.time or datetime.now(UTC))
            .astimezone(UTC)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            "datacontenttype": "application/json",
            "data": alert.data,
        }
        if alert.subject:  # an empty one is refused
            event["subject"] = alert.subject
        if alert.dataschema:
            event["dataschema"] = alert.dataschema
        if alert.tenant:
            event[TENANT_ATTRIBUTE] = alert.tenant
        metadata = (("traceparent", alert.traceparent),) if alert.traceparent else None
        try:
            await self._stub.Publish(
                ingest_pb2.PublishRequest(json=json.dumps(event)), timeout=5, metadata=metadata
            )
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "publish.failed",
                type=alert.event_type,
                subject=alert.subject,
                attempt=attempt,
                code=exc.code().name,
                detail=exc.details(),
                hint=ingest_call_hint(exc.code()),
            )
            return exc
        return None
