"""A producer that can deliver nothing any more is noticed and replaced (the logic;
tests/integration/test_outages.py has the real broker restart)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaTimeoutError, OutOfOrderSequenceNumber

from herald.runtime.kafka import LateProducer
from herald.runtime.kafka_producer import Producer, broken


class FakeProducer:
    """Stands in for a started aiokafka producer."""

    def __init__(self) -> None:
        self.broken: BaseException | None = None
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True


def test_a_producer_is_broken_by_an_out_of_order_sequence_only() -> None:
    async def main() -> None:
        producer = Producer.__new__(Producer)  # no connection needed for the watch
        for error in (KafkaTimeoutError(), ValueError("x")):
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            producer._watch(future).set_exception(error)
            await asyncio.sleep(0)
            assert broken(producer) is None, "retriable and record errors do not break it"
        future = asyncio.get_running_loop().create_future()
        producer._watch(future).set_exception(OutOfOrderSequenceNumber())
        await asyncio.sleep(0)
        assert isinstance(broken(producer), OutOfOrderSequenceNumber)

    asyncio.run(main())


def test_late_producer_hands_out_none_while_a_broken_one_is_replaced() -> None:
    async def main() -> None:
        made: list[FakeProducer] = []

        def make() -> Any:
            made.append(FakeProducer())
            return made[-1]

        late = LateProducer(make, "test")
        await late.start()
        first = late.get()
        assert first is made[0]
        made[0].broken = OutOfOrderSequenceNumber()
        assert late.get() is None, "not handed out once broken"
        for _ in range(10):
            await asyncio.sleep(0)
        assert made[0].stopped
        assert late.get() is made[1], "a fresh producer in its place"
        await late.stop()
        assert made[1].stopped

    asyncio.run(main())


def test_a_replacement_whose_client_cannot_be_made_yet_is_tried_again() -> None:
    # make() raising (the CA file being rewritten) was outside the retry: the
    # replacement's task died unseen, and the service had no producer for good
    async def main() -> None:
        made: list[FakeProducer] = []
        failures = [FileNotFoundError(2, "No such file or directory")]

        def make() -> Any:
            if made and failures:
                raise failures.pop()
            made.append(FakeProducer())
            return made[-1]

        late = LateProducer(make, "test")
        await late.start()
        made[0].broken = OutOfOrderSequenceNumber()
        assert late.get() is None
        for _ in range(100):
            await asyncio.sleep(0.02)
            if late.get() is not None:
                break
        assert late.get() is made[1], "made once the file is back"
        await late.stop()

    asyncio.run(main())
