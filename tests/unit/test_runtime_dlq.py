"""A dead letter's DLQ record is not lost while the producer is away or being replaced
(runtime.dlq.send_dead_letter, used by webhooks and dispatch; the integration tests
dead-letter through the real Kafka)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from herald.runtime import dlq


class FakeProducer:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failures:
            self.failures -= 1
            future.set_exception(KafkaTimeoutError())
        else:
            self.sent.append((topic, value))
            future.set_result(None)
        return future


def test_the_record_waits_for_a_producer_and_is_sent_again_until_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dlq, "RETRY_SECONDS", 0.001)
    producer = FakeProducer(failures=2)
    answers: list[FakeProducer | None] = [None, None, producer]  # away, then back

    def current() -> Any:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    assert asyncio.run(dlq.send_dead_letter(current, "dlq", b"body", b"k", []))
    assert producer.sent == [("dlq", b"body")], "sent once acknowledged, after two failures"


def test_it_gives_up_after_the_deadline_without_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlq, "RETRY_SECONDS", 0.001)
    monkeypatch.setattr(dlq, "WAIT_SECONDS", 0.02)
    # False, not an exception: the dead-letter row is stored anyway
    assert not asyncio.run(dlq.send_dead_letter(lambda: None, "dlq", b"body", b"k", []))


def test_without_a_bound_it_keeps_trying_past_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Kafka input's poison record: its offset is committed only once the DLQ has it
    monkeypatch.setattr(dlq, "RETRY_SECONDS", 0.001)
    monkeypatch.setattr(dlq, "MAX_RETRY_SECONDS", 0.002)
    monkeypatch.setattr(dlq, "WAIT_SECONDS", 0.0)
    producer = FakeProducer(failures=5)
    answers: list[FakeProducer | None] = [None, None, producer]

    def current() -> Any:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    assert asyncio.run(
        dlq.send_dead_letter(current, "dlq", b"body", b"k", [], until_acknowledged=True)
    )
    assert producer.sent == [("dlq", b"body")]


class SizeLimitedProducer:
    """Refuses records larger than ``limit`` bytes (value plus headers), as Kafka does."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[tuple[bytes | None, list[tuple[str, bytes]]]] = []

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any]
    ) -> asyncio.Future[None]:
        size = len(value or b"") + sum(len(k) + len(v) for k, v in headers)
        if size > self.limit:
            raise MessageSizeTooLargeError(f"{size} bytes")
        self.sent.append((value, headers))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def test_a_record_too_large_for_kafka_goes_without_its_value() -> None:
    producer = SizeLimitedProducer(limit=200)
    headers = [("ce_id", b"e1"), ("dlq-reason", b"not a job")]
    sent = asyncio.run(
        dlq.send_dead_letter(
            lambda: producer,
            "dlq",
            b"x" * 1000,
            b"k",
            headers,
            until_acknowledged=True,
        )
    )
    assert sent
    [(value, out)] = producer.sent
    assert value is None
    assert out == [*headers, ("dlq-value-omitted", b"1000 bytes, too large for the topic")]


def test_then_without_the_original_headers_and_then_it_gives_up() -> None:
    huge = [("x-big", b"y" * 500), ("dlq-reason", b"not a job")]
    producer = SizeLimitedProducer(limit=200)
    assert asyncio.run(dlq.send_dead_letter(lambda: producer, "dlq", b"v", b"k", huge))
    [(value, out)] = producer.sent
    assert value is None
    assert [k for k, _ in out] == ["dlq-reason", "dlq-value-omitted"]

    # nothing left to cut: False at once, not a retry until the deadline
    tiny = SizeLimitedProducer(limit=5)
    assert not asyncio.run(
        dlq.send_dead_letter(lambda: tiny, "dlq", b"v", b"k", huge, until_acknowledged=True)
    )


class HangingProducer:
    """A producer whose sends are never acknowledged (Kafka away, metadata pending)."""

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()


def test_a_send_kafka_never_answers_times_out_at_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The outbox's worker gives way after its bound (plus the wait for a queued
    # record's outcome) and keeps the record for later
    monkeypatch.setattr(dlq, "QUEUED_SECONDS", 0.05)

    async def attempt() -> tuple[str, float]:
        started = asyncio.get_running_loop().time()
        outcome = await dlq.try_dead_letter(_given(HangingProducer()), "dlq", b"v", b"k", [], 0.05)
        return outcome, asyncio.get_running_loop().time() - started

    outcome, took = asyncio.run(attempt())
    assert outcome == "timeout"
    assert took < 1.0


def test_a_record_refused_even_cut_down_is_reported_as_refused() -> None:
    class Refusing:
        async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[None]:
            raise MessageSizeTooLargeError()

    outcome = asyncio.run(
        dlq.try_dead_letter(_given(Refusing()), "dlq", b"v", b"k", [("h", b"x")], 1.0)
    )
    assert outcome == "refused"


def _given(producer: object) -> Any:
    """A producer getter answering ``producer``."""
    return lambda: producer


class SlowProducer:
    """Queues each record at once; Kafka acknowledges it ``after`` seconds later, as a
    producer does for a batch it holds while the broker is away."""

    def __init__(self, after: float) -> None:
        self.after = after
        self.queued = 0

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[None]:
        self.queued += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(self.after, future.set_result, None)
        return future


def test_a_queued_record_is_waited_for_not_given_up_and_sent_again() -> None:
    # The wait for the acknowledgement was cut at the deadline while the record stayed
    # queued: "timeout", the outbox sent it again, and Kafka got it twice once back
    producer = SlowProducer(after=0.2)

    async def scenario() -> str:
        return await dlq.try_dead_letter(_given(producer), "dlq", b"v", b"k", [], 0.05)

    assert asyncio.run(scenario()) == "sent"
    assert producer.queued == 1
