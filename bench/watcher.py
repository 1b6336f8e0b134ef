"""A consumer that notes when each event (by ``ce_id``) first shows up on a topic."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import AIOKafkaConsumer

from herald.runtime import kafka
from herald.runtime.settings import KafkaSettings


class TopicWatcher:
    """Reads ``topic`` from the beginning in the background.

    ``seen`` maps each ce_id to the ``time.perf_counter()`` of the fetch that
    brought it first; ``records`` counts every record (repeats included).
    """

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic,
            **kafka.connection_options(settings),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.seen: dict[str, float] = {}
        self.records = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connects and starts reading."""
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="watcher")

    async def stop(self) -> None:
        """Stops reading and disconnects."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for part in batch.values():
                self.records += len(part)
                for record in part:
                    for name, value in record.headers:
                        if name == "ce_id":
                            self.seen.setdefault(value.decode(), now)
                            break
            if batch:
                self._changed.set()

    @property
    def unique(self) -> int:
        """Distinct events seen so far."""
        return len(self.seen)

    async def wait_for(self, count: int, within: float) -> float:
        """Waits until ``count`` distinct events were seen; returns the
        ``perf_counter`` time of the fetch that completed them."""
        deadline = time.perf_counter() + within
        while self.unique < count:
            if self._task is not None and self._task.done():
                self._task.result()
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"saw {self.unique} of {count} events within {within} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        return max(self.seen.values())
