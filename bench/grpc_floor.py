"""(c0) The gRPC floor: the same 64-caller client against an IngestService whose
Publish does nothing, in its own process on uvloop like ingest.

It shows what grpc.aio itself allows on this machine, so that (c) reads against it:
ingest's own work (validation, commit, relay) comes on top of this.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import time
from typing import Any

import grpc
import uvloop
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc

from bench import workload
from bench.stats import rate, summary_ms


class _Empty(ingest_pb2_grpc.IngestServiceServicer):
    async def Publish(
        self, request: ingest_pb2.PublishRequest, context: Any
    ) -> ingest_pb2.PublishResponse:
        return ingest_pb2.PublishResponse(event_id="-")


def _serve(port: int) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        servicer = _Empty()  # type: ignore[abstract]  # only Publish is called
        ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def run(n: int, callers: int) -> dict[str, Any]:
    """Calls/s and latency of empty Publish calls from ``callers`` tasks."""
    port = _free_port()
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,))
    process.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            requests = [r for _, r in workload.publish_requests(n + 1000)]
            latencies: list[float] = []

            async def caller(queue: list[ingest_pb2.PublishRequest]) -> None:
                while queue:
                    request = queue.pop()
                    started = time.perf_counter()
                    await stub.Publish(request, timeout=30)
                    latencies.append(time.perf_counter() - started)

            warm = requests[:1000]
            await asyncio.gather(*(caller(warm) for _ in range(callers)))
            latencies.clear()
            queue = requests[1000:]
            started = time.perf_counter()
            await asyncio.gather(*(caller(queue) for _ in range(callers)))
            seconds = time.perf_counter() - started
    finally:
        process.terminate()
        process.join(10)
    return {
        "n": n,
        "callers": callers,
        "rate": rate(n, seconds),
        "latency_ms": summary_ms(latencies),
    }
