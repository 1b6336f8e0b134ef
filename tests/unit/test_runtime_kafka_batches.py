"""runtime.kafka_batches: a topic whose partitions cannot be learnt holds up nothing."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from herald.runtime import kafka_batches
from herald.runtime.kafka_batches import BatchSender, OutRecord


class Producer:
    """Knows one topic; asking for any other waits as aiokafka does (its request
    timeout, tens of seconds) when the topic does not exist."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def partitions_for(self, topic: str) -> set[int]:
        self.asked.append(topic)
        if topic == "known":
            return {0, 1}
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    def create_batch(self) -> Any:
        class Batch:
            def append(self, **_: Any) -> object:
                return object()

        return Batch()

    async def send_batch(self, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_a_topic_that_does_not_exist_fails_its_records_fast_and_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka_batches, "METADATA_WAIT_SECONDS", 0.1)
    producer = Producer()
    sender = BatchSender()
    records = [
        OutRecord("known", b"k1", b"v", []),
        OutRecord("deleted", b"k2", b"v", []),
        OutRecord("known", b"k3", b"v", []),
    ]
    async with asyncio.timeout(5):  # not the minute the producer would wait
        errors = await sender.send(cast(Any, producer), records, ack_timeout=5)
    assert (errors[0], errors[2]) == (None, None)
    assert isinstance(errors[1], TimeoutError)
    assert "deleted" in str(errors[1])

    # The next rounds do not ask (and wait) for it again, for a while
    errors = await sender.send(cast(Any, producer), records, ack_timeout=5)
    assert isinstance(errors[1], TimeoutError)
    assert producer.asked.count("deleted") == 1
