"""The delivery engine: claims due deliveries, makes signed HTTP POSTs, records what
they did (``outcomes``: a retry due, delivered, failed); what exhausts its retries or
finds its endpoint gone is escalated (``escalation``: dead letter, disabled webhook,
announcements).

Any number of workers run side by side: a claim is a lease (``next_attempt_at``
moved ahead past the HTTP timeout) taken with ``FOR UPDATE SKIP LOCKED``, and an
outcome is written only by the worker that still holds the claim, so an attempt is
never made twice at once. A slow endpoint ties up one of ``concurrency`` slots,
never a Kafka partition.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from opentelemetry import trace

from herald.runtime import json_fast
from herald.runtime.db import DATABASE_ERRORS
from herald.runtime.metrics import EVENTS_DLQ, EVENTS_RETRY
from herald.runtime.wake import woken
from herald.services.webhooks import attempt_span, retry
from herald.services.webhooks.escalation import Escalation
from herald.services.webhooks.http import DeliveryClient
from herald.services.webhooks.metrics import ATTEMPT_SECONDS, DELIVERIES
from herald.services.webhooks.model import own_header
from herald.services.webhooks.outcomes import OutcomeLog, outcome_of
from herald.services.webhooks.secret_box import SecretBox
from herald.services.webhooks.shares import Held, Shares
from herald.services.webhooks.signing import HERALD, HeaderNames, signature_headers
from herald.services.webhooks.slowness import Endpoint, SlownessLog
from herald.services.webhooks.store import Q, retry_policy_of

log = structlog.get_logger("herald.webhooks.engine")
RATE_RECHECK = 0.05  # seconds between looks at a rate-limited webhook's window
CLAIM_GATHER_SECONDS = 0.002  # how long a claim waits for more free slots
CLAIM_EVERY_SECONDS = 0.1  # the database is asked at least this often under load
LIMITED_RECHECK_SECONDS = 1.0  # rate-limited webhooks are looked for at least this often
DRAIN_MARGIN_SECONDS = 1.0  # a stop waits for attempts in flight: their timeout + this
# An offered delivery (claimed by intake) is started only while its lease has room for
# the attempt (its timeout) and its outcome's recording (this); an older one is left to
# its lease, which runs out and makes it due for any claim: started later, it could run
# beside a claim of the same delivery made after its lease ran out.
OFFER_MARGIN_SECONDS = 10.0
# An endpoint whose last attempt took this long, timed out or could not be reached is
# slow. A slow endpoint holds at most its share of a worker's attempts in flight, and so
# does one not tried yet by this worker unless stored as slow by a worker (slowness.py);
# a tenant's slow endpoints together hold at most the tenant's share (shares.py).
# One whose last attempt was quick is not capped, so one fast webhook can use every slot
# when nothing else is waiting.
SLOW_SECONDS = 1.0
SLOW_ERRORS = frozenset({"timeout", "connection_error"})
# The retry_reason ResendDelivery leaves (queries.sql): one attempt. RecoverWebhook's
# starts the retry policy afresh (recovered_after).
RESENT = "resend"
_BY_OUTCOME = {o: DELIVERIES.labels(o) for o in ("delivered", "retry", "dead", "gone")}
# The events seed's events_retry_total counts a delivery's retries too, beside the
# relay's and dispatch's (as events_dlq_total counts its dead letters).
_RETRIED = EVENTS_RETRY.labels("webhook")


class Engine:
    """See the module docstring; :meth:`run` is a worker of the service."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: DeliveryClient,
        box: SecretBox,
        escalation: Escalation,
        concurrency: int = 64,
        per_webhook: int = 0,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        disable_after: float | None = None,
        header_names: HeaderNames = HERALD,
    ) -> None:
        self._pool = pool
        self._names = header_names
        self._client = client
        self._box = box
        self._escalation = escalation
        self._concurrency = concurrency
        # Attempts in flight per webhook not known to be fast: one slow endpoint holds at
        # most a quarter, one tenant's slow endpoints together at most half.
        self._shares = Shares(per_webhook or max(1, concurrency // 4), concurrency // 2)
        self._slowness = SlownessLog(pool)  # what the workers found slow, stored
        self._deferred: list[asyncpg.Record] = []  # claimed, not attempted now: to hand back
        self._handed_back: set[uuid.UUID] = set()  # webhooks with deliveries deferred
        self._poll = poll_seconds
        # A webhook failing without a single 2xx for this long is disabled.
        self._disable_after = timedelta(seconds=disable_after) if disable_after else None
        self._wake = asyncio.Event()
        # Claims are made in this name, for this long (intake's too, for fresh rows).
        self.worker = f"worker-{uuid.uuid4().hex[:12]}"
        self.lease = lease_seconds
        # Claimed by intake for this engine: each with the loop time its lease ends by.
        self._offered: collections.deque[tuple[asyncpg.Record, float]] = collections.deque()
        self._in_flight: set[uuid.UUID] = set()  # deliveries whose attempt runs here
        self._claimed_at = 0.0  # loop time of the last claim from the database
        self._db_quiet = False  # that claim left nothing due, and no wake() since
        self._wakes = 0  # wake() calls so far: one during a claim is not lost to it
        self._posting = 0  # attempts started whose HTTP response is not in yet
        self._tasks: set[asyncio.Task[None]] = set()
        self._secrets: dict[tuple[uuid.UUID, bytes], str] = {}
        self._freed = asyncio.Event()  # set whenever an attempt finishes
        self._room_changed = asyncio.Event()  # set whenever room() may have grown
        self._claim_min = max(1, concurrency // 4)
        self._limited_pending = False  # rate-limited webhooks had deliveries due
        self._limited_checked_at = -math.inf  # loop time of the last look for them
        self._outcomes = OutcomeLog(pool, self.worker, escalation)

    def untried(self, webhook_id: str) -> None:
        """The webhook got another URL or was re-enabled (UpdateWebhook here): what
        this worker measured of its endpoint no longer holds; a probe finds out again."""
        self._shares.moved(uuid.UUID(webhook_id))
        self._wake.set()

    def wake(self) -> None:
        """New deliveries are due."""
        self._db_quiet = False
        self._wakes += 1
        self._wake.set()

    async def run(self) -> None:
        """Claims and attempts due deliveries until cancelled."""
        recorder = asyncio.create_task(self._outcomes.run())
        for webhook_id, tenant, endpoint in await self._slowness.load():
            self._shares.heard_slow(webhook_id, tenant, endpoint)
        try:
            while True:
                self._wake.clear()
                free = self._free()
                if free <= 0:  # every slot busy: wait for an attempt to finish
                    self._freed.clear()
                    await self._freed.wait()
                    continue
                loop_time = asyncio.get_running_loop().time()
                # After a claim that left nothing due, the database is asked again only
                # when woken (fresh unclaimed rows, a retry due) or after a poll interval.
                interval = self._poll if self._db_quiet else CLAIM_EVERY_SECONDS
                since = loop_time - self._claimed_at
                if self._offered and since < interval:
                    # Claimed by intake for us: no claim needed. The database is still
                    # asked every CLAIM_EVERY_SECONDS, so retries and rate-limited
                    # deliveries are not starved by a steady stream of fresh ones.
                    self._start_offered(free, loop_time)
                    continue
                if self._db_quiet and since < interval:
                    await woken(self._wake, interval - since)
                    continue
                self._claimed_at = loop_time
                self._db_quiet = False
                if free < self._claim_min and self._tasks:
                    # Few slots free while attempts run: let more finish, so one claim
                    # fetches many (a claim per freed slot cost more than the attempt).
                    await asyncio.sleep(CLAIM_GATHER_SECONDS)
                    free = self._free()
                wakes = self._wakes
                lease_end = loop_time + self.lease  # the claims' leases end after this
                reserve = self._limited_reserve(free, loop_time)
                claimed = await self._claim(free - reserve) if free > reserve else []
                throttled = False
                if len(claimed) < free:
                    unlimited = len(claimed)
                    limited, throttled = await self._claim_limited(free - unlimited)
                    # Looked for again at the next claim only if some were taken (more
                    # may be due): a throttled one waits for the next second's look.
                    self._limited_pending = bool(limited)
                    self._limited_checked_at = loop_time
                    claimed += limited
                    if reserve and unlimited == free - reserve and len(claimed) < free:
                        # The slots kept for rate-limited webhooks were not all taken,
                        # and the other deliveries may have more due.
                        claimed += await self._claim(free - len(claimed))
                for row in claimed:
                    self._start(row, lease_end)
                # Quiet only if nothing woke the engine meanwhile: deliveries handed back
                # (due again) while the claim ran were not seen by it, and waited for
                # the next poll.
                self._db_quiet = len(claimed) < free and not throttled and wakes == self._wakes
                if len(claimed) < free and not self._offered:
                    # A rate-limited webhook with more due: look again when its window moves.
                    wait = RATE_RECHECK if throttled else self._poll
                    await woken(self._wake, wait)
        finally:
            await self._drain()
            await self._slowness.flush()
            recorder.cancel()
            await asyncio.gather(recorder, return_exceptions=True)

    async def _drain(self) -> None:
        """On the way out: attempts in flight finish (within their HTTP timeout) and
        their outcomes are recorded, so what an endpoint received is not sent again;
        what is still running then is cut short (:meth:`release` hands it back)."""
        if not self._tasks:
            return
        _done, late = await asyncio.wait(set(self._tasks), timeout=self.drain_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    @property
    def drain_seconds(self) -> float:
        """The longest a stop waits for attempts in flight."""
        return self._client.timeout + DRAIN_MARGIN_SECONDS

    async def release(self) -> None:
        """Once the engine and intake have stopped: the deliveries this worker claimed
        and did not finish are due now for any worker, not when their lease runs out."""
        try:
            status = await self._pool.execute(Q.release_claims, self.worker)
        except DATABASE_ERRORS as exc:  # their leases run out instead
            log.warning("engine.release_failed", error=repr(exc))
            return
        log.info("engine.released", deliveries=int(status.split()[-1]), worker=self.worker)

    def _free(self) -> int:
        """Slots for new attempts. A slot is an HTTP request in flight: an attempt
        frees it once its response is in, while its outcome is being recorded (the
        group commit's latency would otherwise cap throughput at concurrency/latency).
        Attempts still recording are bounded too, at 4x concurrency."""
        return min(self._concurrency - self._posting, 4 * self._concurrency - len(self._tasks))

    def room(self) -> int:
        """How many fresh deliveries intake may claim for this engine now: free slots
        plus a slot's worth of queue, so none waits long on its lease."""
        return max(0, self._free() + self._concurrency - len(self._offered))

    async def wait_for_room(self, at_least: int) -> int:
        """Waits until :meth:`room` is at least ``at_least`` (capped at what room can
        reach); returns it."""
        at_least = min(at_least, 2 * self._concurrency)
        while True:
            self._room_changed.clear()
            room = self.room()
            if room >= at_least:
                return room
            await self._room_changed.wait()

    def offer(self, rows: list[asyncpg.Record]) -> None:
        """Deliveries already claimed in this engine's name, to attempt next."""
        lease_end = asyncio.get_running_loop().time() + self.lease  # claimed just before
        self._offered.extend((row, lease_end) for row in rows)
        self._wake.set()
        self._freed.set()

    def _limited_reserve(self, free: int, now: float) -> int:
        """Slots of a claim kept for rate-limited webhooks' due deliveries: a quarter
        (one at least) while the last look took some, or when the last look is
        LIMITED_RECHECK_SECONDS old; else none (they are looked for only when the other
        deliveries leave slots free). Without it a steady backlog of other deliveries
        left them no slot at all."""
        if self._limited_pending or now - self._limited_checked_at >= LIMITED_RECHECK_SECONDS:
            return max(1, free // 4)
        return 0

    def _start_offered(self, free: int, now: float) -> None:
        """Starts offered deliveries in up to ``free`` slots (``now``: the loop's time);
        one past its start-by time is left to its lease."""
        expired = 0
        while free > 0 and self._offered:
            row, lease_end = self._offered.popleft()
            if now > lease_end - self._client.timeout - OFFER_MARGIN_SECONDS:
                expired += 1
                continue
            self._start(row, lease_end)
            free -= 1
        if expired:
            log.warning(
                "engine.offers_expired",
                deliveries=expired,
                detail="claimed by intake and not started in time: attempted once "
                "their lease runs out",
            )

    def _start(self, row: asyncpg.Record, lease_end: float) -> None:
        """Starts an attempt of the delivery ``row``, claimed until loop time
        ``lease_end``."""
        if row["id"] in self._in_flight:
            # Claimed again while its attempt here runs, its outcome not recorded yet (its
            # lease ran out meanwhile): that attempt records it.
            return
        webhook_id = row["webhook_id"]
        endpoint = _endpoint(row)
        self._shares.at_endpoint(webhook_id, endpoint)  # another URL: untried again
        if row["slow"]:  # stored as slow: no probe past its tenant's share
            self._shares.heard_slow(webhook_id, row["tenant"], endpoint)
        if self._shares.capped(webhook_id, row["tenant"]):
            # A slow (or untried) endpoint with its share in flight: handed back, due
            # now; claims skip the webhook until one of its attempts is over.
            if not self._deferred:
                asyncio.get_running_loop().call_soon(self._hand_back_soon)
            self._deferred.append(row)
            self._handed_back.add(webhook_id)
            self._room_changed.set()  # no slot taken: intake may fetch more
            return
        slow = self._shares.start(webhook_id, row["tenant"])
        self._posting += 1
        self._in_flight.add(row["id"])
        task = asyncio.create_task(self._attempt_guarded(row, slow, lease_end))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _hand_back_soon(self) -> None:
        rows, self._deferred = self._deferred, []
        task = asyncio.ensure_future(self._hand_back(rows))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hand_back(self, rows: list[asyncpg.Record]) -> None:
        try:
            await self._pool.execute(Q.release_some, self.worker, [row["id"] for row in rows])
        except DATABASE_ERRORS as exc:  # their leases run out instead
            log.warning("engine.hand_back_failed", error=repr(exc), deliveries=len(rows))
            return
        # What held them back may be over already: an untried webhook's first attempt
        # answered quickly, or a slow one's attempt ended, while they were being handed
        # back. The claim that answer woke then ran before they were due again and
        # found nothing, and the next wake could be a slow attempt timing out a second
        # later: claim now. Not after every hand back: a slow webhook still at its
        # share would start a claim each time its backlog is handed back again.
        webhooks = {(row["webhook_id"], row["tenant"]) for row in rows}
        if any(not self._shares.capped(webhook, tenant) for webhook, tenant in webhooks):
            self.wake()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._freed.set()
        self._room_changed.set()

    async def _claim(self, limit: int) -> list[asyncpg.Record]:
        tenants, their_fast = self._shares.excluded_tenants()
        try:
            rows: list[asyncpg.Record] = await self._pool.fetch(
                Q.claim_due,
                limit,
                self.lease,
                self.worker,
                self._shares.excluded(),
                tenants,
                their_fast,
            )
        except DATABASE_ERRORS as exc:
            log.warning("engine.claim_failed", error=repr(exc))
            await asyncio.sleep(self._poll)
            return []
        return rows

    async def _claim_limited(self, limit: int) -> tuple[list[asyncpg.Record], bool]:
        """Claims due deliveries of rate-limited webhooks within their limits; also says
        whether some were held back by a limit."""
        claimed: list[asyncpg.Record] = []
        throttled = False
        try:
            for hook in await self._pool.fetch(Q.limited_with_due):
                if len(claimed) >= limit:
                    break
                async with self._pool.acquire() as conn, conn.transaction():
                    row = await conn.fetchrow(Q.lock_limited, hook["webhook_id"])
                    if row is None:
                        continue
                    sent = await conn.fetchrow(Q.recent_sends, hook["webhook_id"])
                    assert sent is not None
                    room = retry.rate_room(
                        row["rate_per_second"],
                        row["rate_per_minute"],
                        sent["second"],
                        sent["minute"],
                    )
                    take = min(room, limit - len(claimed))
                    share = self._shares.room(hook["webhook_id"], hook["tenant"])
                    if share is not None:
                        take = min(take, share)
                    if take <= 0:
                        throttled = True
                        continue
                    rows = await conn.fetch(
                        Q.claim_limited, hook["webhook_id"], take, self.lease, self.worker
                    )
                    if rows:
                        await conn.execute(Q.record_sends, hook["webhook_id"], len(rows))
                    throttled = throttled or len(rows) == room
                    claimed += rows
        except DATABASE_ERRORS as exc:
            log.warning("engine.claim_failed", error=repr(exc))
        return claimed, throttled

    async def _attempt_guarded(
        self, row: asyncpg.Record, slow: Held | None, lease_end: float
    ) -> None:
        """``slow``: what the attempt holds of its tenant's share (see shares.py)."""
        posting = [True]
        webhook_id = row["webhook_id"]

        def posted() -> None:  # the HTTP part is over: its slot is free (once)
            if posting[0]:
                posting[0] = False
                self._posting -= 1
                shares = self._shares
                if (
                    shares.capped(webhook_id, row["tenant"])
                    or (slow is not None and shares.tenant_full(slow.tenant))
                    or webhook_id in self._handed_back
                ):
                    self._handed_back.discard(webhook_id)
                    self.wake()  # its (or its tenant's) deliveries may be claimed again
                shares.finish(webhook_id, slow)
                self._freed.set()
                self._room_changed.set()

        let_go = [False]

        def recorded() -> None:
            # Its outcome is committed and the claim let go: claimed again from now on (a
            # retry due at once, Retry-After: 0), it is a new attempt, not this one's
            # (whose id in _in_flight this one must then leave alone).
            let_go[0] = True
            self._in_flight.discard(row["id"])

        try:
            await self.attempt(row, posted, lease_end, recorded)
        except Exception:  # the claim's lease runs out and the delivery comes due again
            log.exception("engine.attempt_crashed", delivery_id=str(row["id"]))
        finally:
            posted()
            if not let_go[0]:
                self._in_flight.discard(row["id"])

    async def attempt(
        self,
        row: asyncpg.Record,
        posted: Callable[[], None] = lambda: None,
        lease_end: float | None = None,
        recorded: Callable[[], None] = lambda: None,
    ) -> None:
        """One signed POST for one claimed delivery, and its consequences; ``posted``
        is called once the response (or failure) is in, ``recorded`` once its outcome is
        (through database failures, until the claim's lease ends: loop time
        ``lease_end``), before what follows it (disabling a webhook failing too long)."""
        hook = row  # the claim brought the webhook's columns along
        number = row["attempts"] + 1
        context: dict[str, str] = json_fast.loads(row["context"])
        headers, span = self._prepare(row, hook, context)
        started = datetime.now(UTC)
        begun = time.monotonic()
        try:
            result = await self._client.post(hook["url"], bytes(row["body"]), headers)
            finished = datetime.now(UTC)
            # The whole attempt, body included: an endpoint that answers at once and then
            # withholds its body holds the slot as long as one that never answers.
            took = time.monotonic() - begun
            slow = result.error in SLOW_ERRORS or took >= SLOW_SECONDS
            endpoint = _endpoint(row)
            if self._shares.learned(
                row["webhook_id"], row["tenant"], fast=not slow, endpoint=endpoint
            ) and (slow != row["slow"]):  # a new verdict here, not what is stored: store it
                self._slowness.record(row["webhook_id"], slow=slow, endpoint=endpoint)
        finally:
            posted()
        policy = retry_policy_of(hook)
        verdict = retry.decide(
            policy,
            number - row["recovered_after"],  # since RecoverWebhook, if it was recovered
            result.status_code,
            result.error,
            result.retry_after,
            resent=row["retry_reason"] == RESENT,
        )
        ATTEMPT_SECONDS.observe(result.elapsed)
        then = None
        if verdict.outcome == "dead":
            then = self._escalation.dead_letter(row, hook, verdict, result)
        elif verdict.outcome == "gone":
            then = self._escalation.gone(row, hook, "the endpoint answered 410 Gone")
        outcome = outcome_of(row, number, started, finished, result, verdict, then)
        if span is not None:
            attempt_span.end(span, result.status_code, result.error, verdict.outcome)
        await self._outcomes.submit(outcome, lease_end)
        recorded()
        _BY_OUTCOME[verdict.outcome].inc()
        log.info(
            "delivery.attempted",
            delivery_id=str(row["id"]),
            webhook_id=str(hook["webhook_id"]),
            event_id=row["event_id"],
            type=row["event_type"],
            idempotency_key=context.get("idempotency-key"),
            request_id=context.get("x-request-id"),
            status_code=result.status_code,
            error=result.error,
            attempt=number,
            outcome=verdict.outcome,
            next_in=verdict.delay or None,
        )
        if verdict.outcome == "retry":  # be awake when it comes due
            _RETRIED.inc()
            asyncio.get_running_loop().call_later(verdict.delay, self.wake)
        if verdict.outcome == "dead":
            EVENTS_DLQ.labels("delivery_exhausted").inc()
        if verdict.outcome in ("retry", "dead") and self._disable_after is not None:
            since = await self._pool.fetchval(Q.failing_since, row["webhook_id"])
            if since is not None and datetime.now(UTC) - since >= self._disable_after:
                await self._escalation.disable(
                    row, hook, f"failing without a 2xx since {since.isoformat()}"
                )

    def _prepare(
        self, row: asyncpg.Record, hook: asyncpg.Record, context: dict[str, str]
    ) -> tuple[dict[str, str], trace.Span | None]:
        """The POST's headers, its traceparent that of the attempt's event.consume span (a
        child of the delivery job's), and that span while spans are recorded."""
        hop = attempt_span.start(row, hook, context)
        headers = self._headers(row, hook, context)
        if hop.traceparent:
            headers[attempt_span.TRACEPARENT] = hop.traceparent
        return headers, hop.span

    def _headers(
        self, row: asyncpg.Record, hook: asyncpg.Record, context: dict[str, str]
    ) -> dict[str, str]:
        secrets = [self._secret(hook["secret"], hook["webhook_id"])]
        if hook["previous_secret"] is not None and hook["previous_valid"]:
            secrets.append(self._secret(hook["previous_secret"], hook["webhook_id"]))
        now = int(time.time())
        names = self._names
        headers: dict[str, str] = json_fast.loads(hook["headers"])
        if headers:  # one stored before WEBHOOKS_HEADER_PREFIX named it Herald's is dropped
            headers = {k: v for k, v in headers.items() if not own_header(k, names.prefix)}
        headers.update(context)
        headers[names.event] = row["event_type"]
        headers[names.delivery] = str(row["id"])
        headers[names.timestamp] = str(now)
        headers.update(signature_headers(bytes(row["body"]), str(row["id"]), now, secrets, names))
        if row["attempts"] > 0:
            headers[names.retry_count] = str(row["attempts"])
            headers[names.retry_reason] = row["retry_reason"] or "unknown"
            # Whole seconds, rounded up, as the seed's "X-Katya-Retry-After: 4" and HTTP's
            # Retry-After write them ("0.96782" broke receivers that parse an integer).
            headers[names.retry_after] = str(math.ceil(row["retry_after"] or 0))
        return headers

    def _secret(self, sealed: bytes, webhook_id: uuid.UUID) -> str:
        """The secret in plain text; decrypted once per (webhook, ciphertext) while it is
        in use (a rotation makes a new ciphertext)."""
        key = (webhook_id, bytes(sealed))
        secret = self._secrets.get(key)
        if secret is None:
            if len(self._secrets) >= 10_000:
                self._secrets.clear()
            secret = self._secrets[key] = self._box.open(key[1], str(webhook_id))
        return secret


def _endpoint(row: asyncpg.Record) -> Endpoint:
    """What a slowness verdict holds for: the webhook's URL, and when it was last
    enabled (a re-enabled endpoint is tried afresh)."""
    return row["url"], row["activated_at"]
