"""(d) Accepted → on Kafka latency at a steady rate of unary Publish calls.

Calls start on a fixed schedule (call ``i`` is due at ``start + i / rate``; a late
tick does not shift later ones, so the schedule does not drift) and each runs as
its own task. For every event the latency is from the moment its Publish returned
OK (accepted) to the fetch in which a consumer on the topic first saw its ``ce_id``.
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
from bench.quiet_gc import no_collector_pauses
from bench.stats import rate, summary_ms

WARMUP_SECONDS = 2.0
VISIBLE_TIMEOUT = 60.0


async def _paced(
    session: harness.Session,
    requests: list[tuple[str, ingest_pb2.PublishRequest]],
    per_second: float,
) -> dict[str, Any]:
    """Publishes on schedule; the send, accept and lateness times of each event."""
    accepted: dict[str, float] = {}
    call_latency: list[float] = []
    sends: list[float] = []
    lateness: list[float] = []
    errors: Counter[str] = Counter()

    async def one(event_id: str, request: ingest_pb2.PublishRequest) -> None:
        started = time.perf_counter()
        try:
            await session.ingest.stub.Publish(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            errors[f"{exc.code().name}: {exc.details()}"[:200]] += 1
            return
        now = time.perf_counter()
        accepted[event_id] = now
        call_latency.append(now - started)

    tasks = []
    start = time.perf_counter()
    for i, (event_id, request) in enumerate(requests):
        due = start + i / per_second
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.perf_counter()
        sends.append(now)
        lateness.append(max(0.0, now - due))
        tasks.append(asyncio.create_task(one(event_id, request)))
    await asyncio.gather(*tasks)
    return {
        "accepted": accepted,
        "call_latency": call_latency,
        "sends": sends,
        "lateness": lateness,
        "errors": errors,
    }


async def run(
    where: infra.Infra,
    per_second: float,
    seconds: float,
    partitions: int,
    extra_env: Mapping[str, str],
) -> dict[str, Any]:
    """Measures (d); returns the details (``on_kafka_ms`` and ``rate`` are the figures)."""
    async with harness.session(where, "steady", partitions, extra_env) as session:
        warm = workload.publish_requests(int(per_second * WARMUP_SECONDS))
        warmed = len((await _paced(session, warm, per_second))["accepted"])
        await session.watcher.wait_for(warmed, VISIBLE_TIMEOUT)

        requests = workload.publish_requests(int(per_second * seconds))
        meter = CpuMeter(session.ingest.pids)
        with no_collector_pauses():
            meter.start()
            paced = await _paced(session, requests, per_second)
            cpu = meter.stop()
            accepted: dict[str, float] = paced["accepted"]
            await session.watcher.wait_for(warmed + len(accepted), VISIBLE_TIMEOUT)
        seen = session.watcher.seen
        delays = [seen[event_id] - at for event_id, at in accepted.items()]
        sends: list[float] = paced["sends"]
        first, last_accept = sends[0], max(accepted.values(), default=sends[0])
        return {
            "target_rate": per_second,
            "seconds": seconds,
            "n": len(requests),
            "partitions": partitions,
            "errors": sum(paced["errors"].values()),
            "error_kinds": dict(paced["errors"]),
            "rate": rate(len(accepted), last_accept - first),
            "send_rate": rate(len(sends) - 1, sends[-1] - first),
            "schedule_lateness_ms": summary_ms(paced["lateness"]),
            "on_kafka_ms": summary_ms(delays),
            "negative_delays": sum(1 for d in delays if d < 0),
            "publish_latency_ms": summary_ms(paced["call_latency"]),
            "send_to_kafka_ms": summary_ms(
                [seen[e] - s for (e, _), s in zip(requests, sends, strict=True) if e in accepted]
            ),
            "cpu": cpu,
        }
