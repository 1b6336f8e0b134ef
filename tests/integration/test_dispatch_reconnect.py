"""Dispatch finds the webhooks service again soon after it is back: its channel tries to
reconnect every second, not on gRPC's default backoff (up to two minutes)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from herald.webhooks.v1 import subscriptions_pb2, subscriptions_pb2_grpc

from herald.runtime.channels import internal_channel
from herald.services.dispatch.subscriptions import SubscriptionCache

pytestmark = pytest.mark.integration
# Long enough for gRPC's default backoff (1 s, x1.6, ±20 % jitter) to have reached
# attempts 5 s or more apart: with it, the first attempt after the restart came ~4.5 s
# later (at least 1.4 s).
OUTAGE_SECONDS = 11.5


class Subscriptions(subscriptions_pb2_grpc.SubscriptionServiceServicer):
    """The webhooks service's SubscriptionService, as far as dispatch's cache sees it."""

    async def ListSubscriptions(
        self, request: subscriptions_pb2.ListSubscriptionsRequest, context: Any
    ) -> subscriptions_pb2.ListSubscriptionsResponse:
        return subscriptions_pb2.ListSubscriptionsResponse(version=1)


async def serve(port: int = 0) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    subscriptions_pb2_grpc.add_SubscriptionServiceServicer_to_server(Subscriptions(), server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


@pytest.mark.timeout(60)
async def test_dispatch_finds_a_restarted_webhooks_service_within_about_a_second() -> None:
    server, port = await serve()
    async with internal_channel(f"127.0.0.1:{port}") as channel:
        cache = SubscriptionCache(channel, "key", refresh_seconds=0.1)
        assert await cache.refresh()
        await server.stop(0)
        down_until = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < down_until:  # dispatch keeps asking, as its worker does
            assert not await cache.refresh()
            await asyncio.sleep(0.1)
        server, _ = await serve(port)
        back = time.monotonic()
        try:
            while not await cache.refresh():
                await asyncio.sleep(0.1)
            found_after = time.monotonic() - back
        finally:
            await server.stop(0)
    assert found_after <= 2.5, f"found again {found_after:.1f} s after it was back"
