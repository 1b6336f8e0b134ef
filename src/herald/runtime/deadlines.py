"""One timeout for many concurrent operations, enforced by a sweep instead of a timer each.

``asyncio.timeout`` starts and stops a loop timer per use (with uvloop, a libuv timer):
measured ~7 µs of a webhook attempt whose HTTP exchange costs ~65 µs. Here an operation
is an entry in an insertion-ordered dict and one task sweeps it every ``resolution``
seconds, cancelling the tasks whose deadline has passed; the operation then raises
TimeoutError, exactly as under ``asyncio.timeout`` (a cancellation from anyone else
still propagates as such). All operations share one duration, so the dict is in
deadline order and a sweep stops at the first entry not yet due. A deadline fires up to
``resolution`` late. The sweeper runs only while operations are open.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadlines:
    """``with deadlines.within():`` bounds a block of a task by ``seconds``."""

    def __init__(self, seconds: float, resolution: float) -> None:
        if not seconds > 0 or not resolution > 0:
            raise ValueError("seconds and resolution are positive")
        self.seconds = seconds
        self._resolution = resolution
        self._open: dict[_Within, float] = {}  # in deadline order
        self._sweeper: asyncio.Task[None] | None = None

    def within(self) -> _Within:
        """A context manager: the block raises TimeoutError once ``seconds`` have passed."""
        return _Within(self)

    def _opened(self, token: _Within) -> None:
        self._open[token] = asyncio.get_running_loop().time() + self.seconds
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._open:
                await asyncio.sleep(self._resolution)
                now = loop.time()
                late = []
                for token, deadline in self._open.items():
                    if deadline > now:
                        break
                    late.append(token)
                for token in late:
                    del self._open[token]
                    token.expire()
        finally:
            self._sweeper = None

    async def aclose(self) -> None:
        """Stops the sweeper (open blocks are then no longer bounded)."""
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)


class _Within:
    __slots__ = ("_cancelling", "_expired", "_owner", "_task")

    def __init__(self, owner: Deadlines) -> None:
        self._owner = owner
        self._expired = False

    def __enter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines are for code running in a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._owner._opened(self)

    def expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._owner._open.pop(self, None)
        # As asyncio.timeout: our cancellation becomes TimeoutError, unless the task
        # was also cancelled by someone else.
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
