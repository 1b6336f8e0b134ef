"""Waiting for a log line that a worker writes in the background."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

Entry = MutableMapping[str, Any]


async def logged(logs: list[Entry], event: str, within: float = 5.0) -> Entry:
    """The last entry of ``logs`` (``capture_logs()``) for ``event``, once there is
    one; fails after ``within`` seconds."""
    step = 0.02
    for _ in range(int(within / step)):
        if found := [entry for entry in logs if entry["event"] == event]:
            return found[-1]
        await asyncio.sleep(step)
    raise AssertionError(f"no {event} within {within} s: {[e['event'] for e in logs]}")
