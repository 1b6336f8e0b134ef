"""Blocking work (reading a file) off the event loop, in a daemon thread: unlike
``asyncio.to_thread``, a call that never returns (a file on a hung network mount) does
not hold up the process's exit, which waits for the default executor's threads."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar, cast

T = TypeVar("T")


async def in_daemon_thread(work: Callable[[], T], name: str = "off-loop") -> T:
    """``work()``'s result (or exception), computed in a daemon thread of its own."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # cancelled meanwhile: nobody waits
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(cast("T", result))  # work() returned it

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work()
        except BaseException as exc:  # raised again in the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done
