"""Dispatch's subscription cache: how its failed refreshes are logged (the stub is a
stand-in; matching itself is in test_webhook_model.py)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import grpc
from herald.webhooks.v1 import subscriptions_pb2
from structlog.testing import capture_logs

from herald.services.dispatch.subscriptions import SubscriptionCache


class FlakyStub:
    """ListSubscriptions failing while ``down``."""

    def __init__(self) -> None:
        self.down = True
        self.subscriptions: list[subscriptions_pb2.Subscription] = []

    async def ListSubscriptions(
        self, request: Any, **_: Any
    ) -> subscriptions_pb2.ListSubscriptionsResponse:
        if self.down:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details="connection refused",
            )
        return subscriptions_pb2.ListSubscriptionsResponse(
            version=1, subscriptions=self.subscriptions
        )


def _cache(start_grace: float, warn_every: float) -> tuple[SubscriptionCache, FlakyStub]:
    cache = SubscriptionCache(
        grpc.aio.insecure_channel("127.0.0.1:1"),  # never used: the stub is replaced
        "key",
        start_grace=start_grace,
        warn_every=warn_every,
    )
    stub = FlakyStub()
    cache._stub = stub  # type: ignore[assignment]
    return cache, stub


def _events(logs: list[MutableMapping[str, Any]]) -> list[tuple[str, int]]:
    return [(x["event"], x["failures"]) for x in logs if x["event"].startswith("subscriptions.")]


async def test_an_outage_is_one_warning_per_interval_and_one_recovery() -> None:
    cache, stub = _cache(start_grace=0, warn_every=3600)
    with capture_logs() as logs:
        for _ in range(20):
            assert not await cache.refresh()
        stub.down = False
        assert await cache.refresh()
        assert await cache.refresh()
    assert _events(logs) == [
        ("subscriptions.refresh_failed", 1),
        ("subscriptions.refresh_recovered", 20),
    ]


async def test_every_failure_warns_when_the_interval_is_zero() -> None:
    cache, _ = _cache(start_grace=0, warn_every=0)
    with capture_logs() as logs:
        for _ in range(3):
            await cache.refresh()
    assert _events(logs) == [("subscriptions.refresh_failed", n) for n in (1, 2, 3)]


async def test_failures_while_the_webhooks_service_starts_are_not_warned_about() -> None:
    cache, stub = _cache(start_grace=3600, warn_every=0)
    with capture_logs() as logs:
        await cache.refresh()
        await cache.refresh()
        stub.down = False
        assert await cache.refresh()
    assert _events(logs) == []
    assert cache.match("any.type") == []


async def test_an_event_naming_a_tenant_matches_only_that_tenants_webhooks() -> None:
    cache, stub = _cache(start_grace=0, warn_every=0)
    stub.down = False
    stub.subscriptions = [
        subscriptions_pb2.Subscription(webhook_id="a", event_types=["*"], tenant="acme"),
        subscriptions_pb2.Subscription(webhook_id="g", event_types=["herald.*"], tenant="globex"),
    ]
    assert await cache.refresh()
    assert sorted(cache.match("herald.webhook.disabled")) == ["a", "g"]
    assert cache.match("herald.webhook.disabled", "acme") == ["a"]
    assert cache.match("herald.webhook.disabled", "initech") == []
