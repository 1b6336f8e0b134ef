"""(b) PublishBatch end to end: from the first call until the last record is on Kafka.

``n`` distinct events in PublishBatch calls of ``batch_size``, ``concurrency`` calls
in flight; requests are built before the clock starts. The figure is events per
second from the first send until a consumer on the topic has seen every event.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from herald.ingest.v1 import ingest_pb2

from bench import harness, infra, workload
from bench.cpu import CpuMeter
from bench.stats import rate, summary_ms

WARMUP_BATCHES = 2
VISIBLE_TIMEOUT = 120.0


async def _call_all(
    session: harness.Session, batches: list[ingest_pb2.PublishBatchRequest], concurrency: int
) -> tuple[list[float], Counter[str]]:
    """Sends ``batches`` with ``concurrency`` calls in flight; (call latencies, failures)."""
    queue = list(reversed(batches))
    latencies: list[float] = []
    failed: Counter[str] = Counter()

    async def caller() -> None:
        while queue:
            request = queue.pop()
            started = time.perf_counter()
            reply = await session.ingest.stub.PublishBatch(request, timeout=120)
            latencies.append(time.perf_counter() - started)
            for result in reply.results:
                if result.status.code != 0:
                    failed[result.status.message[:200]] += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, failed


async def run(
    where: infra.Infra,
    n: int,
    batch_size: int,
    concurrency: int,
    partitions: int,
    extra_env: Mapping[str, str],
) -> dict[str, Any]:
    """Measures (b); returns the details (``rate`` is the figure)."""
    async with harness.session(where, "batch", partitions, extra_env) as session:
        warm = workload.batch_requests(WARMUP_BATCHES * batch_size, batch_size)
        await _call_all(session, warm, concurrency)
        warm_n = WARMUP_BATCHES * batch_size
        await session.watcher.wait_for(warm_n, VISIBLE_TIMEOUT)

        batches = workload.batch_requests(n, batch_size)
        meter = CpuMeter(session.ingest.pids)
        meter.start()
        started = time.perf_counter()
        latencies, failed = await _call_all(session, batches, concurrency)
        accepted_at = time.perf_counter()
        visible_at = await session.watcher.wait_for(warm_n + n, VISIBLE_TIMEOUT)
        cpu = meter.stop()
        return {
            "n": n,
            "batch_size": batch_size,
            "concurrency": concurrency,
            "partitions": partitions,
            "failed_items": sum(failed.values()),
            "failures": dict(failed),
            "rate": rate(n, visible_at - started),
            "seconds_to_last_on_kafka": visible_at - started,
            "accepted_rate": rate(n, accepted_at - started),
            "seconds_to_last_accepted": accepted_at - started,
            "call_latency_ms": summary_ms(latencies),
            "records_on_topic": session.watcher.records,
            "cpu": cpu,
        }
