"""runtime.kafka_first's decisions, with a stand-in consumer (the broker's side is in
tests/integration/test_topic_first.py)."""

from __future__ import annotations

from typing import Any

from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import TopicPartition

from herald.runtime.kafka_first import TopicFirst

E0, E1 = TopicPartition("events", 0), TopicPartition("events", 1)
O0, R0 = TopicPartition("orders", 0), TopicPartition("refunds", 0)


class FakeConsumer:
    """What TopicFirst uses of an AIOKafkaConsumer."""

    def __init__(self, ends: dict[TopicPartition, int] | Exception) -> None:
        self.ends = ends
        self.positions: dict[TopicPartition, int] = {}
        self.assigned: set[TopicPartition] = set()
        self.paused: set[TopicPartition] = set()
        self.listener: Any = None

    def subscription(self) -> set[str]:
        return {"events", "orders", "refunds"}

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if isinstance(self.ends, Exception):
            raise self.ends
        return {tp: self.ends[tp] for tp in partitions}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions.get(tp, 0)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)


async def _assigned(
    consumer: FakeConsumer, partitions: set[TopicPartition]
) -> tuple[TopicFirst, FakeConsumer]:
    first = TopicFirst("events")
    first.attach(consumer)
    assert consumer.listener is first
    consumer.assigned = partitions
    await first.on_partitions_assigned(partitions)
    return first, consumer


async def test_others_are_paused_until_every_first_partition_reaches_its_end() -> None:
    first, consumer = await _assigned(FakeConsumer({E0: 5, E1: 3}), {E0, E1, O0, R0})
    assert consumer.paused == {O0, R0}
    assert first.holding

    consumer.positions = {E0: 5, E1: 1}
    await first.before_fetch()
    first.fetched(10)
    assert consumer.paused == {O0, R0}, "E1 is still behind"

    consumer.positions[E1] = 3
    await first.before_fetch()
    assert consumer.paused == set()
    assert not first.holding


async def test_a_poll_that_brings_nothing_while_paused_resumes_the_others() -> None:
    """The ends cannot be reached (say, the records there were deleted): a whole
    poll made with the others paused and bringing nothing ends the wait."""
    first, consumer = await _assigned(FakeConsumer({E0: 5}), {E0, O0})
    await first.before_fetch()
    first.fetched(0)
    assert consumer.paused == set()
    assert not first.holding


async def test_an_empty_poll_begun_before_the_assignment_does_not_count() -> None:
    consumer = FakeConsumer({E0: 5})
    first = TopicFirst("events")
    first.attach(consumer)
    await first.before_fetch()  # nothing assigned yet: the poll joins the group …
    consumer.assigned = {E0, O0}
    await first.on_partitions_assigned({E0, O0})  # … and is assigned during it
    first.fetched(0)
    assert consumer.paused == {O0}, "that poll did not wait with the others paused"


async def test_nothing_is_paused_without_a_backlog_or_without_both_kinds_of_partition() -> None:
    _, empty = await _assigned(FakeConsumer({E0: 0}), {E0, O0})
    _, only_first = await _assigned(FakeConsumer({E0: 9}), {E0})
    _, only_others = await _assigned(FakeConsumer({}), {O0, R0})
    _, unreachable = await _assigned(FakeConsumer(KafkaConnectionError()), {E0, O0})
    for consumer in (empty, only_first, only_others, unreachable):
        assert consumer.paused == set()


async def test_a_revocation_forgets_the_wait() -> None:
    first, consumer = await _assigned(FakeConsumer({E0: 5}), {E0, O0})
    await first.on_partitions_revoked({E0, O0})
    assert not first.holding
    consumer.assigned = {O0}
    await first.on_partitions_assigned({O0})
    await first.before_fetch()
    assert not first.holding
