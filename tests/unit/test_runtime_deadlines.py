"""runtime.deadlines: one sweep bounds many blocks, as asyncio.timeout would."""

from __future__ import annotations

import asyncio
import time

import pytest

from herald.runtime.deadlines import Deadlines


async def test_a_block_past_its_deadline_raises_timeout_error() -> None:
    deadlines = Deadlines(0.2, resolution=0.02)
    started = time.monotonic()
    with pytest.raises(TimeoutError), deadlines.within():
        await asyncio.sleep(5)
    assert 0.19 < time.monotonic() - started < 0.5
    # The cancellation was ours and is spent: the task goes on awaiting normally.
    await asyncio.sleep(0.05)
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_blocks_in_time_are_not_touched_and_many_overrun_together() -> None:
    deadlines = Deadlines(0.3, resolution=0.02)

    async def block(seconds: float) -> str:
        try:
            with deadlines.within():
                await asyncio.sleep(seconds)
        except TimeoutError:
            return "timeout"
        await asyncio.sleep(0.4)  # past the deadline, outside the block: not cancelled
        return "done"

    results = await asyncio.gather(*(block(0.01 if i % 2 else 2) for i in range(200)))
    assert results.count("done") == 100
    assert results.count("timeout") == 100


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = Deadlines(10, resolution=0.02)

    async def block() -> None:
        with deadlines.within():
            await asyncio.sleep(5)

    task = asyncio.create_task(block())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelled_by_a_stop_as_the_deadline_passes_still_stops() -> None:
    """Both at once: the stop wins, as under asyncio.timeout."""
    deadlines = Deadlines(10, resolution=0.01)
    started = asyncio.Event()

    async def block() -> None:
        with deadlines.within():
            started.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(block())
    await started.wait()
    [token] = deadlines._open
    token.expire()  # what the sweep does, and a stop in the same step
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _sweeping(deadlines: Deadlines) -> bool:
    return deadlines._sweeper is not None


async def test_the_sweeper_runs_only_while_blocks_are_open() -> None:
    deadlines = Deadlines(1, resolution=0.01)
    with deadlines.within():
        await asyncio.sleep(0)
        assert _sweeping(deadlines)
    await asyncio.sleep(0.05)
    assert not _sweeping(deadlines)
    with deadlines.within():  # and starts again
        await asyncio.sleep(0)
        assert _sweeping(deadlines)
    await deadlines.aclose()
    assert not _sweeping(deadlines)


def test_the_duration_and_resolution_are_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Deadlines(0, resolution=0.1)
    with pytest.raises(ValueError, match="positive"):
        Deadlines(1, resolution=float("nan"))
