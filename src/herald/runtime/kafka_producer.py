"""The idempotent producer, and noticing when it can never deliver again.

aiokafka's idempotent producer can lose its place in a partition's sequence: a batch
that expires while the partition has no leader (Kafka restarting under load) is failed
after it was given a sequence number, so every later batch for that partition is
refused with ``OutOfOrderSequenceNumber``, for as long as the process lives
(aio-libs/aiokafka#1017). The Java client bumps its epoch and goes on; aiokafka does
not. :class:`Producer` remembers such an error as :attr:`Producer.broken`, and whoever
owns the producer replaces it with a fresh one (a new producer id starts new sequences).
Records that failed were never acknowledged, so their senders send them again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    OutOfOrderSequenceNumber,
    ProducerFenced,
)

# Errors after which a producer (its id and sequences) will not deliver anything again.
FATAL = (OutOfOrderSequenceNumber, ProducerFenced, InvalidProducerEpoch, InvalidProducerIdMapping)


class Producer(AIOKafkaProducer):  # type: ignore[misc]  # aiokafka is untyped
    """An ``AIOKafkaProducer`` that records the first error it cannot recover from."""

    broken: BaseException | None = None

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        return self._watch(await self._guard(super().send(*args, **kwargs)))

    async def send_batch(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        return self._watch(await self._guard(super().send_batch(*args, **kwargs)))

    async def _guard(self, sending: Any) -> asyncio.Future[Any]:
        try:
            future: asyncio.Future[Any] = await sending
        except FATAL as exc:  # the sender routine died of it: every send raises it now
            self.broken = self.broken or exc
            raise
        return future

    def _watch(self, future: asyncio.Future[Any]) -> asyncio.Future[Any]:
        future.add_done_callback(self._settled)
        return future

    def _settled(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and isinstance(future.exception(), FATAL):
            self.broken = self.broken or future.exception()


def broken(producer: AIOKafkaProducer) -> BaseException | None:
    """Why ``producer`` can deliver nothing any more, or None (any producer: one not
    made as a :class:`Producer` is never known to be broken)."""
    reason: BaseException | None = getattr(producer, "broken", None)
    return reason


async def abandon(producer: AIOKafkaProducer, why: BaseException) -> None:
    """Makes ``producer`` send nothing more, for good: its sender routine stops (the
    requests already on the wire are answered or time out first, within the producer's
    ``request_timeout_ms``), what it still holds fails with ``why``, and it counts as
    broken, so its owner replaces it.

    aiokafka's idempotent producer retries a batch for ever. A batch its caller gave up
    on (not acknowledged in time) would otherwise land later, after the records the
    caller has sent again since (through a new producer, or another process that took
    the work over), and a key's records would go back in time on the topic.
    """
    if isinstance(producer, Producer):
        producer.broken = producer.broken or why
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        await sender.close()
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is not None:
        accumulator.fail_all(why)
