"""The consumer: herald.events in a consumer group, each event fanned out.

Per batch: decode every record (an undecodable one is dead-lettered), send every
target's records in order, park the targets that failed for a retry in PostgreSQL, and
only then commit the offsets, so nothing is lost and the partition never waits for a
failing target. Repeats after a crash or rebalance carry the same job ids.

While a batch waits for Kafka's acknowledgements the next one is decoded and sent
(``consume_overlapped``): its records go after the previous batch's on every
partition, so a key's order holds, and offsets are still committed batch by batch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from herald.runtime.db import DATA_REFUSED, until_taken
from herald.runtime.dlq import InputRecord
from herald.runtime.kafka import consume_overlapped
from herald.runtime.metrics import EVENTS_RETRY
from herald.services.dispatch import fanout
from herald.services.dispatch.deadletters import (
    DeadLetters,
    EventIds,
    Letter,
    reasons,
    stored,
)
from herald.services.dispatch.dispatcher import Dispatcher, Outcome
from herald.services.dispatch.fanout import Consumed
from herald.services.dispatch.retry import Schedule
from herald.services.dispatch.store import Q
from herald.services.dispatch.subscriptions import SubscriptionCache

log = structlog.get_logger("herald.dispatch.consumer")
# Batches whose acknowledgements are awaited while the next is decoded and sent. With
# one, the consumer still waited ~18% of the time for Kafka; with two, not at all.
OVERLAP_DEPTH = 2
# Records per batch at most. Per-batch costs (a fetch, a produce request per partition,
# an offset commit) spread over more events: ~10% less CPU per event than 500 in an
# alternating A/B; a batch is this large only when a backlog is waiting.
MAX_RECORDS = 2000


def ids_of(consumed: Consumed) -> EventIds:
    """The consumed event's id, source and type, as its dead letter names them."""
    a = consumed.binary.attributes
    return EventIds(a["id"], a["source"], a["type"])


class EventConsumer:
    """See the module docstring; :meth:`run` is a worker of the service."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        make_consumer: Callable[[], AIOKafkaConsumer],
        dispatcher: Dispatcher,
        subscriptions: SubscriptionCache,
        dead: DeadLetters,
        schedule: Schedule,
        max_records: int = MAX_RECORDS,
        wait_for_webhooks: bool = True,
    ) -> None:
        self._pool = pool
        self._make_consumer = make_consumer
        self._dispatcher = dispatcher
        self._subscriptions = subscriptions
        self._dead = dead
        self._schedule = schedule
        self._max_records = max_records
        self._wait_for_webhooks = wait_for_webhooks

    async def run(self) -> None:
        # A fresh process matches against real subscriptions, not an empty view.
        if self._wait_for_webhooks:
            await self._subscriptions.wait_ready(10)
        await consume_overlapped(
            self._make_consumer,
            "events-consumer",
            self.start,
            self._max_records,
            depth=OVERLAP_DEPTH,
        )

    async def start(
        self, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> Coroutine[Any, Any, None]:
        """Decodes ``records`` (dead-lettering what cannot be) and hands their records
        to the producer; returns what waits for them and settles the failed targets,
        after which every effect is durable."""
        decoded: list[tuple[ConsumerRecord[bytes, bytes], Consumed]] = []
        for r in records:
            try:
                consumed = fanout.decode(r.headers, r.key, r.value, r.topic)
            except ValueError as exc:
                await self._bury(InputRecord.of(r), EventIds(), ["decode"], str(exc), "undecodable")
                continue
            except Exception as exc:  # unforeseen: still the record's fault, not a crash
                log.exception("event.undecodable", topic=r.topic, offset=r.offset)
                reason = f"cannot be decoded: {type(exc).__name__}: {exc}"
                await self._bury(InputRecord.of(r), EventIds(), ["decode"], reason, "undecodable")
                continue
            decoded.append((r, consumed))
        routed: list[tuple[ConsumerRecord[bytes, bytes], Consumed, list[str]]] = []
        for r, consumed in decoded:
            try:
                routed.append((r, consumed, self._dispatcher.targets_of(consumed)))
            except Exception as exc:  # unforeseen: still the record's fault, not a crash
                log.exception("event.unroutable", topic=r.topic, offset=r.offset)
                reason = f"processing it failed: {type(exc).__name__}: {exc}"
                fanout.end_span(consumed, 0, (), ["routing"])
                await self._bury(InputRecord.of(r), ids_of(consumed), ["routing"], reason, "target")
        finishing = await self._dispatcher.start([(c, t) for _, c, t in routed])
        return self._finish([(r, c) for r, c, _ in routed], finishing)

    async def _finish(
        self,
        decoded: list[tuple[ConsumerRecord[bytes, bytes], Consumed]],
        finishing: Coroutine[Any, Any, list[Outcome]],
    ) -> None:
        outcomes = await finishing
        for (r, consumed), outcome in zip(decoded, outcomes, strict=True):
            if outcome.dead or outcome.failed:
                await self._settle(InputRecord.of(r), consumed, outcome)

    async def _settle(self, record: InputRecord, consumed: Consumed, outcome: Outcome) -> None:
        ids = ids_of(consumed)
        if outcome.dead:
            await self._bury(record, ids, list(outcome.dead), reasons(outcome.dead), "target")
        if outcome.failed:
            EVENTS_RETRY.labels("dispatch").inc()
            try:
                await self._durably(partial(self._park, record, consumed, outcome))
            except DATA_REFUSED as exc:  # it cannot wait in PostgreSQL: dead-lettered now
                reason = f"{reasons(outcome.failed)}; not parked for retry: {exc}"
                letter = Letter(record, ids, list(outcome.failed), 1, reason, "target")
                await self._dead.not_storable(letter)

    async def _bury(
        self, record: InputRecord, ids: EventIds, targets: list[str], reason: str, kind: str
    ) -> None:
        """A dead letter, stored and announced; one PostgreSQL refuses to store (a NUL
        character in a header name, say) still goes to the DLQ topic, saying so."""
        letter = Letter(record, ids, targets, 1, reason, kind)
        try:
            await self._durably(partial(self._dead.bury, letter))
        except DATA_REFUSED as exc:
            await self._dead.not_storable(replace(letter, reason=f"{reason}; not stored: {exc}"))

    async def _park(self, record: InputRecord, consumed: Consumed, outcome: Outcome) -> None:
        reason = reasons(outcome.failed)
        ids = ids_of(consumed)
        delay = self._schedule.delay_after(1)
        await self._pool.execute(Q.park, *stored(record, ids), list(outcome.failed), reason, delay)
        log.warning(
            "event.parked",
            event_id=ids.event_id,
            targets=list(outcome.failed),
            reason=reason,
            retry_in=delay,
        )

    async def _durably(self, action: Callable[[], Awaitable[None]]) -> None:
        """Runs ``action`` until PostgreSQL takes it: offsets wait for it, nothing is lost.
        Data PostgreSQL refuses (DATA_REFUSED) is raised at once: retrying cannot help."""
        await until_taken(
            action,
            failed_event="dispatch.store_failed",
            first_delay=0.5,
            max_delay=10.0,
            level=logging.ERROR,
        )
