"""The server-side tracing interceptor as services install it (spans carry ids only):
a call runs under a span of its own, in the caller's trace when it sends one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc

from herald.runtime.errors import InvalidArgument
from herald.runtime.interceptors import ErrorInterceptor
from herald.runtime.tracing import (
    IdsOnlyServerInterceptor,
    configure_tracing,
    current_traceparent,
    server_interceptor,
)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class _Echo(ingest_pb2_grpc.IngestServiceServicer):
    """Answers with the traceparent the handler runs under; ``json="bad"`` is refused."""

    async def Publish(
        self, request: ingest_pb2.PublishRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ingest_pb2.PublishResponse:
        if request.json == "bad":
            raise InvalidArgument([])
        return ingest_pb2.PublishResponse(event_id=current_traceparent() or "")


@pytest.fixture
async def traced() -> AsyncIterator[tuple[ingest_pb2_grpc.IngestServiceAsyncStub, Any]]:
    configure_tracing("test")
    tracing = server_interceptor()
    server = grpc.aio.server(interceptors=[tracing, ErrorInterceptor()])
    servicer = _Echo()  # type: ignore[abstract]  # only Publish is called
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield ingest_pb2_grpc.IngestServiceStub(channel), tracing
    finally:
        await server.stop(None)


async def test_a_call_continues_the_callers_trace_under_a_span_of_its_own(
    traced: tuple[ingest_pb2_grpc.IngestServiceAsyncStub, Any],
) -> None:
    stub, tracing = traced
    assert isinstance(tracing, IdsOnlyServerInterceptor)
    for flags in ("01", "00"):
        reply = await stub.Publish(
            ingest_pb2.PublishRequest(),
            metadata=(("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}"),),
        )
        version, trace_id, span_id, kept = reply.event_id.split("-")
        assert (version, trace_id, kept) == ("00", CALLER_TRACE, flags)
        assert span_id != CALLER_SPAN


async def test_a_call_without_a_trace_starts_its_own(
    traced: tuple[ingest_pb2_grpc.IngestServiceAsyncStub, Any],
) -> None:
    stub, _ = traced
    first = (await stub.Publish(ingest_pb2.PublishRequest())).event_id.split("-")
    second = (await stub.Publish(ingest_pb2.PublishRequest())).event_id.split("-")
    assert first[3] == "01"
    assert first[1] != second[1]
    assert current_traceparent() is None  # nothing leaks into the caller's context


async def test_errors_still_map_and_handlers_are_wrapped_once(
    traced: tuple[ingest_pb2_grpc.IngestServiceAsyncStub, Any],
) -> None:
    stub, tracing = traced
    for _ in range(5):
        await stub.Publish(ingest_pb2.PublishRequest())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Publish(ingest_pb2.PublishRequest(json="bad"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(tracing._handlers) == 1  # Publish's, made on the first call
