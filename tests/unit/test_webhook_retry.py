"""The retry schedule and verdicts (seed 004: 1 s, 2 s, 4 s … up to 30 s)."""

from __future__ import annotations

import random
from dataclasses import replace

from herald.services.webhooks.model import RetryPolicy
from herald.services.webhooks.retry import JITTER, backoff, decide, rate_room, reason_of

SEED = RetryPolicy(max_retries=3, initial_delay=1.0, backoff_multiplier=2.0, max_delay=30.0)


def test_backoff_doubles_within_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    for n, base in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)):
        for _ in range(50):
            assert base * (1 - JITTER) <= backoff(SEED, n, rng) <= base * (1 + JITTER)
    assert all(backoff(SEED, 10, rng) == 30.0 for _ in range(20))


def test_verdicts() -> None:
    assert decide(SEED, 1, 200, None, None).outcome == "delivered"
    retry = decide(SEED, 1, 500, None, None)
    assert (retry.outcome, retry.reason) == ("retry", "http_5xx")
    assert decide(SEED, 4, 500, None, None).outcome == "dead"  # 1 attempt + 3 retries
    assert decide(SEED, 2, None, "timeout", None).reason == "timeout"
    assert decide(SEED, 1, 410, None, None).outcome == "gone"
    assert decide(RetryPolicy(max_retries=0), 1, 500, None, None).outcome == "dead"


def test_retry_after_is_honoured_for_429_and_503_within_bounds() -> None:
    assert decide(SEED, 1, 429, None, 7.0).delay == 7.0
    assert decide(SEED, 1, 503, None, 99_999.0).delay == 3600.0
    assert decide(SEED, 1, 500, None, 7.0).delay <= 1.2  # only 429/503 carry it
    assert reason_of(429, None) == "http_429"
    assert reason_of(404, None) == "http_4xx"


def test_rate_room() -> None:
    assert rate_room(2, 120, 0, 0) == 2
    assert rate_room(2, 120, 2, 10) == 0
    assert rate_room(2, 120, 1, 119) == 1
    assert rate_room(0, 120, 50, 120) == 0
    assert rate_room(0, 0, 99, 99) > 1000  # no limit


BITRIX24 = RetryPolicy(max_retries=4, delays=(10.0, 30.0, 120.0, 600.0))


def test_a_fixed_schedule_is_followed_exactly_then_dead() -> None:
    """Seed 001: 429/503 from Bitrix24 → retries 10 s → 30 s → 2 min → 10 min → DLQ."""
    delays = [decide(BITRIX24, n, 503, None, None).delay for n in (1, 2, 3, 4)]
    assert delays == [10.0, 30.0, 120.0, 600.0]  # no jitter: the schedule as given
    assert decide(BITRIX24, 2, 429, None, None).reason == "http_429"
    assert decide(BITRIX24, 5, 503, None, None).outcome == "dead"
    assert decide(BITRIX24, 1, 429, None, 5.0).delay == 5.0  # Retry-After still wins


def test_with_retry_statuses_only_those_are_retried_and_the_rest_dead_at_once() -> None:
    """Seed 001: Bitrix24's 4xx means "correct the data" (retrying cannot help); only 429
    and 503 are retried."""
    policy = replace(BITRIX24, retry_statuses=(429, 503))
    refused = decide(policy, 1, 400, None, None)
    assert (refused.outcome, refused.reason, refused.exhausted) == ("dead", "http_400", False)
    assert "not retried: http_400" in refused.dead_letter_reason
    assert decide(policy, 1, 503, None, None).outcome == "retry"
    assert decide(policy, 1, 429, None, None).outcome == "retry"
    assert decide(policy, 1, None, "timeout", None).outcome == "retry"  # no status: retried
    assert decide(policy, 1, 410, None, None).outcome == "gone"
    exhausted = decide(policy, 5, 503, None, None)
    assert (exhausted.outcome, exhausted.dead_letter_reason) == (
        "dead",
        "retries exhausted: http_5xx",
    )
    assert decide(BITRIX24, 1, 400, None, None).outcome == "retry", "empty: every failure"
    # A status not retried on the last attempt is that, not "retries exhausted"
    last = decide(policy, 5, 400, None, None)
    assert "not retried: http_400" in last.dead_letter_reason


def test_a_resent_delivery_gets_one_attempt_whatever_it_had_before() -> None:
    # Its retries depended on its past: a delivered one resent and failing was retried
    # up to max_retries, one that had run out got one attempt
    for attempts_made in (2, 4, 9):
        failed = decide(SEED, attempts_made, 500, None, None, resent=True)
        assert (failed.outcome, failed.reason) == ("dead", "http_5xx")
        assert failed.dead_letter_reason.startswith("resent once (")
        assert decide(SEED, attempts_made, 200, None, None, resent=True).outcome == "delivered"
        assert decide(SEED, attempts_made, 410, None, None, resent=True).outcome == "gone"
