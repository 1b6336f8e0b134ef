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
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    OutOfOrderSequenceNumber,
    ProducerFenced,
)

log = structlog.get_logger("herald.kafka")

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
    broken, so its owner replaces it. Callers at once share one abandonment, which a
    caller's cancellation does not cut short.

    aiokafka's idempotent producer retries a batch for ever. A batch its caller gave up
    on (not acknowledged in time) would otherwise land later, after the records the
    caller has sent again since (through a new producer, or another process that took
    the work over), and a key's records would go back in time on the topic. (A request
    the client gave up on may still be appended by a broker that was only slow; that
    cannot be taken back.)
    """
    if isinstance(producer, Producer):
        producer.broken = producer.broken or why
    task: asyncio.Future[None] | None = getattr(producer, _ABANDONING, None)
    if task is None:
        task = asyncio.ensure_future(_abandon(producer, why))
        setattr(producer, _ABANDONING, task)
    await asyncio.shield(task)


async def abandoned(producer: AIOKafkaProducer) -> None:
    """Returns once an abandonment of ``producer`` under way (if any) is over: stopping
    it meanwhile would cancel its sender a second time."""
    task: asyncio.Future[None] | None = getattr(producer, _ABANDONING, None)
    if task is not None:
        await asyncio.shield(task)


_ABANDONING = "_herald_abandoning"


async def _abandon(producer: AIOKafkaProducer, why: BaseException) -> None:
    sender = getattr(producer, "_sender", None)
    routine = getattr(sender, "sender_task", None)
    try:
        if routine is not None and not routine.done():
            routine.cancel()  # once: it then waits for its requests on the wire
            await asyncio.wait([routine])
    finally:
        accumulator = getattr(producer, "_message_accumulator", None)
        if accumulator is not None:
            _fail_held(accumulator, why)


def _fail_held(accumulator: Any, why: BaseException) -> None:
    """Fails every batch ``accumulator`` still holds. A batch sent, then queued again
    for a retry, left the accumulator's set of pending batches, from which failing it
    removes it again (aiokafka then logs a KeyError per batch): it is put back first."""
    pending = getattr(accumulator, "_pending_batches", None)
    batches = getattr(accumulator, "_batches", {})
    if isinstance(pending, set):
        for queue in batches.values():
            pending.update(b for b in queue if getattr(b, "retry_count", 0) > 0)
    accumulator.fail_all(why)


_ABANDONINGS: set[asyncio.Future[None]] = set()  # kept referenced while they run


@contextlib.asynccontextmanager
async def abandoned_if_session_lost(
    session: Any, producer: Callable[[], AIOKafkaProducer | None], what: str
) -> AsyncIterator[None]:
    """While the block runs, ``session`` (an asyncpg connection whose transaction holds
    the locks that make this sender the only one) closing abandons ``producer()``.

    A session that ends (terminated, a failover, idle_in_transaction_session_timeout)
    frees its locks while the records sent under them may still be on their way;
    another replica then sends the same rows and newer ones of their keys, and the
    first copies would land after those (a key's records going back in time)."""

    def lost(_session: object) -> None:
        current = producer()
        if current is None:
            return
        log.warning("relay.session_lost", relay=what, detail="its locks are gone: abandoned")
        task = asyncio.ensure_future(abandon(current, ConnectionError(f"{what}: session lost")))
        _ABANDONINGS.add(task)
        task.add_done_callback(_ABANDONINGS.discard)

    session.add_termination_listener(lost)
    try:
        yield
    finally:
        # A pool's connection lost is detached from its proxy, which then refuses the
        # call: that error would hide the one the round raised.
        with contextlib.suppress(asyncpg.InterfaceError):
            session.remove_termination_listener(lost)
