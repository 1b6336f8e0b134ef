"""runtime.rounds.finished: a stop lets the round in flight finish, within a bound."""

from __future__ import annotations

import asyncio

import pytest

from herald.runtime.rounds import finished


async def test_a_cancelled_loop_lets_its_round_finish_first() -> None:
    marked: list[str] = []

    async def one_round() -> int:
        await asyncio.sleep(0.05)  # sent; now the marks
        marked.append("marked")
        return 1

    async def loop() -> None:
        while True:
            await finished(one_round())

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)  # in the middle of the first round
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert marked == ["marked"], "the round in flight completed; no other began"


async def test_a_round_stuck_on_a_peer_that_is_gone_is_cut_after_the_grace() -> None:
    reached_end = False

    async def stuck() -> int:
        nonlocal reached_end
        await asyncio.sleep(60)
        reached_end = True
        return 0

    task = asyncio.create_task(finished(stuck(), grace=0.05))
    await asyncio.sleep(0.01)
    task.cancel()
    async with asyncio.timeout(2):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not reached_end
