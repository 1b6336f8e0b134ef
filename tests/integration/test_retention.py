"""Retention against a real PostgreSQL: what has outlived its time is purged, batch
after batch, and nothing else (runtime.retention with each service's purge queries)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from herald.runtime import db
from herald.runtime.retention import Purge, purge_once
from herald.services.dispatch.app import MIGRATIONS as DISPATCH_MIGRATIONS
from herald.services.dispatch.app import dead_letter_purge
from herald.services.dispatch.settings import DispatchSettings
from herald.services.ingest.relay_app import MIGRATIONS as INGEST_MIGRATIONS
from herald.services.ingest.writer import Q as INGEST_Q
from herald.services.reconcile.app import MIGRATIONS as RECONCILE_MIGRATIONS
from herald.services.reconcile.app import purges as reconcile_purges
from herald.services.reconcile.settings import ReconcileSettings
from herald.services.webhooks.app import MIGRATIONS as WEBHOOKS_MIGRATIONS
from herald.services.webhooks.store import Q as WEBHOOKS_Q

pytestmark = pytest.mark.integration
DAY = 86400.0


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database_url, 2)
    async with pool.acquire() as conn:
        await db.migrate(conn, db.read_migrations("ingest", INGEST_MIGRATIONS))
        await db.migrate(conn, db.read_migrations("webhooks", WEBHOOKS_MIGRATIONS))
        await db.migrate(conn, db.read_migrations("dispatch", DISPATCH_MIGRATIONS))
    yield pool
    await pool.close()


async def test_finished_deliveries_past_retention_go_with_their_attempts(
    pool: asyncpg.Pool,
) -> None:
    hook = uuid.uuid4()
    await pool.execute(
        """INSERT INTO webhooks.webhooks (id, tenant, name, url, event_types, active,
               max_retries, initial_delay_ms, backoff_multiplier, max_delay_ms, secret)
           VALUES ($1, 'acme', 'w', 'http://127.0.0.1/', '{*}', true, 3, 1000, 2, 30000,
                   '\\x00'::bytea)""",
        hook,
    )
    cases = {  # name: (age in days, status)
        "old-delivered": (40, "delivered"),
        "old-failed": (31, "failed"),
        "old-delivered-2": (35, "delivered"),
        "old-pending": (40, "pending"),  # still being retried: kept
        "recent-delivered": (29, "delivered"),
        "recent-failed": (1, "failed"),
    }
    for name, (age, status) in cases.items():
        await pool.execute(
            """INSERT INTO webhooks.deliveries (id, webhook_id, tenant, job_id, event_id,
                   event_type, body, status, created_at)
               VALUES (gen_random_uuid(), $1, 'acme', $2, $2, 'message.created',
                       '\\x7b7d'::bytea, $3, now() - make_interval(days => $4))""",
            hook,
            name,
            status,
            age,
        )
    await pool.execute(
        """INSERT INTO webhooks.attempts (delivery_id, number, webhook_id, started_at,
               status_code, response_ms)
           SELECT id, 1, webhook_id, created_at, 200, 5 FROM webhooks.deliveries"""
    )
    purges = [Purge("deliveries", WEBHOOKS_Q.purge_deliveries, (30 * DAY,))]

    counts = await purge_once(pool, purges, batch=2)  # two full batches, then one short

    assert counts == {"deliveries": 3}
    left = {r["job_id"] for r in await pool.fetch("SELECT job_id FROM webhooks.deliveries")}
    assert left == {"old-pending", "recent-delivered", "recent-failed"}
    assert await pool.fetchval("SELECT count(*) FROM webhooks.attempts") == 3, "cascaded"
    assert await purge_once(pool, purges) == {"deliveries": 0}


async def test_ingest_purges_expired_keys_sent_outbox_rows_and_old_events(
    pool: asyncpg.Pool,
) -> None:
    for i, age in enumerate((100, 91, 89, 1)):  # days
        await pool.execute(
            """INSERT INTO ingest.events (source, id, type, fingerprint, attributes, data,
                   accepted_at)
               VALUES ('urn:t', $1, 't', '\\x00', '{}', '\\x00',
                       now() - make_interval(days => $2))""",
            f"e{i}",
            age,
        )
    for key, expires_in in (("gone", -1), ("gone-too", -3600), ("kept", 3600)):
        await pool.execute(
            """INSERT INTO ingest.idempotency_keys (key, endpoint, actor, fingerprint,
                   event_id, expires_at)
               VALUES ($1, 'Publish', 'a', '\\x00', 'e', now() + make_interval(secs => $2))""",
            key,
            float(expires_in),
        )
    for published_hours_ago in (None, 30.0, 25.0, 2.0):  # None: not sent yet
        await pool.execute(
            """INSERT INTO ingest.outbox (lane, topic, key, value, headers, event_type,
                   published_at)
               VALUES (0, 't', '\\x00', '\\x00', '{}', 't',
                       now() - make_interval(secs => $1 * 3600))""",
            published_hours_ago,
        )
    purges = [
        Purge("idempotency_keys", INGEST_Q.purge_keys),
        Purge("outbox", INGEST_Q.purge_outbox, (24 * 3600.0,)),
        Purge("events", INGEST_Q.purge_events, (90 * DAY,)),
    ]

    counts = await purge_once(pool, purges, batch=1)

    assert counts == {"idempotency_keys": 2, "outbox": 2, "events": 2}
    assert {r["id"] for r in await pool.fetch("SELECT id FROM ingest.events")} == {"e2", "e3"}
    assert [r["key"] for r in await pool.fetch("SELECT key FROM ingest.idempotency_keys")] == [
        "kept"
    ]
    outbox = await pool.fetch("SELECT published_at IS NULL AS pending FROM ingest.outbox")
    assert sorted(r["pending"] for r in outbox) == [False, True], "unsent and recent stay"


async def test_dispatch_purges_dead_letters_past_their_retention(pool: asyncpg.Pool) -> None:
    """Each dead letter holds its record (up to 1 MB): a flood of undecodable records on
    herald.events made as many rows, kept for ever. Past DEAD_LETTER_RETENTION_DAYS they
    go, redriven or not."""
    cases = {  # reason: (age in days, redriven)
        "old": (40, False),
        "old-redriven": (31, True),
        "recent": (29, False),
        "recent-redriven": (1, True),
    }
    for reason, (age, redriven) in cases.items():
        await pool.execute(
            """INSERT INTO dispatch.dead_letters (id, topic, partition, "offset", value,
                   header_names, header_values, targets, attempts, reason, created_at,
                   redriven_at)
               VALUES (gen_random_uuid(), 'herald.events', 0, 0, $1, '{}', '{}',
                       '{decode}', 1, $2, now() - make_interval(days => $3),
                       CASE WHEN $4 THEN now() END)""",
            b"x" * 1000,
            reason,
            age,
            redriven,
        )
    settings = DispatchSettings(dead_letter_retention_days=30)
    purges = [dead_letter_purge(settings)]

    assert await purge_once(pool, purges, batch=1) == {"dead_letters": 2}

    left = {r["reason"] for r in await pool.fetch("SELECT reason FROM dispatch.dead_letters")}
    assert left == {"recent", "recent-redriven"}


async def test_reconcile_purges_old_input_coordinates_and_reports_and_keeps_a_horizon(
    pool: asyncpg.Pool,
) -> None:
    """Past INPUT_RETENTION_DAYS the coordinates of input records go (taken or
    dead-lettered) up to their partition's progress, each partition keeping the greatest
    offset purged so a replay still skips them; past REPORT_RETENTION_DAYS reports go.
    Newer rows stay, and so do rows above their partition's progress."""
    async with pool.acquire() as conn:
        await db.migrate(conn, db.read_migrations("reconcile", RECONCILE_MIGRATIONS))
    inputs = [  # (partition, offset, age in days)
        (0, 10, 40),
        (0, 11, 35),
        (0, 12, 29),
        (1, 3, 31),
        (1, 4, 1),
        (2, 7, 5),
        (3, 9, 40),  # above its partition's progress: a record below may not be taken
    ]
    for partition, offset, age in inputs:
        await pool.execute(
            """INSERT INTO reconcile.inputs (topic, partition, "offset", kind, entity_id,
                   received_at)
               VALUES ('tl.orders', $1, $2, 'order', 'o', now() - make_interval(days => $3))""",
            partition,
            offset,
            age,
        )
    for partition, offset in ((0, 21), (1, 4), (2, 7), (3, 8)):  # taken up to there
        await pool.execute(
            """INSERT INTO reconcile.input_progress (topic, partition, "offset")
               VALUES ('tl.orders', $1, $2)""",
            partition,
            offset,
        )
    for offset, age in ((20, 60), (21, 2)):
        await pool.execute(
            """INSERT INTO reconcile.dead_inputs (topic, partition, "offset", reason, dead_at)
               VALUES ('tl.orders', 0, $1, 'bad', now() - make_interval(days => $2))""",
            offset,
            age,
        )
    for age in (400, 366, 364, 1):
        await pool.execute(
            """INSERT INTO reconcile.reports (id, report, created_at)
               VALUES (gen_random_uuid(), '\\x00', now() - make_interval(days => $1))""",
            age,
        )
    settings = ReconcileSettings(input_retention_days=30, report_retention_days=365)

    counts = await purge_once(pool, reconcile_purges(settings), batch=1)

    assert counts == {"inputs": 3, "dead_inputs": 1, "reports": 2}
    left = await pool.fetch('SELECT partition, "offset" FROM reconcile.inputs ORDER BY 1, 2')
    assert [tuple(r) for r in left] == [(0, 12), (1, 4), (2, 7), (3, 9)]
    dead = await pool.fetch('SELECT "offset" FROM reconcile.dead_inputs')
    assert [r["offset"] for r in dead] == [21]
    assert await pool.fetchval("SELECT count(*) FROM reconcile.reports") == 2
    horizon = await pool.fetch(
        'SELECT partition, "offset", now() - purged_before AS age FROM reconcile.input_horizon '
        "ORDER BY 1"
    )
    assert [(r["partition"], r["offset"]) for r in horizon] == [(0, 20), (1, 3)]
    assert all(abs(r["age"].total_seconds() - 30 * DAY) < 60 for r in horizon)
    assert await purge_once(pool, reconcile_purges(settings)) == {
        "inputs": 0,
        "dead_inputs": 0,
        "reports": 0,
    }
    # 0 keeps them for ever.
    assert (
        reconcile_purges(ReconcileSettings(input_retention_days=0, report_retention_days=0)) == []
    )
