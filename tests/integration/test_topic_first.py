"""runtime.kafka_first against the real broker: one topic's backlog read before the others'."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

import pytest
from aiokafka.structs import ConsumerRecord

from herald.runtime import kafka
from herald.runtime.kafka_first import TopicFirst
from herald.runtime.settings import KafkaSettings
from tests.conftest import Infra

pytestmark = pytest.mark.integration


async def _produce(settings: KafkaSettings, topic: str, n: int, tag: str) -> None:
    """``n`` records ``<tag><i>`` spread over the topic's partitions by key."""
    producer = kafka.make_producer(settings)
    await producer.start()
    try:
        for i in range(n):
            await producer.send(topic, f"{tag}{i}".encode(), key=str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _topics(settings: KafkaSettings, partitions: int) -> tuple[str, str]:
    """New (orders, events) topics."""
    suffix = uuid.uuid4().hex[:8]
    orders, events = f"first.orders.{suffix}", f"first.events.{suffix}"
    await kafka.ensure_topics(settings, [orders, events], partitions=partitions)
    return orders, events


def _consuming(
    settings: KafkaSettings,
    topics: list[str],
    first: TopicFirst | None,
    take: Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[None]],
) -> asyncio.Task[None]:
    """``kafka.consume`` of ``topics`` in a new group, 50 records a batch, as a task."""
    group = f"first-{uuid.uuid4().hex[:8]}"
    return asyncio.create_task(
        kafka.consume(
            lambda: kafka.make_consumer(settings, *topics, group_id=group),
            "test",
            take,
            max_records=50,
            first=first,
        )
    )


async def _stopped(worker: asyncio.Task[None]) -> None:
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker


async def _taken_in_order(
    settings: KafkaSettings, topics: list[str], first: TopicFirst | None, expected: int
) -> list[str]:
    """Values in the order ``kafka.consume`` took them, once ``expected`` have come."""
    taken: list[str] = []
    enough = asyncio.Event()

    async def take(records: list[ConsumerRecord[bytes, bytes]]) -> None:
        taken.extend(r.value.decode() for r in records)
        if len(taken) >= expected:
            enough.set()

    worker = _consuming(settings, topics, first, take)
    try:
        async with asyncio.timeout(30):
            await enough.wait()
    finally:
        await _stopped(worker)
    return taken


async def test_the_first_topics_backlog_is_taken_before_any_other_record(infra: Infra) -> None:
    """Orders produced before their events, both waiting on Kafka: every event is
    taken before the first order, and then every order is taken."""
    settings = infra.kafka_settings()
    orders, events = await _topics(settings, partitions=3)
    await _produce(settings, orders, 600, "o")
    await _produce(settings, events, 200, "e")

    taken = await _taken_in_order(settings, [orders, events], TopicFirst(events), 800)

    assert sorted(taken) == sorted([f"o{i}" for i in range(600)] + [f"e{i}" for i in range(200)])
    first_order = next(i for i, v in enumerate(taken) if v.startswith("o"))
    assert first_order == 200, f"an order was taken after {first_order} events, not 200"


async def test_records_produced_after_the_catch_up_are_taken_from_every_topic(
    infra: Infra,
) -> None:
    """Once caught up, nothing stays paused: later orders and events both come."""
    settings = infra.kafka_settings()
    orders, events = await _topics(settings, partitions=2)
    await _produce(settings, events, 20, "e")
    first = TopicFirst(events)
    taken: list[str] = []

    async def take(records: list[ConsumerRecord[bytes, bytes]]) -> None:
        taken.extend(r.value.decode() for r in records)

    worker = _consuming(settings, [orders, events], first, take)
    try:
        async with asyncio.timeout(30):
            while len(taken) < 20:
                await asyncio.sleep(0.05)
            await _produce(settings, orders, 30, "later-o")
            await _produce(settings, events, 5, "later-e")
            while len(taken) < 55:
                await asyncio.sleep(0.05)
    finally:
        await _stopped(worker)
    assert not first.holding
    assert sorted(v for v in taken if v.startswith("later-")) == sorted(
        [f"later-o{i}" for i in range(30)] + [f"later-e{i}" for i in range(5)]
    )


async def test_an_empty_first_topic_holds_nothing_up(infra: Infra) -> None:
    settings = infra.kafka_settings()
    orders, events = await _topics(settings, partitions=2)
    await _produce(settings, orders, 40, "o")
    first = TopicFirst(events)

    taken = await _taken_in_order(settings, [orders, events], first, 40)

    assert sorted(taken) == sorted(f"o{i}" for i in range(40))
    assert not first.holding
