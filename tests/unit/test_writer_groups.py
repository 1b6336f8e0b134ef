"""Group commit: calls share a transaction; one item's database error fails only it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from herald.services.ingest import envelope
from herald.services.ingest.dedup import Accepted, Outcome
from herald.services.ingest.outbox import PendingEvent, make_pending
from herald.services.ingest.writer import EventWriter
from tests.fixtures.seeds import USER_REGISTERED


def pending(event_id: str) -> PendingEvent:
    doc = json.loads(USER_REGISTERED)
    doc["event_id"] = event_id
    event, _ = envelope.parse_json(json.dumps(doc))
    return make_pending(event, "t", {}, None, "a")


class FakeWriter(EventWriter):
    """Records each transaction's items; a transaction holding "poison" fails."""

    def __init__(self) -> None:
        super().__init__(pool=None, committers=1)  # type: ignore[arg-type]
        self.transactions: list[list[str]] = []

    async def write(self, items: Sequence[PendingEvent]) -> list[Outcome]:
        ids = [i.event.id for i in items]
        self.transactions.append(ids)
        await asyncio.sleep(0.01)
        if "poison" in ids:
            raise asyncpg.DataError("invalid input for one row")
        return [Accepted(i, False) for i in ids]


async def test_concurrent_calls_are_group_committed_and_a_poison_item_fails_alone() -> None:
    writer = FakeWriter()
    runner = asyncio.create_task(writer.run())
    try:
        first = asyncio.ensure_future(writer.submit(pending("e0")))
        await asyncio.sleep(0.001)  # e0's transaction is running; the rest queue up
        ids = ["e1", "e2", "poison", "e3"]
        results: list[Any] = await asyncio.gather(
            *(writer.submit(pending(i)) for i in ids), return_exceptions=True
        )
        assert await first == Accepted("e0", False)
    finally:
        runner.cancel()
    assert writer.transactions[0] == ["e0"]
    assert writer.transactions[1] == ids  # one transaction carried all four
    assert writer.transactions[2:] == [[i] for i in ids]  # then one by one
    assert [r for r in results if isinstance(r, Accepted)] == [
        Accepted("e1", False),
        Accepted("e2", False),
        Accepted("e3", False),
    ]
    assert isinstance(results[2], asyncpg.DataError)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.ConnectionFailureError("gone"),
        # PostgreSQL starting up: a PostgresError, not a PostgresConnectionError
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    ],
)
async def test_a_connection_error_fails_the_group_without_retrying_item_by_item(
    error: Exception,
) -> None:
    class Down(FakeWriter):
        async def write(self, items: Sequence[PendingEvent]) -> list[Outcome]:
            self.transactions.append([i.event.id for i in items])
            raise error

    writer = Down()
    runner = asyncio.create_task(writer.run())
    try:
        results = await asyncio.gather(
            *(writer.submit(pending(f"e{i}")) for i in range(3)), return_exceptions=True
        )
    finally:
        runner.cancel()
    assert all(r is error for r in results)
    assert len(writer.transactions) == 1
