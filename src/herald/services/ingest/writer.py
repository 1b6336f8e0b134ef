"""Writing accepted events to PostgreSQL: event, idempotency key and outbox row in
one transaction, many events per transaction.

Unary Publish calls are group-committed: each call waits for the transaction that
carries it, and a transaction carries whatever calls queued up while the previous
one ran. PublishBatch writes its items in one transaction directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg
import structlog

from herald.runtime import json_fast
from herald.runtime.batching import GroupCommitter
from herald.runtime.db import Connection, Queries, isolate_refused
from herald.runtime.errors import FieldViolation, InvalidArgument
from herald.services.ingest import dedup
from herald.services.ingest.dedup import Accepted, Outcome
from herald.services.ingest.event import Event
from herald.services.ingest.outbox import IdempotencyKey, PendingEvent

log = structlog.get_logger("herald.ingest.writer")

Q = Queries(Path(__file__).with_name("sql") / "queries.sql")
IDEMPOTENCY_TTL_SECONDS = 72 * 3600
CONFLICT_ATTEMPTS = 3


class EventWriter:
    """Stores pending events; see the module docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        on_commit: Callable[[], None] = lambda: None,
        max_group: int = 1000,
        committers: int = 2,
        idempotency_ttl: float = IDEMPOTENCY_TTL_SECONDS,
        notify_payload: str = "",
        linger: float = 0.0,
        small_group: int = 16,
    ) -> None:
        self._pool = pool
        self._on_commit = on_commit
        self._ttl = idempotency_ttl
        # Sent with NOTIFY herald_outbox: a relay in this process, woken directly by
        # on_commit, recognises its own notifications by it and ignores them.
        self._notify_payload = notify_payload
        self._batches: GroupCommitter[PendingEvent, Outcome] = GroupCommitter(
            self.write,
            name="ingest",
            max_group=max_group,
            committers=committers,
            # A small group costs ~10x more CPU per event than a large one: give the
            # calls arriving meanwhile a moment to join the transaction.
            linger=linger,
            small_group=small_group,
        )

    async def submit(self, item: PendingEvent) -> Outcome:
        """Queues one event for the next group commit and waits for its outcome."""
        return await self._batches.submit(item)

    async def run(self) -> None:
        """The group committers (a worker of the service)."""
        await self._batches.run()

    async def write(self, items: Sequence[PendingEvent]) -> list[Outcome]:
        """Stores ``items``; one outcome per item, in order.

        A group PostgreSQL refuses for the data of one item (validation lets nothing
        through that it would refuse; this is the safety net) is split in halves until
        that item is alone: it is refused with PostgreSQL's reason and the others are
        stored, so one caller's event cannot fail the calls it shares a commit with.
        Items repeating an earlier item's event under another idempotency key are
        written in a later round, each round as the group would be (dedup.rounds).
        """
        parts = dedup.rounds(items)
        if len(parts) == 1:
            return await isolate_refused(items, self._write, _refused)
        outcomes: dict[int, Outcome] = {}
        for part in parts:
            written = await isolate_refused([items[i] for i in part], self._write, _refused)
            outcomes.update(zip(part, written, strict=True))
        return [outcomes[i] for i in range(len(items))]

    async def _write(self, items: Sequence[PendingEvent]) -> list[Outcome]:
        """:meth:`_write_once`, again when PostgreSQL rolled it back for a conflict with
        a concurrent transaction (a deadlock, a serialization failure): nothing of it
        was stored, and the same items usually pass a moment later. The statements take
        their rows in one order so that this stays rare."""
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                return await self._write_once(items)
            except asyncpg.TransactionRollbackError as exc:
                if attempt == CONFLICT_ATTEMPTS:
                    raise
                log.warning("writer.conflict", items=len(items), attempt=attempt, error=str(exc))
        raise AssertionError("unreachable")

    async def _write_once(self, items: Sequence[PendingEvent]) -> list[Outcome]:
        """Stores ``items`` atomically.

        Without idempotency keys this is one statement (events, outbox rows and the
        relay notification together); keys add a claim before it, in one transaction.
        """
        if not items:
            return []
        batch = dedup.plan(items)
        outcomes: list[Outcome | None] = [None] * len(items)
        async with self._pool.acquire() as conn:
            if any(items[i].idempotency is not None for i in batch.leaders):
                async with conn.transaction():
                    fresh = await self._claim_keys(conn, items, batch.leaders, outcomes)
                    inserted = await self._insert_events(conn, items, fresh, outcomes)
            else:
                inserted = await self._insert_events(conn, items, batch.leaders, outcomes)
        if inserted:
            self._on_commit()
        return dedup.resolve_followers(outcomes, batch)

    async def _claim_keys(
        self,
        conn: Connection,
        items: Sequence[PendingEvent],
        leaders: list[int],
        outcomes: list[Outcome | None],
    ) -> list[int]:
        """Claims idempotency keys; settles the items whose key was used before.
        Returns the leaders still to insert."""
        keyed = [i for i in leaders if items[i].idempotency is not None]
        if not keyed:
            return leaders
        ks = [items[i].idempotency for i in keyed]
        cols = ([k.key for k in ks if k], [k.endpoint for k in ks if k], [k.actor for k in ks if k])
        claimed = {
            (r["key"], r["endpoint"], r["actor"])
            for r in await conn.fetch(
                Q.claim_keys,
                *cols,
                [items[i].fingerprint for i in keyed],
                [items[i].event.id for i in keyed],
                self._ttl,
            )
        }
        taken = [
            i
            for i, k in zip(keyed, ks, strict=True)
            if k and (k.key, k.endpoint, k.actor) not in claimed
        ]
        if taken:
            tk = [items[i].idempotency for i in taken]
            stored = {
                (r["key"], r["endpoint"], r["actor"]): r
                for r in await conn.fetch(
                    Q.find_keys,
                    [k.key for k in tk if k],
                    [k.endpoint for k in tk if k],
                    [k.actor for k in tk if k],
                )
            }
            for i, k in zip(taken, tk, strict=True):
                assert k is not None
                row = stored[(k.key, k.endpoint, k.actor)]
                outcomes[i] = (
                    Accepted(row["event_id"], True)
                    if await _repeats(conn, items[i].sent, items[i].fingerprint, row)
                    else dedup.key_reused(items[i].event)
                )
        settled = set(taken)
        return [i for i in leaders if i not in settled]

    async def _insert_events(
        self,
        conn: Connection,
        items: Sequence[PendingEvent],
        todo: list[int],
        outcomes: list[Outcome | None],
    ) -> list[int]:
        """Inserts events; a (source, id) seen before settles as duplicate or refusal.
        Returns the items inserted now."""
        if not todo:
            return []
        events = [items[i].event for i in todo]
        rows_out = [items[i].row for i in todo]
        rows = await conn.fetch(
            Q.store_events,
            [e.source for e in events],
            [e.id for e in events],
            [e.type for e in events],
            [items[i].fingerprint for i in todo],
            [json_fast.dumps(dict(e.attributes)) for e in events],
            [e.data for e in events],
            [r.lane for r in rows_out],
            [r.topic for r in rows_out],
            [r.key for r in rows_out],
            [r.value for r in rows_out],
            [r.headers_json for r in rows_out],
            self._notify_payload,
        )
        new = {(r["source"], r["id"]) for r in rows}
        inserted = [i for i in todo if (items[i].event.source, items[i].event.id) in new]
        old = [i for i in todo if (items[i].event.source, items[i].event.id) not in new]
        for i in inserted:
            outcomes[i] = Accepted(items[i].event.id, False)
        if old:
            found = {
                (r["source"], r["id"]): r
                for r in await conn.fetch(
                    Q.find_events,
                    [items[i].event.source for i in old],
                    [items[i].event.id for i in old],
                )
            }
            release = []
            for i in old:
                event = items[i].event
                stored = found.get((event.source, event.id))
                if stored is not None and await _repeats(
                    conn, items[i].sent, items[i].fingerprint, stored
                ):
                    outcomes[i] = Accepted(event.id, True)
                else:
                    outcomes[i] = dedup.id_reused(event)
                    if items[i].idempotency is not None:
                        release.append(items[i].idempotency)
            if release:
                await conn.execute(
                    Q.release_keys,
                    [k.key for k in release if k],
                    [k.endpoint for k in release if k],
                    [k.actor for k in release if k],
                )
        return inserted

    async def earlier(self, sent: Event, key: IdempotencyKey | None) -> Accepted | None:
        """The outcome of an earlier call the request ``sent`` repeats (by its key, else
        by its event's source and id), or None. For a request that fails validation
        now: a retry is answered as its original call was, even once the rules changed
        (a newer data version, whose schema it fails, is its default)."""
        async with self._pool.acquire() as conn:
            if key is not None:
                rows = await conn.fetch(Q.find_keys, [key.key], [key.endpoint], [key.actor])
            else:
                rows = await conn.fetch(Q.find_events, [sent.source], [sent.id])
            if rows and await _repeats(conn, sent, sent.fingerprint(), rows[0]):
                return Accepted(rows[0]["event_id"], True)
        return None


async def _repeats(
    conn: Connection, sent: Event, fingerprint: bytes, stored: asyncpg.Record
) -> bool:
    """Whether ``sent`` (whose fingerprint is ``fingerprint``) repeats the request
    ``stored`` (a ``find_keys`` or ``find_events`` row): the same fingerprint, or the same
    but for how its JSON data is written; the stored event's data (from ``sent``'s
    source: other attributes differ anyway) is read only then."""
    stored_fingerprint = bytes(stored["fingerprint"])
    if stored_fingerprint == fingerprint:
        return True
    data = await conn.fetchval(Q.event_data, sent.source, stored["event_id"])
    return data is not None and dedup.reformatted(sent, bytes(data), stored_fingerprint)


async def _refused(item: PendingEvent, exc: BaseException) -> Outcome:
    """The outcome of an event PostgreSQL refused to store."""
    log.warning("event.refused_by_database", event_id=item.event.id, error=str(exc))
    return InvalidArgument([FieldViolation("event", f"the database refused it: {exc}")])
