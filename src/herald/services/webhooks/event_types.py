"""The names of the registered event types, read from ingest's catalog over gRPC."""

from __future__ import annotations

import time

import grpc
import structlog
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc

from herald.runtime.channels import ingest_call_hint
from herald.runtime.errors import Unavailable

log = structlog.get_logger("herald.webhooks")


class EventTypeNames:
    """Cached for ``ttl`` seconds, so a type created in ingest is usable at once
    after that (the default 2 s)."""

    def __init__(self, channel: grpc.aio.Channel, ttl: float) -> None:
        self._stub = ingest_pb2_grpc.IngestServiceStub(channel)
        self._ttl = ttl
        self._names: frozenset[str] = frozenset()
        self._at = -float("inf")

    async def names(self) -> frozenset[str]:
        """Every registered type name; UNAVAILABLE when ingest cannot be asked."""
        if time.monotonic() - self._at < self._ttl:
            return self._names
        names: set[str] = set()
        token = ""
        try:
            while True:
                page = await self._stub.ListEventTypes(
                    ingest_pb2.ListEventTypesRequest(page_size=1000, page_token=token), timeout=5
                )
                names.update(t.name for t in page.event_types)
                token = page.next_page_token
                if not token:
                    break
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "event_types.unavailable",
                code=exc.code().name,
                detail=exc.details(),
                hint=ingest_call_hint(exc.code()),
            )
            raise Unavailable(
                f"the event-type catalog (ingest) is unavailable: {exc.code().name}"
            ) from None
        self._names, self._at = frozenset(names), time.monotonic()
        return self._names

    def forget(self) -> None:
        """The next call reads the catalog again."""
        self._at = -float("inf")
