"""The webhooks intake's insert: what it retries and what it dead-letters (the database
is a fake here; the real one is in tests/integration/test_webhook_delivery.py)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from herald.webhooks.v1 import delivery_pb2

from herald.services.webhooks.intake import Intake, decode


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
