"""WebhookService over gRPC: proto ↔ domain, every call scoped to the caller's tenant."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import structlog
from herald.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc

from herald.runtime.auth import TENANT
from herald.runtime.errors import FieldViolation, InvalidArgument, besides
from herald.runtime.pagination import page_of
from herald.runtime.timestamps import datetime_of, seconds_of, timestamp
from herald.runtime.type_patterns import matches
from herald.services.webhooks import model
from herald.services.webhooks.convert import (
    data_of_test_event,
    delivery_to_proto,
    duration_problems,
    malformed_durations,
    spec_of,
    to_proto,
)
from herald.services.webhooks.deliveries import DELIVERY_ORDER, Deliveries
from herald.services.webhooks.event_types import EventTypeNames
from herald.services.webhooks.secret_box import generate_secret
from herald.services.webhooks.signing import DEFAULT_HEADER_PREFIX
from herald.services.webhooks.store import WEBHOOK_ORDER, WebhookStore

log = structlog.get_logger("herald.webhooks")
Context = grpc.aio.ServicerContext[Any, Any]
_STATUS_NAMES = {
    webhooks_pb2.DELIVERY_STATUS_PENDING: "pending",
    webhooks_pb2.DELIVERY_STATUS_DELIVERED: "delivered",
    webhooks_pb2.DELIVERY_STATUS_FAILED: "failed",
}
DEFAULT_GRACE = 24 * 3600.0
DEFAULT_STATS_RANGE = timedelta(days=1)  # of GetDeliveryStats, up to end_time
EARLIEST = datetime.min.replace(tzinfo=UTC)  # protobuf's earliest Timestamp too
MAX_GRACE = 7 * 24 * 3600.0


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    """The management RPCs."""

    def __init__(
        self,
        store: WebhookStore,
        event_types: EventTypeNames,
        deliveries: Deliveries,
        header_prefix: str = DEFAULT_HEADER_PREFIX,
        untried: Callable[[str], None] = lambda webhook_id: None,
    ) -> None:
        """``untried``: a webhook got another URL or was re-enabled; what this process's
        delivery worker measured of its endpoint (slow, say) is about the old one."""
        self._store = store
        self._header_prefix = header_prefix  # Herald's own headers: not a webhook's
        self._event_types = event_types
        self._log = deliveries
        self._untried = untried

    async def CreateWebhook(
        self, request: webhooks_pb2.CreateWebhookRequest, context: Context
    ) -> webhooks_pb2.CreateWebhookResponse:
        """Validates and stores a subscription; shows its secret this once."""
        spec = spec_of(request.webhook)
        problems = besides(malformed_durations(request.webhook), await self._check(spec))
        if request.secret:
            problems += model.check_secret(request.secret, "secret")
        if problems:
            raise InvalidArgument(problems)
        secret = request.secret or generate_secret()
        stored = await self._store.create(TENANT.get(), spec, secret)
        log.info(
            "webhook.created",
            webhook_id=stored.id,
            tenant=TENANT.get(),
            event_types=list(spec.event_types),
        )
        return webhooks_pb2.CreateWebhookResponse(webhook=to_proto(stored), secret=secret)

    async def GetWebhook(
        self, request: webhooks_pb2.GetWebhookRequest, context: Context
    ) -> webhooks_pb2.GetWebhookResponse:
        """One subscription."""
        stored = await self._store.get(TENANT.get(), _required_id(request.id))
        return webhooks_pb2.GetWebhookResponse(webhook=to_proto(stored))

    async def ListWebhooks(
        self, request: webhooks_pb2.ListWebhooksRequest, context: Context
    ) -> webhooks_pb2.ListWebhooksResponse:
        """A page of the tenant's subscriptions."""
        tenant = TENANT.get()
        page = page_of(request.page_size, request.page_token, tenant, key=WEBHOOK_ORDER)
        listing = await self._store.page(tenant, page)
        return webhooks_pb2.ListWebhooksResponse(
            webhooks=[to_proto(s) for s in listing.items],
            next_page_token=listing.next_page_token,
            total_size=listing.total_size,
        )

    async def UpdateWebhook(
        self, request: webhooks_pb2.UpdateWebhookRequest, context: Context
    ) -> webhooks_pb2.UpdateWebhookResponse:
        """Changes the fields named in update_mask (AIP-134)."""
        paths = list(request.update_mask.paths)
        unknown = [p for p in paths if p not in model.UPDATABLE]
        if not paths or unknown:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "update_mask",
                        f"name the fields to change among {sorted(model.UPDATABLE)}"
                        + (f"; unknown: {unknown}" if unknown else ""),
                    )
                ]
            )
        given = spec_of(request.webhook)
        malformed = malformed_durations(request.webhook) if "retry_policy" in paths else []
        known = await self._event_types.names()
        if "event_types" in paths and not _all_known(given.event_types, known):
            known = await self._refreshed()  # a type created a moment ago

        def change(current: model.WebhookSpec) -> model.WebhookSpec:
            # A header stored before it became Herald's own is not sent: it is dropped,
            # not held against a change of other fields (re-activating, say).
            current = current.without_own_headers(self._header_prefix)
            merged = current.updated(given, paths)
            problems = besides(malformed, model.check(merged, known, self._header_prefix))
            if problems:
                raise InvalidArgument(problems)
            return merged

        webhook_id = _required_id(request.webhook.id, "webhook.id")
        stored = await self._store.update(TENANT.get(), webhook_id, change)
        if "url" in paths or "active" in paths:
            self._untried(stored.id)
        log.info("webhook.updated", webhook_id=stored.id, tenant=TENANT.get(), fields=paths)
        return webhooks_pb2.UpdateWebhookResponse(webhook=to_proto(stored))

    async def DeleteWebhook(
        self, request: webhooks_pb2.DeleteWebhookRequest, context: Context
    ) -> webhooks_pb2.DeleteWebhookResponse:
        """Removes a subscription."""
        await self._store.delete(TENANT.get(), _required_id(request.id))
        log.info("webhook.deleted", webhook_id=request.id, tenant=TENANT.get())
        return webhooks_pb2.DeleteWebhookResponse()

    async def GetWebhookSecret(
        self, request: webhooks_pb2.GetWebhookSecretRequest, context: Context
    ) -> webhooks_pb2.GetWebhookSecretResponse:
        """The current signing secret (an explicit call; never in lists or logs)."""
        secret = await self._store.secret(TENANT.get(), _required_id(request.id))
        return webhooks_pb2.GetWebhookSecretResponse(secret=secret)

    async def RotateWebhookSecret(
        self, request: webhooks_pb2.RotateWebhookSecretRequest, context: Context
    ) -> webhooks_pb2.RotateWebhookSecretResponse:
        """A new secret; the previous one keeps signing during the grace period."""
        grace = DEFAULT_GRACE
        if request.HasField("grace_period"):
            if malformed := duration_problems(request.grace_period, "grace_period"):
                raise InvalidArgument(malformed)
            grace = seconds_of(request.grace_period, "grace_period")
        problems = []
        if not 0 <= grace <= MAX_GRACE:
            problems.append(FieldViolation("grace_period", "between 0 and 7 days"))
        if request.new_secret:
            problems += model.check_secret(request.new_secret, "new_secret")
        if problems:
            raise InvalidArgument(problems)
        secret = request.new_secret or generate_secret()
        expires = await self._store.rotate(TENANT.get(), _required_id(request.id), secret, grace)
        log.info(
            "webhook.secret_rotated",
            webhook_id=request.id,
            tenant=TENANT.get(),
            grace_seconds=grace,
        )
        return webhooks_pb2.RotateWebhookSecretResponse(
            secret=secret, previous_secret_expire_time=timestamp(expires)
        )

    async def ListDeliveries(
        self, request: webhooks_pb2.ListDeliveriesRequest, context: Context
    ) -> webhooks_pb2.ListDeliveriesResponse:
        """A webhook's delivery log, newest first (the seed's /logs)."""
        tenant = TENANT.get()
        webhook_id = _required_id(request.webhook_id, "webhook_id")
        query = (tenant, webhook_id, _status_filter(request.status))
        page = page_of(request.page_size, request.page_token, *query, key=DELIVERY_ORDER)
        listing = await self._log.page(*query, page)
        return webhooks_pb2.ListDeliveriesResponse(
            deliveries=[delivery_to_proto(r) for r in listing.items],
            next_page_token=listing.next_page_token,
            total_size=listing.total_size,
        )

    async def GetDeliveryStats(
        self, request: webhooks_pb2.GetDeliveryStatsRequest, context: Context
    ) -> webhooks_pb2.GetDeliveryStatsResponse:
        """Totals, success rate, counts per event type, response times (the seed's /stats)."""
        end = (
            datetime_of(request.end_time, "end_time")
            if request.HasField("end_time")
            else datetime.now(UTC)
        )
        if request.HasField("start_time"):
            start = datetime_of(request.start_time, "start_time")
        elif end - EARLIEST >= DEFAULT_STATS_RANGE:
            start = end - DEFAULT_STATS_RANGE
        else:  # a day before end_time is before year 1: from the start of year 1
            start = EARLIEST
            if start >= end:
                raise InvalidArgument([FieldViolation("end_time", "must be after year 1 began")])
        if start >= end:
            raise InvalidArgument([FieldViolation("start_time", "must be before end_time")])
        webhook_id = _required_id(request.webhook_id, "webhook_id")
        stats = await self._log.stats(TENANT.get(), webhook_id, start, end)
        return webhooks_pb2.GetDeliveryStatsResponse(
            webhook_id=webhook_id,
            start_time=timestamp(start),
            end_time=timestamp(end),
            total=stats.total,
            successful=stats.successful,
            failed=stats.failed,
            success_rate=stats.success_rate,
            events=stats.events,
            response_times=webhooks_pb2.ResponseTimes(
                average_ms=stats.average_ms,
                p50_ms=stats.p50_ms,
                p95_ms=stats.p95_ms,
                p99_ms=stats.p99_ms,
            ),
        )

    async def SendTestEvent(
        self, request: webhooks_pb2.SendTestEventRequest, context: Context
    ) -> webhooks_pb2.SendTestEventResponse:
        """Queues a signed test event for the webhook, due now (the seed's /test)."""
        event_type = request.event_type or "herald.webhook.test"
        data, problems = data_of_test_event(request)
        if not model.EVENT_TYPE.fullmatch(event_type):
            problems.insert(0, FieldViolation("event_type", "an event type name"))
        if problems:
            raise InvalidArgument(problems)
        row = await self._log.send_test(
            TENANT.get(),
            _required_id(request.webhook_id, "webhook_id"),
            event_type,
            data,
            _request_id(context),
        )
        return webhooks_pb2.SendTestEventResponse(delivery=delivery_to_proto(row))

    async def ResendDelivery(
        self, request: webhooks_pb2.ResendDeliveryRequest, context: Context
    ) -> webhooks_pb2.ResendDeliveryResponse:
        """One more attempt of a finished delivery, now."""
        row = await self._log.resend(TENANT.get(), _required_id(request.delivery_id, "delivery_id"))
        log.info("delivery.resend", delivery_id=request.delivery_id, tenant=TENANT.get())
        return webhooks_pb2.ResendDeliveryResponse(delivery=delivery_to_proto(row))

    async def RecoverWebhook(
        self, request: webhooks_pb2.RecoverWebhookRequest, context: Context
    ) -> webhooks_pb2.RecoverWebhookResponse:
        """Re-queues the webhook's failed deliveries since a time."""
        if not request.HasField("since"):
            raise InvalidArgument([FieldViolation("since", "required")])
        count = await self._log.recover(
            TENANT.get(),
            _required_id(request.webhook_id, "webhook_id"),
            datetime_of(request.since, "since"),
        )
        log.info("webhook.recovered", webhook_id=request.webhook_id, requeued=count)
        return webhooks_pb2.RecoverWebhookResponse(requeued=count)

    async def _check(self, spec: model.WebhookSpec) -> list[FieldViolation]:
        known = await self._event_types.names()
        if not _all_known(spec.event_types, known):
            known = await self._refreshed()  # a type created a moment ago
        return model.check(spec, known, self._header_prefix)

    async def _refreshed(self) -> frozenset[str]:
        self._event_types.forget()
        return await self._event_types.names()


def _all_known(patterns: tuple[str, ...], known: frozenset[str]) -> bool:
    return all(any(matches(p, t) for t in known) for p in patterns)


def _status_filter(status: webhooks_pb2.DeliveryStatus.ValueType) -> str:
    """The stored status a ListDeliveries filter selects ("" for all). A number the enum
    does not define (proto3 enums are open) is refused, not read as "all"."""
    if status == webhooks_pb2.DELIVERY_STATUS_UNSPECIFIED:
        return ""
    if status not in _STATUS_NAMES:
        raise InvalidArgument(
            [FieldViolation("status", f"{status} is not a defined DeliveryStatus")]
        )
    return _STATUS_NAMES[status]


def _required_id(webhook_id: str, field_name: str = "id") -> str:
    if not webhook_id:
        raise InvalidArgument([FieldViolation(field_name, "required")])
    return webhook_id


def _request_id(context: Context) -> str:
    """The call's x-request-id metadata ("" when none), for its test event's POST."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str):
            return value
    return ""
