"""SubscriptionService: the active webhooks' event types, for dispatch's matching cache."""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc
from herald.webhooks.v1 import subscriptions_pb2, subscriptions_pb2_grpc

from herald.services.webhooks.store import Q


class SubscriptionServicer(subscriptions_pb2_grpc.SubscriptionServiceServicer):
    """Answers from PostgreSQL; cheap when nothing changed (one row read)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ListSubscriptions(
        self,
        request: subscriptions_pb2.ListSubscriptionsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscriptions_pb2.ListSubscriptionsResponse:
        """Every active webhook's event types and tenant, or ``unchanged`` when the caller
        already knows the current version."""
        version = int(await self._pool.fetchval(Q.subscription_version))
        if request.known_version == version:
            return subscriptions_pb2.ListSubscriptionsResponse(version=version, unchanged=True)
        rows = await self._pool.fetch(Q.subscriptions)
        return subscriptions_pb2.ListSubscriptionsResponse(
            version=int(rows[0]["version"]),
            subscriptions=[
                subscriptions_pb2.Subscription(
                    webhook_id=str(row["id"]), event_types=row["event_types"], tenant=row["tenant"]
                )
                for row in rows
                if row["id"] is not None
            ],
        )
