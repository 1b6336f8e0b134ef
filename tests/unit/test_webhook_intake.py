"""The webhooks intake's insert: what it retries and what it dead-letters (the database
is a fake here; the real one is in tests/integration/test_webhook_delivery.py)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import ConsumerRecord
from herald.webhooks.v1 import delivery_pb2

from herald.runtime import dlq
from herald.services.webhooks.intake import NAMESPACE, Intake, decode, delivery_id


class FakePool:
    """Raises the given errors on the first fetches, then answers with no rows."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return []


def _job() -> bytes:
    return delivery_pb2.DeliveryJob(
        job_id="j1", webhook_id=str(uuid.uuid4()), event_id="e1", event_type="message.created"
    ).SerializeToString()


def _intake(pool: FakePool) -> Intake:
    return Intake(pool, lambda: None, lambda: None, lambda: None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        ConnectionResetError("connection reset"),
    ],
)
async def test_a_transient_database_error_is_retried_not_raised(error: Exception) -> None:
    # A deadlock with a replica inserting the same jobs during a rebalance had crashed
    # the intake, and with it the service
    pool = FakePool(error)
    assert await _intake(pool)._insert([decode(_job())], [object()]) == 0
    assert pool.calls == 2


class RefusingProducer:
    """Kafka refuses the first ``failures`` sends (no acknowledgement), then takes them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, bytes | None, dict[str, bytes]]] = []

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any]
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failures:
            self.failures -= 1
            future.set_exception(KafkaTimeoutError())
        else:
            self.sent.append((topic, value, dict(headers)))
            future.set_result(None)
        return future


async def test_a_poison_record_waits_for_the_dlq_to_take_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An unacknowledged DLQ send used to escape take() and stop the service; the offset
    # must still wait until the DLQ has the record
    monkeypatch.setattr(dlq, "RETRY_SECONDS", 0.001)
    producer = RefusingProducer(failures=3)
    pool = FakePool()
    intake = Intake(pool, lambda: None, lambda: producer, lambda: None, dlq_topic="dlq")  # type: ignore[arg-type]
    record = ConsumerRecord("herald.deliveries", 2, 7, 0, 0, b"k", b"not a job", None, 1, 9, [])
    assert await intake.take([record]) == 0
    assert [(t, v) for t, v, _ in producer.sent] == [("dlq", b"not a job")]
    headers = producer.sent[0][2]
    assert headers["dlq-offset"] == b"7"
    assert headers["dlq-reason"].startswith(b"not a herald.webhooks.v1.DeliveryJob")
    assert pool.calls == 0


@pytest.mark.parametrize(
    "job_id", ["j1", "", "é€😀/with/slashes", "x" * 500, str(uuid.uuid4()).upper()]
)
def test_a_delivery_id_is_uuid5_of_webhook_and_job(job_id: str) -> None:
    """The fast path computes what uuid.uuid5 does; ids stored before it must match."""
    webhook = str(uuid.uuid4())
    expected = uuid.uuid5(NAMESPACE, f"{webhook}/{job_id}")
    assert delivery_id(webhook, job_id) == expected
    if job_id:
        job = delivery_pb2.DeliveryJob(
            job_id=job_id, webhook_id=webhook, event_id="e1", event_type="message.created"
        )
        assert uuid.UUID(decode(job.SerializeToString()).id) == expected


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"job_id": ""}, "DeliveryJob without job_id"),
        ({"event_id": "", "event_type": ""}, "DeliveryJob without event_id, event_type"),
        ({"webhook_id": "not-a-uuid"}, "webhook_id 'not-a-uuid' is not a UUID"),
        ({"event_type": "a\x00b"}, "NUL character"),
        ({"context": {"k": "v\x00"}}, "NUL character"),
        ({"data": b"{nope"}, "data is not JSON"),
    ],
)
def test_a_job_that_cannot_be_delivered_says_why(change: dict[str, Any], reason: str) -> None:
    fields: dict[str, Any] = {
        "job_id": "j1",
        "webhook_id": str(uuid.uuid4()),
        "event_id": "e1",
        "event_type": "message.created",
        "data": b"{}",
    }
    job = delivery_pb2.DeliveryJob(**(fields | change))
    with pytest.raises(ValueError, match=reason):
        decode(job.SerializeToString())
