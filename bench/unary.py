"""(c) Unary Publish with many concurrent callers: accepted events/s and latency.

``callers`` tasks share one channel and take the next prebuilt request until ``n``
were sent; each call's latency is measured at the client. The rate counts events
accepted (Publish returned OK) per second of wall time; the time until all of them
were on Kafka is kept in the details.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import grpc
from herald.ingest.v1 import ingest_pb2

from bench import harness, infra, workload
from bench.cpu import CpuMeter
from bench.stats import rate, summary_ms

WARMUP = 1_000
VISIBLE_TIMEOUT = 120.0


async def _call_all(
    session: harness.Session,
    requests: list[tuple[str, ingest_pb2.PublishRequest]],
    callers: int,
) -> tuple[list[float], list[float], Counter[str]]:
    """Publishes ``requests`` from ``callers`` tasks; (latencies and completion times
    of the OK calls, errors)."""
    queue = list(reversed(requests))
    latencies: list[float] = []
    done_at: list[float] = []
    errors: Counter[str] = Counter()

    async def caller() -> None:
        while queue:
            _, request = queue.pop()
            started = time.perf_counter()
            try:
                await session.ingest.stub.Publish(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                errors[f"{exc.code().name}: {exc.details()}"[:200]] += 1
                continue
            now = time.perf_counter()
            latencies.append(now - started)
            done_at.append(now)

    await asyncio.gather(*(caller() for _ in range(callers)))
    return latencies, done_at, errors


async def run(
    where: infra.Infra, n: int, callers: int, partitions: int, extra_env: Mapping[str, str]
) -> dict[str, Any]:
    """Measures (c); returns the details (``rate`` and ``latency_ms`` are the figures)."""
    async with harness.session(where, "unary", partitions, extra_env) as session:
        warm, _, _ = await _call_all(session, workload.publish_requests(WARMUP), callers)
        await session.watcher.wait_for(len(warm), VISIBLE_TIMEOUT)

        requests = workload.publish_requests(n)
        meter = CpuMeter(session.ingest.pids)
        meter.start()
        started = time.perf_counter()
        latencies, done_at, errors = await _call_all(session, requests, callers)
        accepted_at = time.perf_counter()
        cpu = meter.stop()
        visible_at = await session.watcher.wait_for(len(warm) + len(latencies), VISIBLE_TIMEOUT)
        return {
            "n": n,
            "callers": callers,
            "partitions": partitions,
            "errors": sum(errors.values()),
            "error_kinds": dict(errors),
            "rate": rate(len(latencies), accepted_at - started),
            "seconds": accepted_at - started,
            "latency_ms": summary_ms(latencies),
            "rate_by_quarter": _quarters(done_at, started),
            "seconds_to_last_on_kafka": visible_at - started,
            "cpu": cpu,
        }


def _quarters(done_at: list[float], started: float) -> list[float]:
    """Accepted events/s in each quarter of the run (does throughput hold up?)."""
    if not done_at:
        return []
    end = max(done_at)
    width = (end - started) / 4
    counts = [0, 0, 0, 0]
    for t in done_at:
        counts[min(3, int((t - started) / width))] += 1
    return [rate(c, width) for c in counts]
