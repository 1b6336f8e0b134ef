"""Abandoning a producer (kafka_producer.abandon) while its requests are on the wire,
from two callers at once, against aiokafka's own sender and accumulator with a broker
that hangs (a client stand-in: no network). Each caller returns once the requests in
flight are over, and every record the producer held fails: none is left pending for
ever, and no caller sees CancelledError (its worker would end without a word)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import RequestTimedOutError
from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.producer.sender import Sender
from aiokafka.structs import TopicPartition

from herald.runtime.kafka_producer import abandon, abandoned

HUNG_SECONDS = 0.3


class _Cluster:
    def leader_for_partition(self, tp: TopicPartition) -> int:
        return 0


class _HungBroker:
    """Answers every produce request with a timeout, after a while."""

    api_version = (2, 8)

    async def send(self, node: int, request: Any) -> Any:
        await asyncio.sleep(HUNG_SECONDS)
        raise RequestTimedOutError()

    async def _maybe_wait_metadata(self) -> None:
        return None

    def force_metadata_update(self) -> asyncio.Future[bool]:
        done = asyncio.get_running_loop().create_future()
        done.set_result(True)
        return done


class _Producer:
    """What abandon() reads of an AIOKafkaProducer."""

    def __init__(self, sender: Sender, accumulator: MessageAccumulator) -> None:
        self._sender = sender
        self._message_accumulator = accumulator


async def test_two_callers_abandoning_a_producer_at_once_both_return() -> None:
    accumulator = MessageAccumulator(_Cluster(), 16384, 0, 30, linger_ms=0)
    sender = Sender(
        _HungBroker(),
        acks=-1,
        txn_manager=None,
        message_accumulator=accumulator,
        retry_backoff_ms=50,
        request_timeout_ms=int(HUNG_SECONDS * 1000),
    )
    await sender.start()
    producer = _Producer(sender, accumulator)
    records = [
        await accumulator.add_message(TopicPartition("t", p), b"k", b"v", timeout=5) for p in (0, 1)
    ]
    await asyncio.sleep(0.05)  # the requests are on the wire
    first = asyncio.ensure_future(abandon(producer, TimeoutError("late a")))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(abandon(producer, TimeoutError("late b")))
    async with asyncio.timeout(5):
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        await abandoned(producer)
    assert list(outcomes) == [None, None]
    assert sender.sender_task.done()
    await asyncio.sleep(0)
    assert all(r.done() and isinstance(r.exception(), TimeoutError) for r in records)
