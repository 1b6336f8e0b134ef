"""Which webhooks want an event: a cache of the webhooks service's subscriptions.

Refreshed every ``refresh_seconds`` (default 0.5 s) by asking for changes since the
version held, so a created, changed or deleted webhook is seen within a second. When
refreshing has failed for longer than ``max_staleness`` the cache refuses to answer
(:class:`WebhooksUnavailable`): dispatch then parks the event's webhook target for a
retry instead of matching against a view that may be long out of date.

Failed refreshes are logged (``subscriptions.refresh_failed``) at most every
``warn_every`` seconds while they go on, with how long and how many, and the recovery
once (``subscriptions.refresh_recovered``): an outage of the webhooks service is not two
warnings a second. At start, the webhooks service may still be starting: failures before
the first load are logged only after ``start_grace`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import grpc
import structlog
from herald.webhooks.v1 import subscriptions_pb2, subscriptions_pb2_grpc

from herald.runtime.type_patterns import PatternIndex
from herald.runtime.wake import woken

log = structlog.get_logger("herald.dispatch.subscriptions")


class WebhooksUnavailable(Exception):
    """The subscriptions are not known well enough to match."""


class SubscriptionCache:
    """See the module docstring; :meth:`run` is a worker of the service."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        key: str,
        refresh_seconds: float = 0.5,
        max_staleness: float = 10.0,
        warn_every: float = 30.0,
        start_grace: float = 10.0,
    ) -> None:
        self._stub = subscriptions_pb2_grpc.SubscriptionServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {key}"),)
        self._refresh = refresh_seconds
        self._max_staleness = max_staleness
        self._version = 0
        self._loaded_at: float | None = None
        self._last_error = "not loaded yet"
        self._by_pattern: PatternIndex[str] = PatternIndex()
        self._tenant_of: dict[str, str] = {}
        self._ready = asyncio.Event()
        self._warn_every = warn_every
        self._created = time.monotonic()
        self._start_grace = start_grace
        self._failing_since: float | None = None
        self._failures = 0
        self._warned_at: float | None = None  # the last warning of this run of failures

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._refresh)

    async def refresh(self) -> bool:
        """Asks for changes; True when the cache is now current."""
        try:
            reply = await self._stub.ListSubscriptions(
                subscriptions_pb2.ListSubscriptionsRequest(known_version=self._version),
                metadata=self._metadata,
                timeout=max(self._refresh * 4, 2.0),
            )
        except grpc.aio.AioRpcError as exc:
            self._last_error = f"{exc.code().name}: {exc.details()}"
            self._failed()
            return False
        if self._warned_at is not None:
            log.info(
                "subscriptions.refresh_recovered",
                failed_for=round(time.monotonic() - (self._failing_since or 0), 1),
                failures=self._failures,
            )
        self._failing_since, self._failures, self._warned_at = None, 0, None
        if not reply.unchanged:
            self._index(reply.subscriptions)
            self._version = reply.version
        self._loaded_at = time.monotonic()
        self._ready.set()
        return True

    def _failed(self) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        self._failures += 1
        if self._loaded_at is None and now - self._created < self._start_grace:
            return  # the webhooks service may still be starting
        if self._warned_at is not None and now - self._warned_at < self._warn_every:
            return
        self._warned_at = now
        log.warning(
            "subscriptions.refresh_failed",
            error=self._last_error,
            failing_for=round(now - self._failing_since, 1),
            failures=self._failures,
            next_warning_in=self._warn_every,
        )

    async def wait_ready(self, within: float) -> bool:
        """Waits (up to ``within`` s) for the first successful load."""
        return await woken(self._ready, within)

    def _index(self, subscriptions: Iterable[subscriptions_pb2.Subscription]) -> None:
        index: PatternIndex[str] = PatternIndex()
        tenant_of: dict[str, str] = {}
        for sub in subscriptions:
            for pattern in dict.fromkeys(sub.event_types):
                index.add(pattern, sub.webhook_id)
            tenant_of[sub.webhook_id] = sub.tenant
        self._by_pattern, self._tenant_of = index, tenant_of

    def match(self, event_type: str, tenant: str | None = None) -> list[str]:
        """The ids of the active webhooks wanting ``event_type`` (each once); with
        ``tenant`` (the event's ``heraldtenant`` attribute), only that tenant's."""
        if self._loaded_at is None or time.monotonic() - self._loaded_at > self._max_staleness:
            raise WebhooksUnavailable(f"webhook subscriptions unknown: {self._last_error}")
        hooks = self._by_pattern.match(event_type)
        if tenant is None:
            return hooks
        return [hook for hook in hooks if self._tenant_of.get(hook) == tenant]
