"""(d0) The floor of (d)'s measurement: raw producer acknowledgement → consumer sees.

The same paced schedule, records and watcher as (d), but each record goes straight
to Kafka through an idempotent producer (make_producer's settings); the latency is
from the producer's acknowledgement (already on Kafka) to the fetch in which the
watcher first saw the record. It is what (d) cannot go below on this machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import infra, workload
from bench.quiet_gc import no_collector_pauses
from bench.stats import rate, summary_ms
from bench.watcher import TopicWatcher
from herald.runtime import kafka

VISIBLE_TIMEOUT = 60.0


async def run(
    where: infra.Infra, per_second: float, seconds: float, partitions: int
) -> dict[str, Any]:
    """Measures the floor; returns the details (``on_kafka_ms`` is the figure)."""
    settings = where.kafka_settings()
    topic = infra.new_topic_name("floor")
    await infra.create_topic(settings, topic, partitions)
    producer = kafka.make_producer(settings)
    await producer.start()
    watcher = TopicWatcher(settings, topic)
    await watcher.start()
    acked: dict[str, float] = {}

    async def one(record: workload.Record) -> None:
        await producer.send_and_wait(
            topic, value=record.value, key=record.key, headers=record.headers
        )
        acked[dict(record.headers)["ce_id"].decode()] = time.perf_counter()

    try:
        records = workload.records(int(per_second * seconds), topic)
        tasks = []
        with no_collector_pauses():
            start = time.perf_counter()
            for i, record in enumerate(records):
                delay = start + i / per_second - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(record)))
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - start
            await watcher.wait_for(len(records), VISIBLE_TIMEOUT)
        seen = watcher.seen
        return {
            "target_rate": per_second,
            "seconds": seconds,
            "n": len(records),
            "rate": rate(len(records), elapsed),
            "on_kafka_ms": summary_ms([seen[e] - at for e, at in acked.items()]),
        }
    finally:
        await watcher.stop()
        await producer.stop()
        await infra.delete_topic(settings, topic)
