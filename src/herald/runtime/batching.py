"""Group commit: many callers' items written together, each caller awaiting its own result.

``submit(item)`` queues an item and waits; committer loops take whatever queued up
while the previous write ran (up to ``max_group``), hand it to ``write`` as one list
and give every caller its result. A group that fails with a data error is written
again one item at a time, so only the caller whose item is at fault hears of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import asyncpg
import structlog

from herald.runtime.db import CONNECTION_LOST

log = structlog.get_logger("herald.runtime.batching")

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class _Queued(Generic[T, R]):
    item: T
    done: asyncio.Future[R]


class GroupCommitter(Generic[T, R]):
    """See the module docstring; :meth:`run` is a worker of the service."""

    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        name: str,
        max_group: int = 1000,
        committers: int = 2,
        linger: float = 0.0,
        small_group: int = 16,
    ) -> None:
        """``write`` stores a group and returns one result per item, in order.

        With ``linger``, a group smaller than ``small_group`` waits that long for more
        callers first (a small group costs far more per item than a large one).
        """
        self._write = write
        self._name = name
        self._max_group = max_group
        self._committers = committers
        self._linger = linger
        self._small_group = small_group
        self._queue: asyncio.Queue[_Queued[T, R]] = asyncio.Queue()

    async def submit(self, item: T) -> R:
        """Queues ``item`` for the next group and waits for its result."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Queued(item, done))  # unbounded: never waits
        return await done

    async def run(self) -> None:
        """The committer loops, until cancelled."""
        await asyncio.gather(*(self._commit_loop() for _ in range(self._committers)))

    async def _commit_loop(self) -> None:
        while True:
            group = [await self._queue.get()]
            if self._linger and self._queue.qsize() < self._small_group:
                await asyncio.sleep(self._linger)
            while len(group) < self._max_group and not self._queue.empty():
                group.append(self._queue.get_nowait())
            live = [q for q in group if not q.done.cancelled()]
            try:
                results = await self._write([q.item for q in live])
            except asyncpg.PostgresError as exc:
                # Unreachable (or starting up: CannotConnectNowError is a PostgresError
                # but no PostgresConnectionError): each alone would fail the same way.
                if len(live) > 1 and not isinstance(exc, CONNECTION_LOST):
                    await self._write_one_by_one(live)
                else:
                    _fail(live, exc)
                continue
            except Exception as exc:
                _fail(live, exc)
                continue
            for q, result in zip(live, results, strict=True):
                if not q.done.done():
                    q.done.set_result(result)

    async def _write_one_by_one(self, queued: list[_Queued[T, R]]) -> None:
        for q in queued:
            try:
                [result] = await self._write([q.item])
            except Exception as exc:
                log.error("batching.item_failed", committer=self._name, error=repr(exc))
                _fail([q], exc)
            else:
                if not q.done.done():
                    q.done.set_result(result)


def _fail(queued: Sequence[_Queued[T, R]], exc: BaseException) -> None:
    for q in queued:
        if not q.done.done():
            q.done.set_exception(exc)
