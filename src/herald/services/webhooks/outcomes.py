"""What a delivery attempt did, recorded: the attempt's row in the delivery log, the
delivery's new state (delivered, a retry due, failed) and what it leads to (a dead
letter, a disabled webhook), group-committed.

An outcome is written only while the worker that made the attempt still holds the
delivery's claim, so an attempt whose lease ran out (and was made again elsewhere) is
not recorded twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

import asyncpg
import structlog

from herald.runtime.batching import GroupCommitter
from herald.runtime.db import DATA_REFUSED, DATABASE_ERRORS
from herald.services.webhooks.escalation import Escalation, Step
from herald.services.webhooks.http import AttemptResult
from herald.services.webhooks.retry import Verdict
from herald.services.webhooks.store import Q

log = structlog.get_logger("herald.webhooks.outcomes")
# An outcome the database did not take is written again after this, doubling up to the
# most, while the claim's lease has this margin left.
RECORD_RETRY_FIRST_SECONDS = 0.1
RECORD_RETRY_MAX_SECONDS = 2.0
RECORD_MARGIN_SECONDS = 1.0


class Outcome(NamedTuple):
    """What one attempt did, as recorded (the columns of ``record_outcomes``, in order;
    a tuple: the engine makes thousands a second)."""

    delivery_id: uuid.UUID
    number: int
    webhook_id: uuid.UUID
    started_at: datetime
    status_code: int | None
    error: str | None
    response_ms: int
    status: str  # pending (a retry is due at next_at), delivered or failed
    next_at: datetime | None
    retry_reason: str | None
    retry_after: float | None
    last_error: str | None
    last_response: str
    then: Step | None = None  # stored with the outcome (a dead letter, a disabled webhook)


OUTCOME_COLUMNS = len(Outcome._fields) - 1  # all but ``then``
_STATUS = {"delivered": "delivered", "retry": "pending"}  # any other verdict: failed


def outcome_of(
    row: asyncpg.Record,
    number: int,
    started: datetime,
    finished: datetime,
    result: AttemptResult,
    verdict: Verdict,
    then: Step | None,
) -> Outcome:
    """The outcome of attempt ``number`` of the claimed delivery ``row``, made from
    ``started`` until its response (or failure) was in at ``finished``. A retry's delay
    (a Retry-After too) counts from ``finished``: counted from ``started``, a slow or
    timing-out endpoint got its retries back to back."""
    status = _STATUS.get(verdict.outcome, "failed")
    pending = status == "pending"
    return Outcome(
        delivery_id=row["id"],
        number=number,
        webhook_id=row["webhook_id"],
        started_at=started,
        status_code=result.status_code,
        error=result.error,
        response_ms=round(result.elapsed * 1000),
        status=status,
        next_at=finished + timedelta(seconds=verdict.delay) if pending else None,
        retry_reason=verdict.reason or None,
        retry_after=verdict.delay if pending else None,
        last_error=result.detail or None,
        last_response=result.body[:1024],
        then=then,
    )


class OutcomeLog:
    """Records outcomes in groups for the worker ``worker``; :meth:`run` while the
    engine runs."""

    def __init__(self, pool: asyncpg.Pool, worker: str, escalation: Escalation) -> None:
        self._pool = pool
        self._worker = worker
        self._escalation = escalation
        # At full speed one statement records dozens, where a transaction each made
        # PostgreSQL the bottleneck. One committer, and a small group waits 3 ms for
        # more: groups of ~45 instead of ~23 at 7,500 deliveries/s, half the statements
        # (PostgreSQL's CPU per delivery -15%). An attempt's slot is free once its
        # response is in, so this costs no throughput.
        self._committer: GroupCommitter[Outcome, None] = GroupCommitter(
            self._write,
            name="outcomes",
            max_group=500,
            committers=1,
            linger=0.003,
            small_group=64,
        )

    async def run(self) -> None:
        """Writes submitted outcomes until cancelled."""
        await self._committer.run()

    async def submit(self, outcome: Outcome, lease_end: float | None = None) -> None:
        """Returns once ``outcome`` is committed. A database that fails (unreachable,
        failing over) is tried again, backing off, while the claim's lease (until loop
        time ``lease_end``) has time left: given up, the delivery comes due again when
        the lease runs out and is attempted once more, though its endpoint may have
        taken this attempt."""
        loop = asyncio.get_running_loop()
        delay = RECORD_RETRY_FIRST_SECONDS
        while True:
            try:
                await self._committer.submit(outcome)
                return
            except DATA_REFUSED:
                raise
            except DATABASE_ERRORS as exc:
                if lease_end is None or loop.time() + delay > lease_end - RECORD_MARGIN_SECONDS:
                    raise
                log.warning(
                    "outcome.record_retrying",
                    delivery_id=str(outcome.delivery_id),
                    error=repr(exc),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(2 * delay, RECORD_RETRY_MAX_SECONDS)

    async def _write(self, outcomes: Sequence[Outcome]) -> list[None]:
        """One statement for a group of outcomes (and the webhooks' last delivery time).
        What an outcome leads to (``then``) is stored in the same transaction, for the
        outcomes this worker recorded (it still held their claims)."""
        columns = list(zip(*outcomes, strict=True))[:OUTCOME_COLUMNS]
        steps = [o for o in outcomes if o.then is not None]
        if not steps:
            await self._pool.execute(Q.record_outcomes, self._worker, *columns)
        else:
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(Q.record_outcomes, self._worker, *columns)
                recorded = {r["id"] for r in rows}
                for o in steps:
                    if o.then is not None and o.delivery_id in recorded:
                        await o.then(conn)
            self._escalation.stored()
        return [None] * len(outcomes)
