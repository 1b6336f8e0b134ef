"""Parked targets against a real PostgreSQL: a record parked again (consumed anew after
a crash or rebalance, before its offset's commit) keeps what failed either time, and
settling a claim keeps what the row gained since the claim."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from herald.runtime import db
from herald.runtime.dlq import InputRecord
from herald.services.dispatch.app import MIGRATIONS
from herald.services.dispatch.deadletters import EventIds, stored
from herald.services.dispatch.store import Q

pytestmark = pytest.mark.integration

RECORD = InputRecord("herald.events", 0, 42, b"k", b"{}", [("ce_id", b"e1")])
IDS = EventIds("e1", "urn:t", "message.created")
WORKER = "retrier-test"


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    await db.migrate(connection, db.read_migrations("dispatch", MIGRATIONS))
    yield connection
    await connection.close()


async def park(conn: asyncpg.Connection, *targets: str) -> None:
    await conn.execute(Q.park, *stored(RECORD, IDS), list(targets), "failed", 0.0)


async def parked(conn: asyncpg.Connection) -> list[tuple[list[str], str | None]]:
    rows = await conn.fetch("SELECT targets, claimed_by FROM dispatch.retries")
    return [(sorted(r["targets"]), r["claimed_by"]) for r in rows]


async def claim(conn: asyncpg.Connection) -> list[str]:
    [row] = await conn.fetch(Q.claim_retries, 10, 60.0, WORKER)
    return list(row["targets"])


async def test_a_record_parked_again_keeps_what_failed_either_time(
    conn: asyncpg.Connection,
) -> None:
    # The second time, other targets failed: they were dropped (ON CONFLICT DO NOTHING)
    await park(conn, "webhooks")
    await park(conn, "route:x")
    await park(conn, "webhooks")
    assert await parked(conn) == [(["route:x", "webhooks"], None)]


async def test_a_claim_settled_keeps_the_targets_gained_since(conn: asyncpg.Connection) -> None:
    await park(conn, "webhooks")
    claimed = await claim(conn)
    await park(conn, "route:x")  # gained while claimed
    await conn.execute(Q.retry_done, *(await _row_id(conn), WORKER, claimed))
    assert await parked(conn) == [(["route:x"], None)], "due again, for any retrier"

    claimed = await claim(conn)
    await park(conn, "route:y")
    dead = await conn.fetchval(
        Q.retry_to_dead_letter, await _row_id(conn), WORKER, claimed, "exhausted", claimed
    )
    assert dead is not None
    assert await parked(conn) == [(["route:y"], None)]
    letters = await conn.fetch("SELECT targets FROM dispatch.dead_letters")
    assert [list(r["targets"]) for r in letters] == [["route:x"]]

    claimed = await claim(conn)
    await park(conn, "route:z")
    await conn.execute(
        Q.retry_again, await _row_id(conn), WORKER, ["route:y"], "failed", 0.0, claimed
    )
    assert await parked(conn) == [(["route:y", "route:z"], None)]

    claimed = await claim(conn)
    await conn.execute(Q.retry_done, await _row_id(conn), WORKER, claimed)
    assert await parked(conn) == [], "nothing gained: the row goes"


async def _row_id(conn: asyncpg.Connection) -> object:
    return await conn.fetchval("SELECT id FROM dispatch.retries")
