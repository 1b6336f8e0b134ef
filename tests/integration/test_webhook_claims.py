"""claim_due against a real PostgreSQL: the oldest due deliveries of active webhooks
without rate limits, each claimed once, whatever the backlog looks like."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from herald.runtime import db
from herald.services.webhooks.app import MIGRATIONS
from herald.services.webhooks.outcomes import OUTCOME_COLUMNS, Outcome
from herald.services.webhooks.store import Q

pytestmark = pytest.mark.integration


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    await db.migrate(connection, db.read_migrations("webhooks", MIGRATIONS))
    yield connection
    await connection.close()


async def _webhook(
    conn: asyncpg.Connection, active: bool = True, per_second: int = 0, tenant: str = "acme"
) -> uuid.UUID:
    hook = uuid.uuid4()
    await conn.execute(
        """INSERT INTO webhooks.webhooks (id, tenant, name, url, event_types, active,
               max_retries, initial_delay_ms, backoff_multiplier, max_delay_ms, secret,
               rate_per_second)
           VALUES ($1, $4, 'w', 'http://127.0.0.1/', '{*}', $2, 3, 1000, 2, 30000,
                   '\\x00'::bytea, $3)""",
        hook,
        active,
        per_second,
        tenant,
    )
    return hook


async def _delivery(
    conn: asyncpg.Connection, hook: uuid.UUID, due_in: float, status: str = "pending"
) -> uuid.UUID:
    delivery = uuid.uuid4()
    await conn.execute(
        """INSERT INTO webhooks.deliveries (id, webhook_id, tenant, job_id, event_id,
               event_type, body, status, next_attempt_at)
           SELECT $1, $2, tenant, $3, $3, 'message.created', '\\x7b7d'::bytea, $4,
                  now() + make_interval(secs => $5)
           FROM webhooks.webhooks WHERE id = $2""",
        delivery,
        hook,
        str(delivery),
        status,
        due_in,  # from the database's now: a time taken at import is minutes old by now
    )
    return delivery


async def _claim(conn: asyncpg.Connection, limit: int) -> list[uuid.UUID]:
    return [r["id"] for r in await conn.fetch(Q.claim_due, limit, 60.0, "worker-test", [], [], [])]


async def test_the_oldest_due_of_active_unlimited_webhooks_are_claimed_once(
    conn: asyncpg.Connection,
) -> None:
    a, b = await _webhook(conn), await _webhook(conn)
    paused, limited = await _webhook(conn, active=False), await _webhook(conn, per_second=2)
    # Due times in seconds from now (negative: due). Interleaved across a and b.
    a_due = [await _delivery(conn, a, t) for t in (-50, -30, -10)]
    b_due = [await _delivery(conn, b, t) for t in (-40, -20)]
    await _delivery(conn, a, 300)  # not due yet
    await _delivery(conn, b, -60, status="delivered")  # done already
    for hook in (paused, limited):  # older than everything, but never claimed here
        for t in (-500, -400, -300):
            await _delivery(conn, hook, t)

    first = await _claim(conn, 3)
    assert set(first) == {a_due[0], b_due[0], a_due[1]}  # -50, -40, -30
    second = await _claim(conn, 3)
    assert set(second) == {b_due[1], a_due[2]}  # -20, -10: the claimed ones are leased
    assert await _claim(conn, 3) == []

    rows = await conn.fetch(
        "SELECT claimed_by, next_attempt_at FROM webhooks.deliveries WHERE id = ANY($1)",
        first + second,
    )
    assert all(r["claimed_by"] == "worker-test" for r in rows)
    assert all(r["next_attempt_at"] > datetime.now(UTC) + timedelta(seconds=50) for r in rows)


async def test_a_large_backlog_of_one_webhook_yields_its_oldest_first(
    conn: asyncpg.Connection,
) -> None:
    hook = await _webhook(conn)
    ids = [await _delivery(conn, hook, -1000 + i) for i in range(200)]
    claimed: list[uuid.UUID] = []
    while batch := await _claim(conn, 16):
        assert len(batch) <= 16
        claimed += batch
    assert set(claimed[:16]) == set(ids[:16])
    assert sorted(claimed) == sorted(ids)
    assert len(claimed) == len(set(claimed))


async def test_tenants_take_turns_so_a_backlog_does_not_hold_up_another_tenant(
    conn: asyncpg.Connection,
) -> None:
    """One tenant's backlog of old deliveries (test events cost it nothing) was worked
    off before another tenant's newer one was even claimed."""
    backlog = await _webhook(conn)
    other = await _webhook(conn, tenant="globex")
    old = [await _delivery(conn, backlog, -1000 + i) for i in range(100)]
    newer = await _delivery(conn, other, -1)
    first = await _claim(conn, 2)
    assert set(first) == {old[0], newer}
    # Within a tenant, the oldest first
    assert set(await _claim(conn, 3)) == set(old[1:4])


async def test_when_a_webhook_began_failing_is_one_probe_however_long_it_failed(
    conn: asyncpg.Connection,
) -> None:
    # After every failed attempt: read back over every failure since the last 2xx
    hook = await _webhook(conn)
    delivery = await _delivery(conn, hook, -1)
    await conn.execute(
        """INSERT INTO webhooks.attempts (delivery_id, number, webhook_id, started_at,
               status_code, response_ms)
           SELECT $1, n, $2, now() + make_interval(secs => n * 0.001),
                  CASE WHEN n = 10 THEN 200 ELSE 503 END, 5
           FROM generate_series(1, 20000) AS n""",
        delivery,
        hook,
    )
    await conn.execute("ANALYZE webhooks.attempts")
    since = await conn.fetchval(Q.failing_since, hook)
    first_failure = await conn.fetchval(
        "SELECT started_at FROM webhooks.attempts WHERE delivery_id = $1 AND number = 11",
        delivery,
    )
    assert since == first_failure
    query = Q.failing_since.replace("$1", f"'{hook}'::uuid")
    plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {query}"))
    assert "attempts_succeeded" in plan, plan


def _outcome(delivery: uuid.UUID, hook: uuid.UUID, status_code: int) -> Outcome:
    return Outcome(
        delivery_id=delivery,
        number=1,
        webhook_id=hook,
        started_at=datetime.now(UTC),
        status_code=status_code,
        error=None,
        response_ms=status_code,  # tells the attempts apart in the log
        status="delivered" if status_code < 300 else "pending",
        next_at=None if status_code < 300 else datetime.now(UTC) + timedelta(seconds=60),
        retry_reason=None,
        retry_after=None,
        last_error=None,
        last_response="",
    )


async def _record(conn: asyncpg.Connection, worker: str, outcome: Outcome) -> list[uuid.UUID]:
    columns = list(zip(outcome, strict=False))[:OUTCOME_COLUMNS]
    return [r["id"] for r in await conn.fetch(Q.record_outcomes, worker, *columns)]


async def _logged(conn: asyncpg.Connection, delivery: uuid.UUID) -> list[tuple[int, int]]:
    rows = await conn.fetch(
        "SELECT number, status_code FROM webhooks.attempts WHERE delivery_id = $1", delivery
    )
    return [(r["number"], r["status_code"]) for r in rows]


@pytest.mark.parametrize("stale_first", [True, False])
async def test_the_log_keeps_the_claim_holders_attempt_not_a_stale_workers(
    conn: asyncpg.Connection, stale_first: bool
) -> None:
    """Worker A's lease ran out while it was posting (a database outage, say) and worker
    B claimed the delivery and attempted it again, under the same number. Whichever
    outcome comes first, the delivery and its log show B's attempt, whose outcome is
    the one that counts (the log kept whichever came first: A's 503 beside B's 200)."""
    hook = await _webhook(conn)
    delivery = await _delivery(conn, hook, -1)
    await conn.execute(
        "UPDATE webhooks.deliveries SET claimed_by = 'worker-b' WHERE id = $1", delivery
    )
    stale, holder = _outcome(delivery, hook, 503), _outcome(delivery, hook, 200)

    if stale_first:
        assert await _record(conn, "worker-a", stale) == [], "A no longer holds the claim"
        assert await _logged(conn, delivery) == [(1, 503)], "logged while its number is free"
    assert await _record(conn, "worker-b", holder) == [delivery]
    if not stale_first:
        assert await _record(conn, "worker-a", stale) == []

    assert await _logged(conn, delivery) == [(1, 200)]
    row = await conn.fetchrow(
        "SELECT status, last_status_code, claimed_by FROM webhooks.deliveries WHERE id = $1",
        delivery,
    )
    assert row is not None
    assert dict(row) == {"status": "delivered", "last_status_code": 200, "claimed_by": None}
