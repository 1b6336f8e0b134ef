"""Deciding, for a batch of pending events, which are new and which are repeats. Pure.

Inside one batch the first item with a given idempotency key (or event id from a
source) leads; later items with the same one follow it: the same request is a
duplicate of the leader, a different one is refused. An item repeating an earlier
item's event id under another idempotency key (or with a key where the earlier had
none, or none where it had one) is :func:`deferred` to a write after the batch's: its
own key must be claimed, and checked, and its outcome is its own (the earlier item's
key may have been refused).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from herald.runtime.errors import FieldViolation, InvalidArgument
from herald.services.ingest.event import NOT_PARSED, Event, is_json_media
from herald.services.ingest.outbox import PendingEvent


@dataclass(frozen=True, slots=True)
class Accepted:
    """The event is stored (now, or by an earlier call when ``duplicate``)."""

    event_id: str
    duplicate: bool


Outcome = Accepted | InvalidArgument


def key_reused(event: Event) -> InvalidArgument:
    """The error for an idempotency key reused with a different request."""
    return InvalidArgument(
        [
            FieldViolation(
                "idempotency-key",
                "this key was already used with a different request; use a new key for a new event",
            )
        ]
    )


def id_reused(event: Event) -> InvalidArgument:
    """The error for an event id reused by its source for a different event."""
    return InvalidArgument(
        [
            FieldViolation(
                event.field_name("id"),
                f"event {event.id!r} from {event.source!r} was already accepted with other content",
            )
        ]
    )


def reformatted(sent: Event, stored_data: bytes, stored_fingerprint: bytes) -> bool:
    """Whether ``sent`` repeats the request stored with ``stored_fingerprint`` (whose
    data was ``stored_data``) but for how its JSON data is written: key order, spacing,
    escapes, number spelling. JSON objects are unordered, so a retry rebuilt from a
    parsed copy (a client's jsonb column, a dict built anew) is the same request. The
    attributes must be exactly as sent before."""
    if sent.data == stored_data or not _json_data(sent):
        return False
    if sent.fingerprint(stored_data) != stored_fingerprint:
        return False  # the attributes differ
    try:
        return _canonical(sent.data) == _canonical(stored_data)
    except (ValueError, RecursionError):
        return False


def _json_data(event: Event) -> bool:
    """Whether the event's data is JSON: parsed from a JSON envelope, or bytes whose
    content type is JSON, or none (as validation judges it: its data was validated as
    JSON)."""
    if event.json_data is not NOT_PARSED:
        return True
    content_type = event.attributes.get("datacontenttype", "")
    return not content_type or is_json_media(content_type)


def _refuse_constant(name: str) -> object:
    raise ValueError(f"not JSON: {name}")


def _canonical(data: bytes) -> str:
    """``data`` as JSON written one way: keys sorted, no spaces, numbers as Python
    writes them (1.0 and 1.00 alike; 1 and 1.0 not), NaN and Infinity refused."""
    value = json.loads(data, parse_constant=_refuse_constant)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class BatchPlan:
    """Leaders go to the database; followers[i] = index of the item they follow."""

    leaders: list[int]
    followers: dict[int, int]
    refused: dict[int, InvalidArgument]


def deferred(items: Sequence[PendingEvent]) -> set[int]:
    """The items to write after the others: each repeats the event id (and source) of
    an earlier item written with another idempotency key, or with a key where this one
    has none, or none where this one has one; and each later item under a key such an
    item has (the first request under a key decides it, so it goes first)."""
    keys: set[object] = set()
    waiting: set[object] = set()  # keys of deferred items
    by_id: dict[tuple[str, str], object] = {}
    out: set[int] = set()
    for i, item in enumerate(items):
        ident = item.idempotency
        if ident is not None and ident in waiting:
            out.add(i)
            continue
        if ident is not None and ident in keys:
            continue  # follows its key's first item (plan)
        event_key = (item.event.source, item.event.id)
        if event_key in by_id and by_id[event_key] != ident:
            out.add(i)
            if ident is not None:
                waiting.add(ident)
            continue
        if ident is not None:
            keys.add(ident)
        by_id.setdefault(event_key, ident)
    return out


def rounds(items: Sequence[PendingEvent]) -> list[list[int]]:
    """``items``' indexes in the writes they take, in order: the first holds every item
    not :func:`deferred`, the next the deferred items not deferred among themselves,
    and so on (one round for a group without such repeats)."""
    out: list[list[int]] = []
    left = list(range(len(items)))
    while left:
        later = deferred([items[i] for i in left])
        out.append([i for n, i in enumerate(left) if n not in later])
        left = [i for n, i in enumerate(left) if n in later]
    return out


def plan(items: Sequence[PendingEvent]) -> BatchPlan:
    """Splits ``items`` into leaders, followers and items refused outright."""
    by_key: dict[object, int] = {}
    by_id: dict[tuple[str, str], int] = {}
    out = BatchPlan([], {}, {})
    for i, item in enumerate(items):
        ident = item.idempotency
        if ident is not None and ident in by_key:
            first = by_key[ident]
            if items[first].fingerprint == item.fingerprint:
                out.followers[i] = first
            else:
                out.refused[i] = key_reused(item.event)
            continue
        event_key = (item.event.source, item.event.id)
        if event_key in by_id:
            first = by_id[event_key]
            if items[first].fingerprint == item.fingerprint:
                out.followers[i] = first
            else:
                out.refused[i] = id_reused(item.event)
            continue
        if ident is not None:
            by_key[ident] = i
        by_id[event_key] = i
        out.leaders.append(i)
    return out


def resolve_followers(outcomes: list[Outcome | None], batch: BatchPlan) -> list[Outcome]:
    """Fills in the followers' outcomes from their leaders'."""
    for i, leader in batch.followers.items():
        result = outcomes[leader]
        assert result is not None
        outcomes[i] = Accepted(result.event_id, True) if isinstance(result, Accepted) else result
    for i, error in batch.refused.items():
        outcomes[i] = error
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]
