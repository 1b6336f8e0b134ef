"""Reading what landed on a Kafka topic, making a topic with a size limit (tests only)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from herald.runtime.kafka import connection_options
from herald.runtime.settings import KafkaSettings


async def read_topic(
    settings: KafkaSettings, topic: str, count: int, timeout: float = 30.0
) -> list[Any]:
    """At least ``count`` records of ``topic`` from the beginning (all that arrive
    within a short grace period after that), or as many as came before ``timeout``."""
    consumer = AIOKafkaConsumer(
        topic,
        **connection_options(settings),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
            if len(records) >= count:
                # a short grace period shows repeats that follow the last one expected
                more = await consumer.getmany(timeout_ms=300)
                for part in more.values():
                    records.extend(part)
                break
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return records


def headers(record: Any) -> dict[str, str]:
    """A record's headers as text."""
    return {k: v.decode() for k, v in record.headers}


async def read_matching(
    settings: KafkaSettings,
    topic: str,
    wanted: Callable[[Any], bool],
    count: int,
    timeout: float = 30.0,
    distinct: Callable[[Any], object] | None = None,
) -> list[Any]:
    """The records of ``topic`` (from the beginning) for which ``wanted`` is true, once
    ``count`` of them arrived (plus any repeats within a short grace period), or as many
    as came before ``timeout``. For topics other tests write to as well. With
    ``distinct``, ``count`` counts distinct values of it (repeats do not count)."""
    consumer = AIOKafkaConsumer(
        topic,
        **connection_options(settings),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[Any] = []
    seen: set[object] = set()
    deadline = time.monotonic() + timeout
    grace: float | None = None
    try:
        while time.monotonic() < deadline and (grace is None or time.monotonic() < grace):
            batch = await consumer.getmany(timeout_ms=200)
            new = [r for part in batch.values() for r in part if wanted(r)]
            found += new
            if distinct is not None:
                seen.update(distinct(r) for r in new)
            if grace is None and (len(seen) if distinct else len(found)) >= count:
                grace = time.monotonic() + 0.5
    finally:
        await consumer.stop()
    return found


async def create_small_topic(
    settings: KafkaSettings, name: str, max_bytes: int, partitions: int = 1
) -> None:
    """A topic whose records (batches) may be at most ``max_bytes`` (max.message.bytes)."""
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await admin.start()
    try:
        limit = {"max.message.bytes": str(max_bytes)}
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=limit)])
    finally:
        await admin.close()


async def set_topic_limit(settings: KafkaSettings, name: str, max_bytes: int) -> None:
    """Sets the topic's max.message.bytes (as an operator raising the limit would)."""
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await admin.start()
    try:
        limit = {"max.message.bytes": str(max_bytes)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, limit)])
    finally:
        await admin.close()
