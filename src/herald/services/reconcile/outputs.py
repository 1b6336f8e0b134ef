"""What goes to Vibeapp, queued in the ledger's transaction (the outbox)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ticketland.v1 import ticketland_pb2 as tl

from herald.runtime import json_fast
from herald.runtime.db import Connection
from herald.services.reconcile import vibe
from herald.services.reconcile.inputs import Kind
from herald.services.reconcile.store import Q


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """Per kind of output: its topic and its format; and the headers' values."""

    topics: Mapping[Kind, str]
    formats: Mapping[Kind, vibe.Format]
    headers: vibe.Headers = field(default_factory=vibe.Headers)


@dataclass(slots=True)
class Queue:
    """Outputs queued in one transaction, inserted together by :meth:`flush`."""

    config: OutputConfig
    rows: list[tuple[str, str, vibe.Output, Sequence[str], int]] = field(default_factory=list)

    def event(self, e: tl.Event) -> None:
        out = vibe.event_output(e, self.config.formats["event"], self.config.headers)
        self.rows.append(("event", e.id, out, (), 0))

    def order(self, o: tl.Order) -> None:
        out = vibe.order_output(o, self.config.formats["order"], self.config.headers)
        ticket_ids = [t.id for t in o.tickets]
        self.rows.append(("order", o.id, out, ticket_ids, sum(t.price_nominal for t in o.tickets)))

    def refund(self, r: tl.RefundRequest, order: tl.Order) -> None:
        """``r`` with its ``order``'s customer, under the order's event."""
        if (r.event_id, r.organizer_id) != (order.event_id, order.organizer_id):
            # An accepted refund_event_mismatch: the refund goes under its order's event.
            r = tl.RefundRequest.FromString(r.SerializeToString())
            r.event_id, r.organizer_id = order.event_id, order.organizer_id
        ticket_ids = [t.ticket_id for t in r.tickets]
        out = vibe.refund_output(
            r, order.customer, ticket_ids, self.config.formats["refund"], self.config.headers
        )
        self.rows.append(("refund", r.id, out, ticket_ids, r.money.customer))

    async def flush(self, conn: Connection) -> int:
        """Inserts what was queued (a repeat of its entity's latest content adds nothing)."""
        if not self.rows:
            return 0
        # One output per entity, its latest content (the statement compares each with
        # what is stored, not with the others it inserts).
        rows = list({(r[0], r[1]): r for r in self.rows}.values())
        await conn.execute(
            Q.enqueue,
            [k for k, *_ in rows],
            [e for _, e, *_ in rows],
            [o.content_hash for _, _, o, *_ in rows],
            [self.config.topics[k] for k, *_ in rows],  # type: ignore[index]
            [o.key for _, _, o, *_ in rows],
            [o.value for _, _, o, *_ in rows],
            [_headers_json(o.headers) for _, _, o, *_ in rows],
            [json_fast.dumps(list(t)) for *_, t, _ in rows],
            [a for *_, a in rows],
        )
        self.rows = []
        return len(rows)


@functools.lru_cache(maxsize=64)
def _headers_json(headers: tuple[tuple[str, bytes], ...]) -> str:
    """A row's headers as stored (few distinct values: one set per kind and format)."""
    return json_fast.dumps([[n, v.decode()] for n, v in headers])
