"""Waiting for an event to be set, at most a while: the sleep of every worker loop.

``asyncio.wait_for(event.wait(), t)`` loses a cancellation on Python 3.11 when the
event is set in the same loop iteration as the cancel (the wait's result is returned
and the CancelledError dropped, CPython gh-86296, fixed by 3.12's rewrite on
``asyncio.timeout``): the task, asked to stop, went on looping, and a stop waited its
full bound for a worker that never ended (seen as "webhooks left running" in a test
session, Engine.run 'cancelling' in wait_for). ``asyncio.timeout`` keeps it.
"""

from __future__ import annotations

import asyncio


async def woken(event: asyncio.Event, seconds: float) -> bool:
    """Waits until ``event`` is set (True) or ``seconds`` pass (False)."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
