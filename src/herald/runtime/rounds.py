"""The loop of a worker that sends what its service stored (alerts to ingest, dead-letter
records to Kafka) until the other side takes each: again at once while rounds get
through and more is left, backing off while nothing gets through, and otherwise waiting
to be woken, or POLL_SECONDS, so what a stopped replica left is taken over."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

from herald.runtime.db import DATABASE_ERRORS
from herald.runtime.wake import woken

log = structlog.get_logger("herald.rounds")
T = TypeVar("T")
RETRY_SECONDS = 1.0  # between rounds while nothing gets through
MAX_RETRY_SECONDS = 30.0
POLL_SECONDS = 30.0


FINISH_SECONDS = 5.0  # how long a stop waits for the round in flight


async def finished(round_: Coroutine[Any, Any, T], grace: float = FINISH_SECONDS) -> T:
    """Awaits ``round_``, which a cancellation (a graceful stop) does not cut short at
    once: a round cut between the other side's acknowledgement and its marks' commit
    would leave what it sent to be sent again. It gets ``grace`` seconds to finish (a
    round takes milliseconds; one stuck on a peer that is gone is cancelled then, and
    its records are sent again by the next process, as after a crash)."""
    task = asyncio.ensure_future(round_)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        _done, pending = await asyncio.wait({task}, timeout=grace)
        for stuck in pending:
            log.warning("rounds.cut_short", seconds=grace)
            stuck.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise


async def send_in_rounds(
    one_round: Callable[[], Coroutine[Any, Any, tuple[int, bool]]],
    wake: asyncio.Event,
    what: str,
) -> None:
    """Runs ``one_round`` (which answers: how many it sent, whether some are left) until
    cancelled; ``wake`` set means more was stored. A database error counts as a round
    that got nothing through (logged, ``what`` naming the worker)."""
    delay = RETRY_SECONDS
    while True:
        wake.clear()
        try:
            sent, left = await finished(one_round())
        except DATABASE_ERRORS as exc:
            log.warning("rounds.database_error", worker=what, error=repr(exc))
            sent, left = 0, True
        if left and not sent:  # the other side is away: back off
            await woken(wake, delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)
            continue
        delay = RETRY_SECONDS
        if not left:
            await woken(wake, POLL_SECONDS)
