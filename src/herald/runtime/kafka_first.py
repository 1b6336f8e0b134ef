"""Topic precedence for a consumer of several topics: one topic's backlog first.

A consumer whose records refer to another topic's (orders to their events) makes its
own work harder when it reads the referring records before what they refer to: they
have to be set aside and taken up again later. With a backlog on every topic (a new
consumer group, a restart after downtime) the fetcher mixes the topics as it likes.

:class:`TopicFirst`, attached to a consumer, pauses the other topics' partitions
whenever partitions of the first topic are assigned to it and are behind the end they
had then; it resumes them once the consumer's positions reach those ends. A poll that
returns nothing while they are paused resumes them too: the first topic has nothing
more to give now, so nothing is held up longer than a poll. Only the order of
consumption changes: every record is still read, and offsets are committed as before.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import TopicPartition

log = structlog.get_logger("herald.kafka")


class TopicFirst(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """See the module docstring; one per consumer (:meth:`attach` it before start)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._ends: dict[TopicPartition, int] = {}  # first-topic partitions still behind
        self._paused: set[TopicPartition] = set()
        self._poll_paused = False  # whether the poll under way started with them paused

    @property
    def holding(self) -> bool:
        """Whether the other topics are paused now."""
        return bool(self._paused)

    def attach(self, consumer: AIOKafkaConsumer) -> AIOKafkaConsumer:
        """Listens to ``consumer``'s rebalances (its topics unchanged); returns it."""
        self._consumer = consumer
        self._ends.clear()
        self._paused.clear()
        consumer.subscribe(topics=sorted(consumer.subscription()), listener=self)
        return consumer

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._ends.clear()
        self._paused.clear()  # a new assignment starts unpaused

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None, "attach() first"
        assigned = set(assigned)
        first = sorted(tp for tp in assigned if tp.topic == self.topic)
        others = assigned.difference(first)
        self._ends.clear()
        self._paused.clear()
        if not first or not others:
            return
        try:
            ends = await consumer.end_offsets(first)
        except KafkaError as exc:  # not worth holding anything up for
            log.warning("kafka.topic_first_skipped", topic=self.topic, error=repr(exc))
            return
        self._ends = {tp: end for tp, end in ends.items() if end > 0}
        if self._ends:
            consumer.pause(*others)
            self._paused = others
            log.info(
                "kafka.topic_first",
                topic=self.topic,
                partitions=len(self._ends),
                paused=len(others),
            )

    async def before_fetch(self) -> None:
        """Resumes the other topics once the first topic's positions reach their ends."""
        self._poll_paused = False
        if not self._paused:
            return
        consumer = self._consumer
        assert consumer is not None
        for tp, end in list(self._ends.items()):
            try:
                position = await consumer.position(tp)
            except IllegalStateError:  # no longer assigned: a rebalance is under way
                position = end
            if position >= end:
                del self._ends[tp]
        if not self._ends:
            self._resume("caught_up")
        self._poll_paused = bool(self._paused)

    def fetched(self, records: int) -> None:
        """After a poll: ``records`` came. None from a whole poll made with the other
        topics paused → resume them (see the module docstring); a poll that began before
        the assignment does not count."""
        if self._paused and self._poll_paused and records == 0:
            self._resume("nothing_fetched")

    def _resume(self, why: str) -> None:
        consumer = self._consumer
        assert consumer is not None
        assigned = consumer.assignment()
        consumer.resume(*(tp for tp in self._paused if tp in assigned))
        log.info("kafka.topic_first_done", topic=self.topic, why=why)
        self._paused = set()
        self._ends.clear()
