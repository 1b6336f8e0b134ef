"""Retries of parked targets, on the schedule; dead letters once it runs out.

Any number of replicas: a claim is a lease (``next_attempt_at`` moved ahead) taken with
``FOR UPDATE SKIP LOCKED``, and only the claimant settles the row.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import structlog

from herald.runtime.db import DATABASE_ERRORS
from herald.runtime.dlq import InputRecord
from herald.runtime.metrics import EVENTS_RETRY
from herald.runtime.wake import woken
from herald.services.dispatch import fanout
from herald.services.dispatch.deadletters import DeadLetters, EventIds, Letter, reasons
from herald.services.dispatch.dispatcher import Dispatcher
from herald.services.dispatch.fanout import ROUTE_PREFIX, WEBHOOKS
from herald.services.dispatch.retry import Schedule
from herald.services.dispatch.store import Q

log = structlog.get_logger("herald.dispatch.retrier")
LEASE_MARGIN_SECONDS = 10.0  # a claim's lease beyond the sends it waits for


class Retrier:
    """See the module docstring; :meth:`run` is a worker of the service."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        dispatcher: Dispatcher,
        dead: DeadLetters,
        schedule: Schedule,
        poll_seconds: float = 1.0,
        lease_seconds: float = 120.0,
        batch: int = 100,
        send_timeout: float = 10.0,
    ) -> None:
        """``send_timeout``: the longest a retry's records may take to be acknowledged;
        a claim's lease is long enough for two of them and more."""
        self._pool = pool
        self._dispatcher = dispatcher
        self._dead = dead
        self._schedule = schedule
        self._poll = poll_seconds
        self._send_timeout = send_timeout
        self._lease = max(lease_seconds, 2 * send_timeout + LEASE_MARGIN_SECONDS)
        self._batch = batch
        self._worker = f"retrier-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                loop = asyncio.get_running_loop()
                lease_end = loop.time() + self._lease  # the claim's lease ends after this
                rows = await self._pool.fetch(
                    Q.claim_retries, self._batch, self._lease, self._worker
                )
                for n, row in enumerate(rows):
                    if loop.time() + self._send_timeout + LEASE_MARGIN_SECONDS > lease_end:
                        # Its lease could run out while it is sent, and another replica
                        # send it too: left to the lease (claimed again once it is over).
                        log.warning("retrier.lease_short", left=len(rows) - n)
                        break
                    await self.retry(row)
            except DATABASE_ERRORS as exc:
                log.warning("retrier.failed", error=repr(exc))
                rows = []
            if len(rows) < self._batch:
                self._wake.clear()
                await woken(self._wake, self._poll)

    async def retry(self, row: asyncpg.Record) -> None:
        record = InputRecord(
            row["topic"],
            row["partition"],
            row["offset"],
            row["key"],
            row["value"],
            # A dead letter stored before null headers were left out may hold one.
            [
                (name, value)
                for name, value in zip(row["header_names"], row["header_values"], strict=True)
                if value is not None
            ],
        )
        ids = EventIds(row["event_id"], row["event_source"], row["event_type"])
        tries = row["attempts"] + 1
        try:
            consumed = fanout.decode(record.headers, record.key, record.value, record.topic)
        except Exception as exc:  # the record's fault, as the consumer judges it: not a crash
            reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            letter = Letter(record, ids, row["targets"], tries, reason, "undecodable")
            await self._dead.give_up(row["id"], self._worker, letter, row["targets"])
            return
        targets = list(row["targets"])
        if any(t != WEBHOOKS and not t.startswith(ROUTE_PREFIX) for t in targets):
            # A dead letter of a record that could not be decoded ("decode") or routed
            # ("routing"), redriven: it is owed what a fresh event is owed now.
            try:
                targets = self._dispatcher.targets_of(consumed)
            except Exception as exc:  # still the record's fault, not a crash
                reason = f"processing it failed: {type(exc).__name__}: {exc}"
                letter = Letter(record, ids, targets, tries, reason, "target")
                await self._dead.give_up(row["id"], self._worker, letter, row["targets"])
                return
        [outcome] = await self._dispatcher.dispatch([(consumed, targets)])
        if outcome.dead:
            reason = reasons(outcome.dead)
            if not outcome.failed:
                letter = Letter(record, ids, list(outcome.dead), tries, reason, "target")
                await self._dead.give_up(row["id"], self._worker, letter, row["targets"])
                return
            await self._dead.bury(Letter(record, ids, list(outcome.dead), tries, reason, "target"))
        if not outcome.failed:
            await self._pool.execute(Q.retry_done, row["id"], self._worker, row["targets"])
            log.info("event.retried", event_id=ids.event_id, tries=tries)
            return
        reason = reasons(outcome.failed)
        if self._schedule.exhausted(tries):
            letter = Letter(record, ids, list(outcome.failed), tries, reason, "exhausted")
            await self._dead.give_up(row["id"], self._worker, letter, row["targets"])
            return
        EVENTS_RETRY.labels("dispatch").inc()
        delay = self._schedule.delay_after(tries)
        await self._pool.execute(
            Q.retry_again,
            row["id"],
            self._worker,
            list(outcome.failed),
            reason,
            delay,
            row["targets"],
        )
        log.warning("event.retry_failed", event_id=ids.event_id, tries=tries, retry_in=delay)
