"""runtime.wake.woken: a worker's sleep that a stop always ends."""

from __future__ import annotations

import asyncio

import pytest

from herald.runtime.wake import woken


async def test_woken_by_the_event_or_not_within_the_time() -> None:
    event = asyncio.Event()
    assert not await woken(event, 0.01)
    event.set()
    assert await woken(event, 10)


async def test_a_stop_arriving_as_the_loop_is_woken_still_stops_it() -> None:
    """asyncio.wait_for on Python 3.11 returned the wake-up and dropped the cancel: the
    loop went on, and the stop waited for it in vain (this test hung on it)."""
    event = asyncio.Event()

    async def worker_loop() -> None:
        while True:
            await woken(event, 10)
            event.clear()

    task = asyncio.create_task(worker_loop())
    await asyncio.sleep(0.01)  # asleep in woken
    event.set()
    task.cancel()  # in the same loop iteration as the wake-up
    async with asyncio.timeout(2):
        with pytest.raises(asyncio.CancelledError):
            await task
