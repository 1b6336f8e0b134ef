"""Reconcile's ledger given whole batches against the real PostgreSQL: what it queues
for Vibeapp (its outbox) when one batch brings several versions of what depends on
what, and when an approved refund Vibeapp does not have yet changes.

The ledger is driven through :meth:`Ledger.take`, the call the consumer makes with each
batch it read, so what one batch holds is the test's choice (over Kafka, which records
share a batch is the consumer's)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from google.protobuf.message import Message
from ticketland.v1 import ticketland_pb2 as tl
from vibe.v1 import vibe_pb2 as vibe

from herald.runtime import db
from herald.services.reconcile.app import MIGRATIONS
from herald.services.reconcile.apply import BatchApply
from herald.services.reconcile.inputs import Decoded
from herald.services.reconcile.ledger import Ledger, Taken
from herald.services.reconcile.outputs import OutputConfig
from herald.services.reconcile.sweeper import Sweeper
from tests.integration.reconcile_flow import event, order, refund

pytestmark = pytest.mark.integration
OK = (1000, 800, 100, 100)  # refund_nominal = customer + org + agent
SPLIT_WRONG = (1000, 800, 100, 99)
KINDS = {tl.Event: "event", tl.Order: "order", tl.RefundRequest: "refund"}


class Batches:
    """Feeds the ledger batches, each record at coordinates of its own."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.config = OutputConfig(
            topics={"event": "vibe.events", "order": "vibe.orders", "refund": "vibe.refunds"},
            formats={"event": "protobuf", "order": "protobuf", "refund": "protobuf"},
        )
        self.ledger = Ledger(pool, self.config)
        self._offsets = itertools.count()

    async def take(self, *messages: Message) -> None:
        items = []
        for m in messages:
            kind = KINDS[type(m)]
            items.append(
                Taken(f"ticketland.{kind}s", 0, next(self._offsets), Decoded(kind, m))  # type: ignore[arg-type]
            )
        await self.ledger.take(items)

    async def outputs(self, kind: str) -> list[asyncpg.Record]:
        """What was queued for Vibeapp's ``kind`` topic, in the order it goes."""
        return list(
            await self.pool.fetch(
                "SELECT entity_id, value, ticket_ids FROM reconcile.outbox WHERE kind = $1"
                " ORDER BY id",
                kind,
            )
        )

    async def refund_state(self, refund_id: str) -> str:
        return str(
            await self.pool.fetchval("SELECT state FROM reconcile.refunds WHERE id = $1", refund_id)
        )

    async def tickets(self, *ids: str) -> dict[str, tuple[str, str | None]]:
        rows = await self.pool.fetch(
            "SELECT id, status, refund_id FROM reconcile.tickets WHERE id = ANY($1::text[])",
            list(ids),
        )
        return {r["id"]: (r["status"], r["refund_id"]) for r in rows}

    async def discrepancies(self, refund_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT kind, status, resolution_note FROM reconcile.discrepancies"
            " WHERE refund_id = $1 ORDER BY detected_at, id",
            refund_id,
        )
        return [dict(r) for r in rows]


@pytest.fixture
async def batches(database_url: str) -> AsyncIterator[Batches]:
    pool = await db.create_pool(database_url, 2)
    try:
        async with pool.acquire() as conn:
            await db.migrate(conn, db.read_migrations("reconcile", MIGRATIONS))
        yield Batches(pool)
    finally:
        await pool.close()


# ------------------------------------------- one batch: an arrival and a newer version


async def test_an_order_cancelled_in_the_batch_its_event_arrives_in_is_not_sent(
    batches: Batches,
) -> None:
    await batches.take(order("o1", "e1", {"t1": 1000}))  # parked: its event is unknown
    await batches.take(event("e1"), order("o1", "e1", {"t1": 1000}, "CANCELLED", updated_at=2))

    assert [r["entity_id"] for r in await batches.outputs("event")] == ["e1"]
    assert await batches.outputs("order") == [], "Vibeapp never learns of the sale"
    assert await batches.tickets("t1") == {"t1": ("cancelled", None)}


async def test_a_parked_order_changed_in_the_batch_its_event_arrives_in_goes_once_as_changed(
    batches: Batches,
) -> None:
    await batches.take(order("o1", "e1", {"t1": 1000}))
    await batches.take(event("e1"), order("o1", "e1", {"t1": 1000, "t2": 500}, updated_at=2))

    [sent] = await batches.outputs("order")
    assert [t.id for t in vibe.Order.FromString(sent["value"]).tickets] == ["t1", "t2"]


async def test_a_refund_rejected_in_the_batch_its_order_arrives_in_is_not_sent(
    batches: Batches,
) -> None:
    await batches.take(event("e1"), refund("r1", "o1", "e1", {"t1": OK}))
    assert await batches.refund_state("r1") == "waiting_order"

    await batches.take(
        order("o1", "e1", {"t1": 1000}),
        refund("r1", "o1", "e1", {"t1": OK}, "REJECTED", updated_at=2),
    )
    assert [r["entity_id"] for r in await batches.outputs("order")] == ["o1"]
    assert await batches.outputs("refund") == []
    assert await batches.refund_state("r1") == "rejected"
    assert await batches.tickets("t1") == {"t1": ("active", None)}
    assert await batches.discrepancies("r1") == [], "Vibeapp never had it: nothing reversed"


async def test_a_refund_changed_in_the_batch_its_order_arrives_in_is_checked_as_changed(
    batches: Batches,
) -> None:
    await batches.take(event("e1"), refund("r1", "o1", "e1", {"t1": OK}))
    await batches.take(
        order("o1", "e1", {"t1": 1000}),
        refund("r1", "o1", "e1", {"t1": SPLIT_WRONG}, updated_at=2),
    )
    assert await batches.outputs("refund") == []
    assert await batches.refund_state("r1") == "held"
    assert [d["kind"] for d in await batches.discrepancies("r1")] == ["money_mismatch"] * 2


async def test_a_ready_refund_rejected_in_the_batch_its_order_goes_in_is_not_sent(
    batches: Batches,
) -> None:
    await batches.take(order("o1", "e1", {"t1": 1000}))  # parked
    await batches.take(refund("r1", "o1", "e1", {"t1": OK}))
    assert await batches.refund_state("r1") == "ready"
    assert await batches.tickets("t1") == {"t1": ("refunded", "r1")}

    await batches.take(event("e1"), refund("r1", "o1", "e1", {"t1": OK}, "REJECTED", updated_at=2))
    assert [r["entity_id"] for r in await batches.outputs("order")] == ["o1"]
    assert await batches.outputs("refund") == []
    assert await batches.refund_state("r1") == "rejected"
    assert await batches.tickets("t1") == {"t1": ("active", None)}
    assert await batches.discrepancies("r1") == []


async def test_a_ready_refund_goes_after_its_order_in_the_batch_its_event_arrives_in(
    batches: Batches,
) -> None:
    """What the batch releases still goes in order: the event, its order, the refund."""
    await batches.take(order("o1", "e1", {"t1": 1000}))
    await batches.take(refund("r1", "o1", "e1", {"t1": OK}))
    await batches.take(event("e1"))

    rows = await batches.pool.fetch("SELECT kind, entity_id FROM reconcile.outbox ORDER BY id")
    assert [(r["kind"], r["entity_id"]) for r in rows] == [
        ("event", "e1"),
        ("order", "o1"),
        ("refund", "r1"),
    ]
    assert await batches.refund_state("r1") == "sent"


# ------------------------- an approved refund Vibeapp does not have yet, approved again


async def test_a_ready_refund_approved_again_with_wrong_money_is_held_not_sent(
    batches: Batches,
) -> None:
    await batches.take(order("o1", "e1", {"t1": 1000}))  # parked: the refund waits, ready
    await batches.take(refund("r1", "o1", "e1", {"t1": OK}))
    assert await batches.refund_state("r1") == "ready"

    await batches.take(refund("r1", "o1", "e1", {"t1": SPLIT_WRONG}, updated_at=2))
    assert await batches.refund_state("r1") == "held"
    assert [d["kind"] for d in await batches.discrepancies("r1")] == ["money_mismatch"] * 2
    assert await batches.tickets("t1") == {"t1": ("active", None)}, "a held refund refunds nothing"

    await batches.take(event("e1"))
    assert [r["entity_id"] for r in await batches.outputs("order")] == ["o1"]
    assert await batches.outputs("refund") == []


async def test_a_ready_refund_approved_again_for_another_ticket_refunds_that_one(
    batches: Batches,
) -> None:
    await batches.take(order("o1", "e1", {"t1": 1000, "t2": 1000}))
    await batches.take(refund("r1", "o1", "e1", {"t1": OK}))
    assert await batches.tickets("t1", "t2") == {"t1": ("refunded", "r1"), "t2": ("active", None)}

    await batches.take(refund("r1", "o1", "e1", {"t2": OK}, updated_at=2))
    assert await batches.refund_state("r1") == "ready"
    assert await batches.tickets("t1", "t2") == {"t1": ("active", None), "t2": ("refunded", "r1")}

    await batches.take(event("e1"))
    [sent] = await batches.outputs("refund")
    assert list(vibe.Refund.FromString(sent["value"]).ticket_ids) == ["t2"]


async def test_a_ready_refund_approved_again_as_it_was_stays_ready(batches: Batches) -> None:
    await batches.take(order("o1", "e1", {"t1": 1000}))
    await batches.take(refund("r1", "o1", "e1", {"t1": OK}))
    await batches.take(refund("r1", "o1", "e1", {"t1": OK}, updated_at=2))
    assert await batches.refund_state("r1") == "ready"
    assert await batches.tickets("t1") == {"t1": ("refunded", "r1")}


async def test_a_held_refund_approved_again_with_the_money_corrected_goes(
    batches: Batches,
) -> None:
    await batches.take(event("e1"), order("o1", "e1", {"t1": 1000}))
    await batches.take(refund("r1", "o1", "e1", {"t1": SPLIT_WRONG}))
    assert await batches.refund_state("r1") == "held"

    await batches.take(refund("r1", "o1", "e1", {"t1": OK}, updated_at=2))
    assert await batches.refund_state("r1") == "sent"
    assert [r["entity_id"] for r in await batches.outputs("refund")] == ["r1"]
    assert await batches.tickets("t1") == {"t1": ("refunded", "r1")}
    found = await batches.discrepancies("r1")
    assert [d["status"] for d in found] == ["accepted", "accepted"], found
    assert all("not found when the refund was checked again" in d["resolution_note"] for d in found)


async def test_a_held_refund_approved_again_with_another_fault_keeps_only_what_still_holds(
    batches: Batches,
) -> None:
    await batches.take(event("e1"), order("o1", "e1", {"t1": 1000}))
    await batches.take(refund("r1", "o1", "e1", {"t1": SPLIT_WRONG}))
    above = (1200, 1000, 100, 100)  # adds up, but above the ticket's price
    await batches.take(refund("r1", "o1", "e1", {"t1": above}, updated_at=2))

    assert await batches.refund_state("r1") == "held"
    found = {(d["kind"], d["status"]) for d in await batches.discrepancies("r1")}
    assert found == {
        ("money_mismatch", "accepted"),  # the split adds up now
        ("refund_above_price", "open"),
    }
    assert await batches.outputs("refund") == []


# ---------------------------------------------- a held refund moved back, then decided


async def test_a_held_refund_moved_back_and_approved_corrected_settles_what_it_was_held_for(
    batches: Batches,
) -> None:
    await batches.take(event("e1"), order("o1", "e1", {"t1": 1000}))
    await batches.take(refund("r1", "o1", "e1", {"t1": SPLIT_WRONG}))
    await batches.take(refund("r1", "o1", "e1", {"t1": SPLIT_WRONG}, "IN_PROGRESS", updated_at=2))
    assert {d["status"] for d in await batches.discrepancies("r1")} == {"open"}, (
        "an operator may still decide them meanwhile"
    )

    await batches.take(refund("r1", "o1", "e1", {"t1": OK}, updated_at=3))
    assert await batches.refund_state("r1") == "sent"
    assert {d["status"] for d in await batches.discrepancies("r1")} == {"accepted"}


async def test_a_held_refund_moved_back_then_rejected_leaves_nothing_open(
    batches: Batches,
) -> None:
    await batches.take(event("e1"), order("o1", "e1", {"t1": 1000}))
    await batches.take(refund("r1", "o1", "e1", {"t1": SPLIT_WRONG}))
    await batches.take(refund("r1", "o1", "e1", {"t1": SPLIT_WRONG}, "NEW", updated_at=2))
    await batches.take(refund("r1", "o1", "e1", {"t1": SPLIT_WRONG}, "REJECTED", updated_at=3))

    assert await batches.refund_state("r1") == "rejected"
    found = await batches.discrepancies("r1")
    assert {d["status"] for d in found} == {"rejected"}
    assert all("Ticketland rejected the refund" in d["resolution_note"] for d in found)
    assert await batches.outputs("refund") == []


# ------------------------------- a refund and its order, committed at the same moment


async def test_a_refund_that_missed_its_order_committing_at_once_is_checked_by_the_sweeper(
    batches: Batches, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refund naming another event than its order's takes that event's lock, so its
    batch and its order's can run at once: the refund finds no order, the order finds
    no waiting refund, and the refund is left waiting for an order the ledger has. The
    sweeper's next pass checks it (here: held for naming another event), rather than
    judging it an unknown order once the park limit is past."""
    await batches.take(event("e1"), event("e2"))
    found_no_order, go_on = asyncio.Event(), asyncio.Event()
    write = BatchApply._write

    async def paused_before_writing(self: BatchApply) -> None:
        found_no_order.set()
        await go_on.wait()
        await write(self)

    monkeypatch.setattr(BatchApply, "_write", paused_before_writing)
    refund_batch = asyncio.ensure_future(batches.take(refund("r1", "o1", "e2", {"t1": OK})))
    await asyncio.wait_for(found_no_order.wait(), 10)
    monkeypatch.setattr(BatchApply, "_write", write)
    await asyncio.wait_for(batches.take(order("o1", "e1", {"t1": 1000})), 10)
    go_on.set()
    await refund_batch
    assert await batches.refund_state("r1") == "waiting_order", "the race this test is about"

    assert await Sweeper(batches.pool, batches.config, park_limit=900).sweep() == 1
    assert await batches.refund_state("r1") == "held"
    assert [d["kind"] for d in await batches.discrepancies("r1")] == ["refund_event_mismatch"]
    assert await Sweeper(batches.pool, batches.config, park_limit=900).sweep() == 0


async def test_a_refund_waiting_past_the_limit_for_an_order_that_came_is_checked_not_held(
    batches: Batches,
) -> None:
    """The same lost race found only once the park limit is past: the order is there,
    so the refund is checked (and goes), not held as an unknown order."""
    await batches.take(event("e1"), order("o1", "e1", {"t1": 1000}))
    await batches.take(refund("r1", "o1", "e1", {"t1": OK}))
    await batches.pool.execute(  # the state the race leaves, waiting past the limit
        "UPDATE reconcile.refunds SET state = 'waiting_order',"
        " waiting_since = now() - interval '1 hour' WHERE id = 'r1'"
    )
    await batches.pool.execute("UPDATE reconcile.tickets SET status = 'active', refund_id = NULL")
    await batches.pool.execute("DELETE FROM reconcile.outbox WHERE kind = 'refund'")

    assert await Sweeper(batches.pool, batches.config, park_limit=60).sweep() == 1
    assert await batches.refund_state("r1") == "sent"
    assert await batches.discrepancies("r1") == []
    assert [r["entity_id"] for r in await batches.outputs("refund")] == ["r1"]


# ------------------------------------------------- what the ledger settled, found again


async def test_a_finding_the_ledger_settled_holds_the_refund_again_when_found_again(
    batches: Batches,
) -> None:
    """Held for a used ticket; approved again for another ticket (the finding is not
    found: the ledger settles it); approved again for the used ticket: the finding holds
    it again, open (it was taken as an operator's acceptance, and the refund went)."""
    await batches.take(
        event("e1"), order("o1", "e1", {"t1": 1000, "t2": 1000}, ticket_status={"t1": "USED"})
    )
    await batches.take(refund("r1", "o1", "e1", {"t1": OK}))
    assert [d["kind"] for d in await batches.discrepancies("r1")] == ["used_ticket"]
    await batches.take(refund("r1", "o1", "e1", {"t2": SPLIT_WRONG}, updated_at=2))
    assert {(d["kind"], d["status"]) for d in await batches.discrepancies("r1")} == {
        ("used_ticket", "accepted"),
        ("money_mismatch", "open"),
    }

    await batches.take(refund("r1", "o1", "e1", {"t1": OK}, updated_at=3))
    assert await batches.refund_state("r1") == "held"
    assert {(d["kind"], d["status"]) for d in await batches.discrepancies("r1")} == {
        ("used_ticket", "open"),
        ("money_mismatch", "accepted"),
    }
    assert await batches.outputs("refund") == []
    keys = await batches.pool.fetch(
        "SELECT key FROM reconcile.announcements WHERE data->>'kind' = 'used_ticket'"
    )
    assert len(keys) == 2, "announced again when it holds the refund again"


async def test_an_operators_acceptance_still_stands_when_the_refund_is_checked_again(
    batches: Batches,
) -> None:
    await batches.take(event("e1"), order("o1", "e1", {"t1": 1000}))
    await batches.take(refund("r1", "o1", "e1", {"t1": SPLIT_WRONG}))
    await batches.pool.execute(  # what ResolveDiscrepancy stores
        "UPDATE reconcile.discrepancies SET status = 'accepted', resolution_note = 'fine'"
        " WHERE refund_id = 'r1'"
    )
    await batches.take(refund("r1", "o1", "e1", {"t1": SPLIT_WRONG}, "IN_PROGRESS", updated_at=2))
    await batches.take(refund("r1", "o1", "e1", {"t1": SPLIT_WRONG}, updated_at=3))
    assert await batches.refund_state("r1") == "sent"


# ------------------------------------------------ a ready refund changed: its tickets


async def test_a_ready_refund_moved_to_another_order_gives_the_first_orders_ticket_back(
    batches: Batches,
) -> None:
    await batches.take(order("o1", "e1", {"t1": 1000}), order("o2", "e1", {"t2": 1000}))
    await batches.take(refund("r1", "o1", "e1", {"t1": OK}))
    assert await batches.tickets("t1") == {"t1": ("refunded", "r1")}

    await batches.take(refund("r1", "o2", "e1", {"t2": OK}, updated_at=2))
    assert await batches.refund_state("r1") == "ready"
    assert await batches.tickets("t1", "t2") == {"t1": ("active", None), "t2": ("refunded", "r1")}


async def test_a_ready_refund_changed_keeps_a_ticket_its_order_no_longer_lists_in_the_order(
    batches: Batches,
) -> None:
    """Ticketland republishes an order without a ticket it refunded: the ticket stays
    the order's, refunded. The refund approved again with other money, still naming it,
    leaves it so (it was taken out of the order: gone from its reports)."""
    await batches.take(order("o1", "e1", {"t1": 1000, "t2": 1000}))
    await batches.take(refund("r1", "o1", "e1", {"t1": OK}))
    await batches.take(order("o1", "e1", {"t2": 1000}, updated_at=2))
    await batches.take(refund("r1", "o1", "e1", {"t1": (1000, 900, 50, 50)}, updated_at=2))

    assert await batches.refund_state("r1") == "ready"
    row = await batches.pool.fetchrow(
        "SELECT status, refund_id, in_order FROM reconcile.tickets WHERE id = 't1'"
    )
    assert row is not None
    assert dict(row) == {"status": "refunded", "refund_id": "r1", "in_order": True}


async def test_a_refund_held_for_its_unknown_order_stays_held_when_it_changes(
    batches: Batches,
) -> None:
    """Held as an unknown order (past the park limit), then a newer approved version:
    still held by that finding, which an operator can still resolve; checked once the
    order comes (it went to waiting, its finding left open for ever)."""
    await batches.take(event("e1"), refund("r1", "o1", "e1", {"t1": OK}))
    await batches.pool.execute(
        "UPDATE reconcile.refunds SET waiting_since = now() - interval '1 hour'"
    )
    assert await Sweeper(batches.pool, batches.config, park_limit=60).sweep() == 1
    assert await batches.refund_state("r1") == "held"

    await batches.take(refund("r1", "o1", "e1", {"t1": (1000, 900, 50, 50)}, updated_at=2))
    assert await batches.refund_state("r1") == "held"
    assert [(d["kind"], d["status"]) for d in await batches.discrepancies("r1")] == [
        ("unknown_order", "open")
    ]

    await batches.take(order("o1", "e1", {"t1": 1000}))
    assert await batches.refund_state("r1") == "sent"
    [sent] = await batches.outputs("refund")
    assert vibe.Refund.FromString(sent["value"]).customer is not None
    assert [(d["kind"], d["status"]) for d in await batches.discrepancies("r1")] == [
        ("unknown_order", "accepted")
    ]


async def test_a_ticket_named_three_times_holds_the_refund_and_the_batch_goes_on(
    batches: Batches,
) -> None:
    """The same finding twice in one statement stopped the partition: PostgreSQL
    refuses to update a row twice in one ON CONFLICT DO UPDATE, and that counted as an
    outage, retried for ever."""
    await batches.take(event("e1"), order("o1", "e1", {"t1": 1000}))
    thrice = refund("r1", "o1", "e1", {"t1": OK}, total=(3000, 2400, 300, 300))
    thrice.tickets.extend([thrice.tickets[0], thrice.tickets[0]])
    await asyncio.wait_for(batches.take(thrice), 10)
    assert await batches.refund_state("r1") == "held"
    assert [d["kind"] for d in await batches.discrepancies("r1")] == ["double_refund"]


async def test_a_refund_held_for_one_unknown_order_then_naming_a_known_one_settles_it(
    batches: Batches,
) -> None:
    await batches.take(event("e1"), order("o2", "e1", {"t2": 1000}))
    await batches.take(refund("r1", "o1", "e1", {"t1": OK}))
    await batches.pool.execute(
        "UPDATE reconcile.refunds SET waiting_since = now() - interval '1 hour'"
    )
    assert await Sweeper(batches.pool, batches.config, park_limit=60).sweep() == 1

    await batches.take(refund("r1", "o2", "e1", {"t2": OK}, updated_at=2))
    assert await batches.refund_state("r1") == "sent"
    assert [(d["kind"], d["status"]) for d in await batches.discrepancies("r1")] == [
        ("unknown_order", "accepted")
    ]


async def test_a_refund_waiting_again_for_an_unknown_order_is_held_again_past_the_limit(
    batches: Batches,
) -> None:
    """Held once for an unknown order that then came (the ledger settled that); a newer
    version names another unknown order: past the limit it is held again, the same
    discrepancy open again (it waited for ever, unreported)."""
    await batches.take(event("e1"), refund("r1", "o1", "e1", {"t1": OK}))
    await batches.pool.execute(
        "UPDATE reconcile.refunds SET waiting_since = now() - interval '1 hour'"
    )
    assert await Sweeper(batches.pool, batches.config, park_limit=60).sweep() == 1
    await batches.take(order("o1", "e9", {"t1": 1000}))  # parked: its event is unknown
    assert await batches.refund_state("r1") == "held", "held: it names another event"
    await batches.take(refund("r1", "o3", "e1", {"t3": OK}, updated_at=2))
    assert await batches.refund_state("r1") == "waiting_order"
    await batches.pool.execute(
        "UPDATE reconcile.refunds SET waiting_since = now() - interval '1 hour'"
    )

    assert await Sweeper(batches.pool, batches.config, park_limit=60).sweep() == 1
    assert await batches.refund_state("r1") == "held"
    found = {(d["kind"], d["status"]) for d in await batches.discrepancies("r1")}
    assert ("unknown_order", "open") in found


async def test_an_unknown_order_an_operator_accepted_does_not_cover_another_one(
    batches: Batches,
) -> None:
    """Accepted for the order it named, the refund waits for that order; a newer version
    names another order nobody knows: past the limit it is held again for that one."""
    await batches.take(event("e1"), refund("r1", "o1", "e1", {"t1": OK}))
    await batches.pool.execute(
        "UPDATE reconcile.refunds SET waiting_since = now() - interval '1 hour'"
    )
    assert await Sweeper(batches.pool, batches.config, park_limit=60).sweep() == 1
    await batches.pool.execute(  # what ResolveDiscrepancy does: accepted, the refund waits
        "UPDATE reconcile.discrepancies SET status = 'accepted', resolution_note = 'ok';"
        " UPDATE reconcile.refunds SET state = 'waiting_order', waiting_since = now()"
    )
    await batches.take(refund("r1", "o3", "e1", {"t3": OK}, updated_at=2))
    assert await Sweeper(batches.pool, batches.config, park_limit=60).sweep() == 0, "waits"
    await batches.pool.execute(  # an hour later
        "UPDATE reconcile.refunds SET waiting_since = now() - interval '1 hour'"
    )
    assert await Sweeper(batches.pool, batches.config, park_limit=60).sweep() == 1
    assert await batches.refund_state("r1") == "held"
    rows = await batches.pool.fetch(
        "SELECT order_id, status FROM reconcile.discrepancies WHERE refund_id = 'r1'"
        " ORDER BY detected_at"
    )
    assert [(r["order_id"], r["status"]) for r in rows] == [("o1", "accepted"), ("o3", "open")]


async def test_a_refund_held_again_for_another_unknown_order_leaves_one_finding_open(
    batches: Batches,
) -> None:
    """Held for unknown o1, then naming unknown o3: held for o3, and the finding about
    o1 (which it no longer names) settled, so accepting o3's releases it."""
    await batches.take(event("e1"), refund("r1", "o1", "e1", {"t1": OK}))
    await batches.pool.execute(
        "UPDATE reconcile.refunds SET waiting_since = now() - interval '1 hour'"
    )
    assert await Sweeper(batches.pool, batches.config, park_limit=60).sweep() == 1
    await batches.take(refund("r1", "o3", "e1", {"t3": OK}, updated_at=2))
    assert await batches.refund_state("r1") == "waiting_order"
    await batches.pool.execute(
        "UPDATE reconcile.refunds SET waiting_since = now() - interval '1 hour'"
    )
    assert await Sweeper(batches.pool, batches.config, park_limit=60).sweep() == 1
    rows = await batches.pool.fetch(
        "SELECT order_id, status FROM reconcile.discrepancies WHERE refund_id = 'r1'"
        " ORDER BY detected_at"
    )
    assert [(r["order_id"], r["status"]) for r in rows] == [("o1", "accepted"), ("o3", "open")]
