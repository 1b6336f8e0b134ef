"""Publishing Herald's own operational events through ingest, like any other event,
so that alerts are routed by the same subscriptions and routes."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import structlog
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc

log = structlog.get_logger("herald.publisher")
NAMESPACE = uuid.UUID("0f5e2f3c-8d7a-4b61-9c2e-5a4d3b2c1e0f")


class EventPublisher:
    """Publishes CloudEvents to ingest; ids are derived from ``key`` so a repeat
    (a retry, a second worker) is a duplicate, not a second event."""

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
        """True once ingest has accepted it; False after the retries (logged).
        ``dataschema`` is required by the catalog for ``integration.*`` types."""
        event = {
            "specversion": "1.0",
            "id": str(uuid.uuid5(NAMESPACE, f"{event_type}/{key}")),
            "source": self._source,
            "type": event_type,
            "subject": subject,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "datacontenttype": "application/json",
            "data": data,
        }
        if dataschema:
            event["dataschema"] = dataschema
        request = ingest_pb2.PublishRequest(json=json.dumps(event))
        delay = 0.2
        for attempt in range(1, self._attempts + 1):
            try:
                await self._stub.Publish(request, timeout=5)
                return True
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "publish.failed",
                    type=event_type,
                    subject=subject,
                    attempt=attempt,
                    code=exc.code().name,
                    detail=exc.details(),
                )
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    return False
            await asyncio.sleep(delay)
            delay *= 2
        return False
