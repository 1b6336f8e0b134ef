"""The delivery engine never runs two attempts of one delivery at once: a delivery
claimed again while its attempt here runs is not started a second time, and one that
intake claimed for it but that waited past what its lease leaves room for is left to
the lease (claimed again once it runs out) rather than started beside such a claim.
And an attempt's outcome is not lost to a database failing over while its claim holds:
it is written again (else the delivery would be posted once more)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest
from structlog.testing import capture_logs

from herald.services.webhooks.engine import OFFER_MARGIN_SECONDS, Engine
from herald.services.webhooks.outcomes import RECORD_MARGIN_SECONDS, OutcomeLog

TIMEOUT = 1.0
LEASE = TIMEOUT + 30


class _Client:
    timeout = TIMEOUT


def engine_counting() -> tuple[Engine, list[uuid.UUID], asyncio.Event]:
    """An engine (no database: its attempts are stand-ins) and the deliveries its
    attempts were started for; the attempts end when the event is set."""
    engine = Engine(
        cast("asyncpg.Pool", None),
        cast("Any", _Client()),
        cast("Any", None),
        cast("Any", None),
        concurrency=8,
        lease_seconds=LEASE,
    )
    started: list[uuid.UUID] = []
    done = asyncio.Event()

    async def attempt(
        row: Any, posted: Any = None, lease_end: Any = None, recorded: Any = None
    ) -> None:
        started.append(row["id"])
        await done.wait()

    engine.attempt = attempt  # type: ignore[method-assign]
    return engine, started, done


def delivery() -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "webhook_id": uuid.uuid4(),
        "tenant": "acme",
        "slow": False,
        "url": "http://127.0.0.1:9/hook",
        "activated_at": datetime.now(UTC),
    }


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_delivery_claimed_again_while_its_attempt_runs_is_not_started_twice() -> None:
    engine, started, done = engine_counting()
    row = delivery()
    lease_end = asyncio.get_running_loop().time() + LEASE
    engine._start(cast("asyncpg.Record", row), lease_end)
    engine._start(cast("asyncpg.Record", row), lease_end)  # the same delivery, claimed again
    await settle()
    assert started == [row["id"]]
    done.set()
    await settle()
    engine._start(cast("asyncpg.Record", row), lease_end)  # its attempt over: a retry may
    await settle()
    assert started == [row["id"], row["id"]]


async def test_a_delivery_claimed_again_once_its_outcome_is_recorded_is_started() -> None:
    # A retry due at once (Retry-After: 0) claimed while its first attempt was still
    # checking whether to disable the webhook: not started, and left claimed until its
    # lease ran out (~40 s late). And the first attempt ending must not make the second
    # one look finished (a third would then run beside it)
    engine, started, _ = engine_counting()
    ends = [asyncio.Event(), asyncio.Event(), asyncio.Event()]

    async def attempt(
        row: Any, posted: Any = None, lease_end: Any = None, recorded: Any = None
    ) -> None:
        n = len(started)
        started.append(row["id"])
        if n == 0 and recorded is not None:
            recorded()  # committed: the delivery is due again, unclaimed
        await ends[n].wait()  # what follows the outcome (failing_since, disable)

    engine.attempt = attempt  # type: ignore[method-assign]
    row = delivery()
    lease_end = asyncio.get_running_loop().time() + LEASE

    def claimed() -> None:
        engine._start(cast("asyncpg.Record", row), lease_end)

    claimed()
    await settle()
    claimed()  # claimed again: a new attempt
    await settle()
    assert started == [row["id"], row["id"]]
    ends[0].set()  # the first attempt ends; the second runs on
    await settle()
    claimed()  # claimed once more while the second runs: not started beside it
    await settle()
    assert len(started) == 2
    ends[1].set()
    await settle()
    claimed()  # the second over: a retry may
    await settle()
    assert len(started) == 3
    ends[2].set()
    await settle()


async def test_an_offered_delivery_past_its_start_by_time_is_left_to_its_lease() -> None:
    engine, started, done = engine_counting()
    fresh, stale = delivery(), delivery()
    now = asyncio.get_running_loop().time()
    engine.offer([cast("asyncpg.Record", stale)])
    # Offered so long ago that its lease leaves less than an attempt and its recording.
    engine._offered[0] = (engine._offered[0][0], now + TIMEOUT + OFFER_MARGIN_SECONDS - 1)
    engine.offer([cast("asyncpg.Record", fresh)])
    assert engine._offered[1][1] >= now + LEASE
    with capture_logs() as logs:
        engine._start_offered(8, now)
    await settle()
    assert started == [fresh["id"]]
    [expired] = [e for e in logs if e["event"] == "engine.offers_expired"]
    assert expired["deliveries"] == 1
    done.set()
    await settle()


class _FailingCommitter:
    """Fails its first ``failures`` writes as a database failing over does."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def submit(self, outcome: Any) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")


def outcome_log(failures: int) -> tuple[OutcomeLog, _FailingCommitter]:
    log = OutcomeLog(cast("asyncpg.Pool", None), "worker-x", cast("Any", None))
    committer = _FailingCommitter(failures)
    log._committer = committer  # type: ignore[assignment]
    return log, committer


OUTCOME = cast("Any", SimpleNamespace(delivery_id=uuid.uuid4()))


async def test_an_outcome_the_database_fails_to_take_is_written_again_within_the_lease() -> None:
    log, committer = outcome_log(failures=2)
    with capture_logs() as logs:
        await log.submit(OUTCOME, asyncio.get_running_loop().time() + 30)
    assert committer.calls == 3
    assert [e["event"] for e in logs] == ["outcome.record_retrying"] * 2


async def test_an_outcome_is_given_up_when_the_lease_has_no_time_left() -> None:
    log, committer = outcome_log(failures=100)
    lease_end = asyncio.get_running_loop().time() + RECORD_MARGIN_SECONDS + 0.5
    with pytest.raises(asyncpg.exceptions.ConnectionDoesNotExistError):
        await log.submit(OUTCOME, lease_end)
    assert 2 <= committer.calls <= 4  # 0.1 s, 0.2 s, … within the half second
    assert asyncio.get_running_loop().time() < lease_end - RECORD_MARGIN_SECONDS + 0.1
