"""runtime.db.apply_isolating_refused: which items a consumer sets aside, and why;
runtime.db.until_taken: the one retry of a write whose offsets wait for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg
import pytest
from structlog.testing import capture_logs

from herald.runtime.db import apply_isolating_refused, refusal_reason, until_taken


class Ledger:
    """Applies numbers; fails as told for some of them."""

    def __init__(self, crash_on: int = -1, refuse: int = -1, unreachable_times: int = 0) -> None:
        self.applied: list[int] = []
        self.crash_on = crash_on
        self.refuse = refuse
        self.unreachable_times = unreachable_times

    async def apply(self, part: Sequence[int]) -> int:
        if self.unreachable_times:
            self.unreachable_times -= 1
            raise ConnectionRefusedError("PostgreSQL is down")
        if self.crash_on in part:
            raise KeyError("a case nobody foresaw")
        if self.refuse in part:
            raise asyncpg.DataError("invalid byte sequence")
        self.applied += part
        return len(part)


async def run(ledger: Ledger, items: list[int]) -> tuple[int, list[tuple[int, str]]]:
    set_aside: list[tuple[int, str]] = []

    async def refused(item: int, exc: BaseException) -> None:
        set_aside.append((item, refusal_reason(exc)))

    total = await apply_isolating_refused(
        items, ledger.apply, refused, failed_event="test.failed", first_delay=0, max_delay=0
    )
    return total, set_aside


async def test_an_item_that_crashes_its_application_is_set_aside_and_the_rest_applied() -> None:
    ledger = Ledger(crash_on=5)
    total, set_aside = await run(ledger, list(range(10)))
    assert total == 9
    assert sorted(ledger.applied) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert set_aside == [(5, "processing it failed: KeyError: 'a case nobody foresaw'")]


async def test_an_item_postgresql_refuses_is_set_aside_with_its_reason() -> None:
    ledger = Ledger(refuse=0)
    total, set_aside = await run(ledger, [0, 1, 2])
    assert (total, sorted(ledger.applied)) == (2, [1, 2])
    assert set_aside == [(0, "the database refused it: invalid byte sequence")]


async def test_an_unreachable_database_is_waited_for_and_nothing_set_aside() -> None:
    ledger = Ledger(unreachable_times=3)
    assert await run(ledger, [1, 2, 3]) == (3, [])
    assert ledger.applied == [1, 2, 3]


async def test_cancellation_is_not_an_unforeseen_error() -> None:
    async def cancelled(part: Sequence[int]) -> int:
        raise asyncio.CancelledError

    async def refused(item: int, exc: BaseException) -> None:
        raise AssertionError("nothing is set aside when the consumer is stopped")

    with pytest.raises(asyncio.CancelledError):
        await apply_isolating_refused(
            [1, 2], cancelled, refused, failed_event="x", first_delay=0, max_delay=0
        )


async def test_a_write_is_tried_again_while_the_database_is_away_each_failure_logged() -> None:
    ledger = Ledger(unreachable_times=4)
    with capture_logs() as logs:
        taken = await until_taken(
            lambda: ledger.apply([7]),
            failed_event="test.store_failed",
            first_delay=0.001,
            max_delay=0.004,
            level=logging.ERROR,
        )
    assert (taken, ledger.applied) == (1, [7])
    assert [(line["event"], line["log_level"], line["retry_in"]) for line in logs] == [
        ("test.store_failed", "error", 0.001),
        ("test.store_failed", "error", 0.002),
        ("test.store_failed", "error", 0.004),
        ("test.store_failed", "error", 0.004),
    ]
    assert logs[0]["error"] == "ConnectionRefusedError('PostgreSQL is down')"


@pytest.mark.parametrize(
    ("ledger", "raised"),
    [(Ledger(refuse=7), asyncpg.DataError), (Ledger(crash_on=7), KeyError)],
    ids=["refused data", "not a database error"],
)
async def test_a_write_that_retrying_cannot_help_is_raised_at_once(
    ledger: Ledger, raised: type[BaseException]
) -> None:
    with capture_logs() as logs, pytest.raises(raised):
        await until_taken(lambda: ledger.apply([7]), failed_event="x", first_delay=0, max_delay=0)
    assert logs == []
