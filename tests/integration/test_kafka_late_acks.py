"""Records Kafka did not acknowledge in time are given up for good: the producer that
holds them is abandoned before the caller hears of it, so none of them lands on the
topic later, after what the caller has sent again since (aiokafka's idempotent producer
would otherwise retry them for ever). Against the real broker."""

from __future__ import annotations

import asyncio

import pytest

from herald.runtime.kafka import make_producer, replaced_if_broken
from herald.runtime.kafka_batches import BatchSender, OutRecord
from herald.runtime.kafka_producer import broken
from tests.conftest import Infra
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration


async def test_records_given_up_on_never_land_later(infra: Infra, topic: str) -> None:
    settings = infra.kafka_settings()
    # A second's linger: the batch is still held by the producer when it is given up on.
    producer = make_producer(settings, linger_ms=1000)
    await producer.start()
    try:
        sender = BatchSender()
        await producer.partitions_for(topic)  # the topic exists before the clock starts
        records = [OutRecord(topic, b"k", f"v{n}".encode(), []) for n in range(3)]
        errors = await sender.send(producer, records, ack_timeout=0.05)
        assert all(isinstance(e, TimeoutError) for e in errors), errors
        await asyncio.sleep(2)  # past the linger: an abandoned batch would be out by now
    finally:
        await producer.stop()
    assert await read_topic(settings, topic, 1, timeout=3) == []
    assert broken(producer) is not None, "its owner replaces it"


async def test_two_sends_given_up_at_once_share_one_abandonment(infra: Infra, topic: str) -> None:
    # Two late batches on one producer (dispatch overlaps two; a relay may run loops
    # side by side): the second abandonment cancelled the sender again mid-way, both
    # callers got CancelledError (their worker ended silently) and the records' futures
    # were never resolved
    settings = infra.kafka_settings()
    producer = make_producer(settings, linger_ms=1000)
    await producer.start()
    sender = BatchSender()
    await producer.partitions_for(topic)
    first = await sender.start(producer, [OutRecord(topic, b"a", b"1", [])])
    second = await sender.start(producer, [OutRecord(topic, b"b", b"2", [])])
    errors = await asyncio.gather(first.wait(0.05), second.wait(0.05))
    assert all(isinstance(e, TimeoutError) for e in errors[0] + errors[1]), errors
    replacement = await replaced_if_broken(producer, lambda: make_producer(settings), "test")
    try:
        assert replacement is not producer
        assert await sender.send(replacement, [OutRecord(topic, b"c", b"3", [])], 10) == [None]
    finally:
        await replacement.stop()
    await asyncio.sleep(1.5)  # past the linger
    values = [r.value for r in await read_topic(settings, topic, 1, timeout=3)]
    assert values == [b"3"], "only what the replacement sent"
