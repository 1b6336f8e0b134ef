"""How a batch of input records is split into concurrent ledger transactions."""

from __future__ import annotations

from ticketland.v1 import ticketland_pb2 as tl

from herald.services.reconcile.inputs import Decoded
from herald.services.reconcile.ledger import Taken, lock_key, split_by_lock


def _batch() -> list[Taken]:
    items: list[Taken] = []
    for e in range(7):
        items.append(Taken("events", 0, e, Decoded("event", tl.Event(id=f"e{e}"))))
    for o in range(40):
        order = tl.Order(id=f"o{o}", event_id=f"e{o % 7}")
        items.append(Taken("orders", o % 3, o, Decoded("order", order)))
    for r in range(20):
        refund = tl.RefundRequest(id=f"r{r}", order_id=f"o{r}", event_id=f"e{r % 7}")
        items.append(Taken("refunds", 0, r, Decoded("refund", refund)))
    return items


def test_every_record_of_an_event_is_in_one_part_in_the_batchs_order() -> None:
    batch = _batch()
    parts = split_by_lock(batch, 3)
    assert 1 < len(parts) <= 3
    assert all(parts), "no empty part"
    assert sorted(i for p in parts for i in map(batch.index, p)) == list(range(len(batch)))
    for part in parts:
        positions = [batch.index(t) for t in part]
        assert positions == sorted(positions), "each part keeps the batch's order"
    owner = {lock_key(t.decoded): n for n, part in enumerate(parts) for t in part}
    for n, part in enumerate(parts):
        assert all(owner[lock_key(t.decoded)] == n for t in part)


def test_the_split_is_stable_and_one_part_means_the_batch_itself() -> None:
    batch = _batch()
    assert split_by_lock(batch, 4) == split_by_lock(list(batch), 4)
    assert split_by_lock(batch, 1) == [batch]
    assert split_by_lock([], 4) == []


def test_a_refund_naming_another_event_goes_with_its_order() -> None:
    """Its order's event's lock is the one that serialises what the refund touches."""
    batch = [
        Taken("orders", 0, n, Decoded("order", tl.Order(id=f"o{n}", event_id=f"e{n}")))
        for n in range(8)
    ]
    batch += [
        Taken(
            "refunds",
            0,
            n,
            Decoded("refund", tl.RefundRequest(id=f"r{n}", order_id=f"o{n}", event_id="other")),
        )
        for n in range(8)
    ]
    parts = split_by_lock(batch, 4)
    part_of = {t.decoded.entity_id: n for n, part in enumerate(parts) for t in part}
    assert len(set(part_of.values())) > 1
    for n in range(8):
        assert part_of[f"r{n}"] == part_of[f"o{n}"]
