"""(a) The bar: a raw idempotent aiokafka producer sending ingest's records.

Same producer settings as ``herald.runtime.kafka.make_producer`` (acks=all,
idempotent, linger 2 ms, 256 KiB batches, no compression), same keys, values and
headers as ingest's relay sends, to a fresh topic with as many partitions as
ingest's. Two honest patterns, each run ``repeats`` times; the faster is the bar:

- ``send()`` every record, gathering the delivery futures every 10,000 records
  (what an application, and ingest's relay, does);
- ``send_batch()``: records appended into per-partition batches by the default
  (murmur2) partitioner, each full batch handed over at once (skips aiokafka's
  per-record accumulator work; the fastest thing the client library offers).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from bench import infra, workload
from bench.cpu import CpuMeter
from bench.stats import rate
from herald.runtime import kafka
from herald.runtime.settings import KafkaSettings

GATHER_EVERY = 10_000
WARMUP = 2_000


async def send_and_gather(
    producer: AIOKafkaProducer, topic: str, records: list[workload.Record]
) -> None:
    """``send()`` each record; await the acknowledgements every GATHER_EVERY."""
    futures: list[asyncio.Future[Any]] = []
    for r in records:
        futures.append(await producer.send(topic, value=r.value, key=r.key, headers=r.headers))
        if len(futures) >= GATHER_EVERY:
            await asyncio.gather(*futures)
            futures = []
    await asyncio.gather(*futures)


async def send_batches(
    producer: AIOKafkaProducer, topic: str, records: list[workload.Record]
) -> None:
    """Per-partition batches through ``send_batch()``; await every acknowledgement."""
    partitions = sorted(await producer.partitions_for(topic))
    partitioner = DefaultPartitioner()
    builders: dict[int, Any] = {}
    futures: list[asyncio.Future[Any]] = []
    for r in records:
        partition = partitioner(r.key, partitions, partitions)
        builder = builders.get(partition) or producer.create_batch()
        builders[partition] = builder
        if builder.append(key=r.key, value=r.value, timestamp=None, headers=r.headers) is None:
            futures.append(await producer.send_batch(builder, topic, partition=partition))
            builder = builders[partition] = producer.create_batch()
            builder.append(key=r.key, value=r.value, timestamp=None, headers=r.headers)
    for partition, builder in builders.items():
        futures.append(await producer.send_batch(builder, topic, partition=partition))
    await asyncio.gather(*futures)


PATTERNS = {"send_gather": send_and_gather, "send_batch": send_batches}


async def _end_offsets(settings: KafkaSettings, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(**kafka.connection_options(settings))
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


async def run(where: infra.Infra, n: int, partitions: int, repeats: int) -> dict[str, Any]:
    """Measures both patterns; returns the details (``rate`` is the bar)."""
    settings = where.kafka_settings()
    topic = infra.new_topic_name("raw")
    await infra.create_topic(settings, topic, partitions)
    producer = kafka.make_producer(settings)
    await producer.start()
    details: dict[str, Any] = {"n": n, "partitions": partitions, "repeats": repeats}
    try:
        sample = workload.records(1, topic)[0]
        details["record_bytes"] = workload.record_size(sample)
        for send in PATTERNS.values():  # connections, metadata, first batches
            await send(producer, topic, workload.records(WARMUP, topic))
        sent = 2 * WARMUP
        for name, send in PATTERNS.items():
            runs = []
            for _ in range(repeats):
                records = workload.records(n, topic)
                meter = CpuMeter()
                meter.start()
                started = time.perf_counter()
                await send(producer, topic, records)
                elapsed = time.perf_counter() - started
                runs.append({"rate": rate(n, elapsed), "seconds": elapsed, **meter.stop()})
                sent += n
            details[name] = {"rate": max(r["rate"] for r in runs), "runs": runs}
    finally:
        await producer.stop()
    on_topic = await _end_offsets(settings, topic, partitions)
    await infra.delete_topic(settings, topic)
    if on_topic != sent:
        raise RuntimeError(f"raw baseline: {on_topic} records on the topic, sent {sent}")
    best = max(PATTERNS, key=lambda p: float(details[p]["rate"]))
    details["pattern"] = best
    details["rate"] = details[best]["rate"]
    return details
