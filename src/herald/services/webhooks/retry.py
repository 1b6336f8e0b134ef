"""When to try a failed delivery again, and why; how many sends a rate limit allows. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass

from herald.services.webhooks.model import RetryPolicy

MAX_RETRY_AFTER = 3600.0  # a receiver's Retry-After is honoured up to an hour
JITTER = 0.2  # ±20 %, so that retries of many deliveries spread out


@dataclass(frozen=True, slots=True)
class Verdict:
    """What follows an attempt."""

    outcome: str  # "delivered", "retry", "dead" (retries exhausted) or "gone" (410)
    reason: str  # timeout, connection_error, http_5xx, http_429, http_4xx, ssrf_refused, …
    delay: float = 0.0  # seconds until the next attempt, when outcome is "retry"
    exhausted: bool = True  # "dead": after its retries (False: a status not retried)
    resent: bool = False  # "dead": the one attempt of a ResendDelivery failed

    @property
    def dead_letter_reason(self) -> str:
        """Why a "dead" delivery was given up, for its dead letter."""
        if self.resent:
            return f"resent once (ResendDelivery), failed again: {self.reason}"
        if self.exhausted:
            return f"retries exhausted: {self.reason}"
        return f"not retried: {self.reason} is not one of the webhook's retry_statuses"


DELIVERED = Verdict("delivered", "")  # the common verdict, made once


def reason_of(status_code: int | None, error: str | None) -> str:
    """The retry reason sent as X-Herald-Retry-Reason."""
    if error:
        return error
    if status_code is None:
        return "connection_error"
    if status_code in (429, 503) or status_code >= 500:
        return "http_429" if status_code == 429 else "http_5xx"
    return f"http_{status_code // 100}xx"


def backoff(policy: RetryPolicy, retry_number: int, rng: random.Random | None = None) -> float:
    """Delay before retry ``retry_number`` (1-based): initial × multiplier^(n-1), capped,
    with jitter. The seed's schedule: 1 s, 2 s, 4 s, … up to 30 s. A fixed schedule
    (``delays``) gives its n-th delay as it is: Bitrix24's 10 s → 30 s → 2 min → 10 min
    means those delays."""
    if policy.delays:
        return policy.delays[min(retry_number, len(policy.delays)) - 1]
    base = policy.initial_delay * policy.backoff_multiplier ** (retry_number - 1)
    jitter = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return min(policy.max_delay, base * jitter)


def decide(
    policy: RetryPolicy,
    attempts_made: int,
    status_code: int | None,
    error: str | None,
    retry_after: float | None,
    rng: random.Random | None = None,
    resent: bool = False,
) -> Verdict:
    """The verdict after attempt number ``attempts_made`` (1 = the first). ``resent``:
    the attempt a ResendDelivery asked for, one attempt, not retried (else a resend's
    retries depended on how many attempts the delivery had had)."""
    if error is None and status_code is not None and 200 <= status_code < 300:
        return DELIVERED
    reason = reason_of(status_code, error)
    if status_code == 410:
        return Verdict("gone", "http_410")
    if resent:
        return Verdict("dead", reason, resent=True)
    if (
        policy.retry_statuses
        and error is None
        and status_code is not None
        and status_code not in policy.retry_statuses
    ):
        return Verdict("dead", f"http_{status_code}", exhausted=False)
    if attempts_made > policy.max_retries:
        return Verdict("dead", reason)
    delay = backoff(policy, attempts_made, rng)
    if status_code in (429, 503) and retry_after is not None:
        delay = min(max(retry_after, 0.0), MAX_RETRY_AFTER)
    return Verdict("retry", reason, delay)


def rate_room(per_second: int, per_minute: int, last_second: int, last_minute: int) -> int:
    """How many more sends the limits allow now (0 = a limit is not set)."""
    rooms = []
    if per_second:
        rooms.append(per_second - last_second)
    if per_minute:
        rooms.append(per_minute - last_minute)
    return max(0, min(rooms)) if rooms else 1 << 30
