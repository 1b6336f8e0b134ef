"""Dispatch end to end: events published through ingest, fanned out by dispatch to
NotificationJobs on Kafka and to webhooks (delivered by the webhooks service to a real
receiver); retries, dead letters and redrive, against the real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format, struct_pb2
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import status_pb2
from herald.dispatch.v1 import dispatch_pb2, dispatch_pb2_grpc, notification_pb2
from herald.ingest.v1 import ingest_pb2
from herald.webhooks.v1 import delivery_pb2, webhooks_pb2, webhooks_pb2_grpc
from prometheus_client import REGISTRY

from herald.runtime import kafka
from herald.runtime.dlq import InputRecord
from herald.runtime.errors import bad_request_of
from herald.runtime.server import Running, start
from herald.services.dispatch.app import build as build_dispatch
from herald.services.dispatch.deadletters import EventIds, stored
from herald.services.dispatch.settings import DispatchSettings
from herald.services.webhooks.app import build as build_webhooks
from herald.services.webhooks.settings import WebhooksSettings
from tests.conftest import Infra
from tests.fixtures.seeds import LEGACY_EXAMPLES
from tests.integration.conftest import (
    ACME_KEY,
    GLOBEX_KEY,
    INTERNAL_KEY,
    IngestUnderTest,
    start_ingest,
    webhooks_settings,
)
from tests.integration.test_webhook_delivery import announced, announced_trace, ingest_events
from tests.kafka_helpers import create_small_topic, headers, read_matching
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration
KEY = (("authorization", f"Bearer {ACME_KEY}"),)
Op = dispatch_pb2.Condition.Operator


@dataclass
class Flow:
    infra: Infra
    database_url: str
    ingest: IngestUnderTest
    webhooks: Running
    hooks: webhooks_pb2_grpc.WebhookServiceAsyncStub
    webhooks_settings: WebhooksSettings
    dispatch: list[Running]
    stub: dispatch_pb2_grpc.DispatchServiceAsyncStub
    channels: list[grpc.aio.Channel]
    settings: DispatchSettings

    async def publish(
        self,
        event_type: str,
        data: dict[str, Any],
        metadata: tuple[tuple[str, str], ...] = (),
        **attrs: str,
    ) -> str:
        """Publishes a structured CloudEvent (``attrs``: more attributes) through ingest
        with the call's ``metadata``; returns its id."""
        event_id = str(uuid.uuid4())
        doc = {
            "specversion": "1.0",
            "id": event_id,
            "source": attrs.pop("source", "urn:test"),
            "type": event_type,
            "time": "2026-11-22T10:00:00Z",
            "datacontenttype": "application/json",
            "data": data,
            **attrs,
        }
        await self.ingest.stub.Publish(
            ingest_pb2.PublishRequest(json=json.dumps(doc)), metadata=metadata
        )
        return event_id

    async def push_route(
        self, name: str, route_filter: dispatch_pb2.RouteFilter, template_code: str = "t"
    ) -> tuple[str, dispatch_pb2.Route]:
        """A route making push jobs for ``$data.to`` on a fresh topic: (the topic, the
        route), once every replica has reloaded its routes (NOTIFY)."""
        topic = f"herald.test.jobs.{uuid.uuid4().hex[:8]}"
        target = dispatch_pb2.JobTarget(
            topic=topic, channel="push", template_code=template_code, recipient="$data.to"
        )
        created = await self.stub.CreateRoute(
            dispatch_pb2.CreateRouteRequest(
                route=dispatch_pb2.Route(name=name, filter=route_filter, target=target)
            )
        )
        await asyncio.sleep(0.5)
        return topic, created.route

    async def produce_raw(
        self, value: bytes, record_headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        """One record onto the events topic, as any producer could write it."""
        producer = kafka.make_producer(self.infra.kafka_settings())
        await producer.start()
        try:
            await producer.send_and_wait(
                self.settings.events_topic, value, key=b"k", headers=record_headers or []
            )
        finally:
            await producer.stop()

    async def hook(
        self, metadata: tuple[tuple[str, str], ...] = KEY, **fields: Any
    ) -> webhooks_pb2.CreateWebhookResponse:
        """Creates a webhook of ``fields`` (acme's, unless ``metadata`` says whose)."""
        return await self.hooks.CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(webhook=webhooks_pb2.Webhook(**fields)),
            metadata=metadata,
        )

    async def stop_dispatch(self) -> None:
        """Stops every dispatch replica (the fixture's and those a test added)."""
        for running in self.dispatch:
            await running.stop(1)
        self.dispatch.clear()

    async def add_dispatch(self, **overrides: Any) -> Running:
        settings = self.settings.model_copy(update=overrides)
        running = await start(
            await build_dispatch(settings, self.infra.kafka_settings()), "127.0.0.1:0"
        )
        self.dispatch.append(running)
        return running

    async def jobs(
        self, topic: str, event_ids: set[str], count: int, timeout: float = 30
    ) -> list[Any]:
        """The records on ``topic`` made from ``event_ids`` (once ``count`` arrived)."""

        def wanted(record: Any) -> bool:
            return headers(record).get("ce_id") in event_ids

        return await read_matching(
            self.infra.kafka_settings(), topic, wanted, count, timeout=timeout
        )


def dispatch_settings(
    database_url: str, events_topic: str, webhooks: WebhooksSettings, **overrides: Any
) -> DispatchSettings:
    suffix = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "database_url": database_url,
        "dispatch_addr": "127.0.0.1:0",
        "events_topic": events_topic,
        "dispatch_group": f"d{suffix}",
        "deliveries_topic": webhooks.deliveries_topic,
        "dlq_topic": f"herald.dlq.d{suffix}",
        "webhooks_internal_key": INTERNAL_KEY,
        "retry_schedule": "0.3s,0.3s",
        "send_timeout_seconds": 5,
    }
    values.update(overrides)
    return DispatchSettings(**values)


@dataclass
class Services:
    """Ingest, webhooks and one dispatch, wired together and started in this process."""

    ingest: IngestUnderTest
    webhooks: Running
    webhooks_settings: WebhooksSettings
    dispatch: Running
    settings: DispatchSettings


@contextlib.asynccontextmanager
async def running_services(
    infra: Infra, database_url: str, topic: str, **dispatch_overrides: Any
) -> AsyncIterator[Services]:
    """Starts ingest on ``topic``, webhooks and a dispatch fed by both; stops them after."""
    ingest = await start_ingest(infra, database_url, topic)
    hooks_settings = webhooks_settings(database_url, ingest.running.port)
    hooks = await start(await build_webhooks(hooks_settings, infra.kafka_settings()), "127.0.0.1:0")
    settings = dispatch_settings(
        database_url,
        topic,
        hooks_settings,
        webhooks_addr=f"127.0.0.1:{hooks.port}",
        ingest_addr=f"127.0.0.1:{ingest.running.port}",
        **dispatch_overrides,
    )
    dispatch = await start(await build_dispatch(settings, infra.kafka_settings()), "127.0.0.1:0")
    try:
        yield Services(ingest, hooks, hooks_settings, dispatch, settings)
    finally:
        await dispatch.stop(1)
        await hooks.stop(1)
        await ingest.stop()


@pytest.fixture
async def flow(infra: Infra, database_url: str, topic: str) -> AsyncIterator[Flow]:
    async with running_services(infra, database_url, topic) as services:
        hooks_channel = grpc.aio.insecure_channel(f"127.0.0.1:{services.webhooks.port}")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{services.dispatch.port}")
        flow = Flow(
            infra,
            database_url,
            services.ingest,
            services.webhooks,
            webhooks_pb2_grpc.WebhookServiceStub(hooks_channel),
            services.webhooks_settings,
            [services.dispatch],
            dispatch_pb2_grpc.DispatchServiceStub(channel),
            [hooks_channel, channel],
            services.settings,
        )
        yield flow
        for c in flow.channels:
            await c.close()
        for running in flow.dispatch:  # and replicas a test added (a stop is once)
            await running.stop(1)


def decode_job(record: Any) -> notification_pb2.NotificationJob:
    return notification_pb2.NotificationJob.FromString(record.value)


async def still_dispatching(infra: Infra, ingest: IngestUnderTest, timeout: float = 30) -> None:
    """A good event published through ingest still makes its email job (within
    ``timeout`` seconds)."""
    event_id = str(uuid.uuid4())
    doc = json.loads(LEGACY_EXAMPLES["user_registered"]) | {"event_id": event_id}
    await ingest.stub.Publish(ingest_pb2.PublishRequest(json=json.dumps(doc)))
    [made] = await read_matching(
        infra.kafka_settings(),
        "herald.notifications.email",
        lambda record: headers(record).get("ce_id") == event_id,
        1,
        timeout=timeout,
    )
    assert decode_job(made).event_type == "user_registered"


async def test_the_notification_api_examples_make_exactly_the_expected_jobs(flow: Flow) -> None:
    ids = {}
    for name, text in LEGACY_EXAMPLES.items():
        doc = json.loads(text)
        doc["event_id"] = ids[name] = str(uuid.uuid4())  # fresh: the topics are shared
        await flow.ingest.stub.Publish(ingest_pb2.PublishRequest(json=json.dumps(doc)))
    every = set(ids.values())
    email = await flow.jobs("herald.notifications.email", every, 2)
    push = await flow.jobs("herald.notifications.push", every, 2)

    by_type = {
        (decode_job(r).event_type, decode_job(r).channel): (decode_job(r), r) for r in email + push
    }
    assert (len(email), len(push)) == (2, 2), "no more and no fewer jobs"
    assert set(by_type) == {
        ("user_registered", "email"),
        ("new_film_released", "push"),
        ("campaign_triggered", "email"),
        ("campaign_triggered", "push"),
    }
    welcome, record = by_type[("user_registered", "email")]
    assert welcome.recipient == "f3aa4a0e-97d4-4e21-a2b4-9fb7c8d9f001"
    assert welcome.template_code == "welcome"
    assert welcome.event_id == ids["user_registered"]
    assert welcome.payload.struct_value["locale"] == "ru"
    meta = headers(record)
    assert meta["content-type"] == "application/x-protobuf"
    assert meta["schema-version"] == "1"
    assert meta["ce_type"] == "user_registered"
    assert meta["ce_source"] == "auth_service"

    film, _ = by_type[("new_film_released", "push")]
    assert film.WhichOneof("audience") == "segment"
    assert dict(film.segment)["min_age"] == 16
    assert json_format.MessageToDict(film.segment)["by_genres"] == ["sci-fi", "action"]

    for channel in ("email", "push"):
        job, _ = by_type[("campaign_triggered", channel)]
        assert job.template_code == "black_friday_sale"
        assert dict(job.segment) == {"segment_id": "bf_2025_loyal_customers"}
    campaign_jobs = {by_type[("campaign_triggered", c)][0].job_id for c in ("email", "push")}
    assert len(campaign_jobs) == 2, "one job id per channel"


async def test_an_empty_target_segment_is_still_the_jobs_audience(flow: Flow) -> None:
    doc = json.loads(LEGACY_EXAMPLES["new_film_released"])
    doc["event_id"] = event_id = str(uuid.uuid4())
    doc["payload"]["target_segment"] = {}  # the schema allows it: no narrowing
    await flow.ingest.stub.Publish(ingest_pb2.PublishRequest(json=json.dumps(doc)))
    [record] = await flow.jobs("herald.notifications.push", {event_id}, 1)
    job = decode_job(record)
    assert job.WhichOneof("audience") == "segment"
    assert dict(job.segment) == {}


async def test_a_route_with_a_wildcard_and_conditions(flow: Flow) -> None:
    target_topic, created = await flow.push_route(
        "push-messages",
        dispatch_pb2.RouteFilter(
            type=dispatch_pb2.TypeMatch(wildcard="message.*"),
            source="urn:chat",
            conditions=[
                dispatch_pb2.Condition(
                    path="data.channels",
                    operator=Op.OPERATOR_CONTAINS,
                    value=struct_pb2.Value(string_value="push"),
                )
            ],
        ),
        template_code="new_message",
    )
    assert created.id
    base = {"id": "msg_1", "content": "hi"}
    hit = await flow.publish(
        "message.created", {**base, "to": "u1", "channels": ["push"]}, source="urn:chat"
    )
    miss_channel = await flow.publish(
        "message.created", {**base, "to": "u2", "channels": ["email"]}, source="urn:chat"
    )
    miss_source = await flow.publish(
        "message.created", {**base, "to": "u3", "channels": ["push"]}, source="urn:other"
    )
    jobs = await flow.jobs(target_topic, {hit, miss_channel, miss_source}, 1)
    assert [decode_job(r).recipient for r in jobs] == ["u1"]
    assert jobs[0].key  # the event's own key: one key's jobs stay in order


async def test_an_event_at_the_size_limit_goes_all_the_way(flow: Flow) -> None:
    """An event of nearly MAX_EVENT_BYTES (1,000,000 by default) is delivered to a
    webhook and made into a notification job: its delivery job and notification job fit
    Kafka too."""
    content = "x" * 990_000
    async with Receiver() as receiver:
        await flow.hook(name="big", url=receiver.url(), event_types=["message.created"])
        topic, _ = await flow.push_route(
            "big", dispatch_pb2.RouteFilter(type=dispatch_pb2.TypeMatch(exact="message.created"))
        )
        event_id = await flow.publish(
            "message.created", {"id": "msg_big", "content": content, "to": "u1"}
        )
        [request] = await receiver.wait_for(1, timeout=30)
        assert json.loads(request.body)["data"]["content"] == content
        [record] = await flow.jobs(topic, {event_id}, 1)
        assert decode_job(record).recipient == "u1"


async def test_a_job_kafka_refuses_for_good_is_dead_lettered_at_once(flow: Flow) -> None:
    """A route's topic takes 5 kB records: the job of a 20 kB event is dead-lettered at
    once (retrying would not help; it was retried on the schedule, and the job of an
    event sharing its batch with it was delayed with it), and the other event's job
    goes out."""
    topic = f"herald.test.jobs.small{uuid.uuid4().hex[:8]}"
    await create_small_topic(flow.infra.kafka_settings(), topic, 5000, 1)
    target = dispatch_pb2.JobTarget(
        topic=topic, channel="push", template_code="t", recipient="$data.to"
    )
    route_filter = dispatch_pb2.RouteFilter(type=dispatch_pb2.TypeMatch(exact="message.created"))
    await flow.stub.CreateRoute(
        dispatch_pb2.CreateRouteRequest(
            route=dispatch_pb2.Route(name="small", filter=route_filter, target=target)
        )
    )
    await asyncio.sleep(0.5)  # every replica has the route
    big = await flow.publish("message.created", {"id": "m1", "content": "x" * 20_000, "to": "u1"})
    small = await flow.publish("message.created", {"id": "m2", "content": "hi", "to": "u2"})
    [job] = await flow.jobs(topic, {big, small}, 1, timeout=10)
    assert decode_job(job).recipient == "u2"
    for _ in range(50):
        listed = await flow.stub.ListDeadLetters(dispatch_pb2.ListDeadLettersRequest())
        if listed.dead_letters:
            break
        await asyncio.sleep(0.2)
    [dead] = listed.dead_letters
    assert dead.event_id == big
    assert dead.attempts == 1, "not retried: Kafka would refuse it again"
    assert "refused by Kafka: MessageSizeTooLargeError" in dead.reason


async def test_a_dead_letter_alert_that_dies_too_raises_no_further_alert(flow: Flow) -> None:
    """A route taking every type ('*') whose jobs fan out over an array most events lack:
    an event dies, its herald.dispatch.dead_lettered alert is an event of that route and
    dies too. That second dead letter is stored, but announces nothing: it announced its
    own alert, and so on for ever, ~50 dead letters a second from one event."""
    target = dispatch_pb2.JobTarget(
        topic=f"herald.test.jobs.{uuid.uuid4().hex[:8]}",
        channel="push",
        template_code="t",
        recipient="$data.to",
        for_each="$data.channels",
    )
    route_filter = dispatch_pb2.RouteFilter(type=dispatch_pb2.TypeMatch(wildcard="*"))
    await flow.stub.CreateRoute(
        dispatch_pb2.CreateRouteRequest(
            route=dispatch_pb2.Route(name="everything", filter=route_filter, target=target)
        )
    )
    await asyncio.sleep(0.5)  # every replica has the route
    event_id = await flow.publish("message.created", {"id": "m", "content": "c"})
    [alert] = await announced(flow.database_url, "herald.dispatch.dead_lettered")
    assert alert["event_id"] == event_id
    for _ in range(50):
        listed = await flow.stub.ListDeadLetters(dispatch_pb2.ListDeadLettersRequest())
        if len(listed.dead_letters) >= 2:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(3)  # what a chain would add meanwhile
    listed = await flow.stub.ListDeadLetters(dispatch_pb2.ListDeadLettersRequest())
    assert sorted(d.event_type for d in listed.dead_letters) == [
        "herald.dispatch.dead_lettered",
        "message.created",
    ]
    assert len(await ingest_events(flow.database_url, "herald.dispatch.dead_lettered")) == 1


async def test_an_exhausted_delivery_of_an_exhaustion_alert_raises_no_further_alert(
    flow: Flow,
) -> None:
    """A webhook taking every type ('*') whose endpoint fails: an event's delivery is
    exhausted, the herald.webhook.delivery_exhausted alert goes to that webhook too and
    is exhausted too. That one raises no alert: it raised one, delivered to the same
    webhook, and so on for ever."""
    async with Receiver() as receiver:
        receiver.script("/hook", *[Reply(500)] * 20)
        await flow.hook(
            name="everything",
            url=receiver.url(),
            event_types=["*"],
            retry_policy=webhooks_pb2.RetryPolicy(max_retries=0),
        )
        await asyncio.sleep(1)  # dispatch has seen the webhook
        trace_id = uuid.uuid4().hex
        event_id = await flow.publish(
            "message.created",
            {"id": "m", "content": "c"},
            metadata=(("traceparent", f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"),),
        )
        [alert] = await announced(flow.database_url, "herald.webhook.delivery_exhausted")
        assert alert["event_id"] == event_id
        requests = await receiver.wait_for(2, timeout=20)
        await asyncio.sleep(3)  # what a chain would add meanwhile
        types = sorted(r.headers["x-herald-event"] for r in receiver.received())
    assert types == ["herald.webhook.delivery_exhausted", "message.created"], requests
    found = await ingest_events(flow.database_url, "herald.webhook.delivery_exhausted")
    assert len(found) == 1
    # The alert is published under the trace of the delivery it is about: a tracing
    # backend shows the event's end beside its journey (its POSTs too).
    assert {r.headers["traceparent"].split("-")[1] for r in requests} == {trace_id}


async def test_a_tenants_webhook_alerts_reach_only_that_tenants_webhooks(flow: Flow) -> None:
    # herald.webhook.* alerts (a webhook id, its failure's reason) were delivered to every
    # tenant whose webhook took '*' or 'herald.webhook.*'
    globex = (("authorization", f"Bearer {GLOBEX_KEY}"),)
    async with Receiver() as receiver:
        receiver.script("/gone", Reply(410, b"gone"))
        for metadata, path in ((KEY, "/acme"), (globex, "/globex")):
            await flow.hook(
                name="watch",
                url=receiver.url(path),
                event_types=["herald.webhook.*"],
                metadata=metadata,
            )
        doomed = await flow.hook(
            name="doomed", url=receiver.url("/gone"), event_types=["message.created"]
        )
        await asyncio.sleep(1)  # dispatch has seen the webhooks
        await flow.publish("message.created", {"id": "m", "content": "c"})
        [alert] = await receiver.wait_for(1, "/acme", timeout=30)
        await asyncio.sleep(3)  # the same event's delivery to globex, were it made
        to_globex = receiver.received("/globex")
    assert alert.headers["x-herald-event"] == "herald.webhook.disabled"
    body = json.loads(alert.body)
    assert body["data"]["webhook_id"] == doomed.webhook.id
    assert body["data"]["tenant"] == "acme"
    assert to_globex == []


async def dead_letter_alert_tenant(flow: Flow, event_id: str) -> str | None:
    """The heraldtenant attribute of the (one) herald.dispatch.dead_lettered alert,
    once ingest has it, about ``event_id``."""
    [alert] = await announced(flow.database_url, "herald.dispatch.dead_lettered", timeout=30)
    assert alert["event_id"] == event_id
    conn = await asyncpg.connect(flow.database_url)
    try:
        tenant: str | None = await conn.fetchval(
            "SELECT attributes->>'heraldtenant' FROM ingest.events WHERE type = $1",
            "herald.dispatch.dead_lettered",
        )
    finally:
        await conn.close()
    return tenant


async def test_dispatch_dead_lettering_a_tenants_event_alerts_that_tenant_only(
    flow: Flow,
) -> None:
    # herald.dispatch.dead_lettered names the dead event (id, type, reason): for an event
    # scoped to one tenant (heraldtenant) it went to every tenant's '*' webhooks
    await flow.stop_dispatch()
    await flow.add_dispatch(webhooks_addr="127.0.0.1:1", retry_schedule="0.3s")
    event_id = await flow.publish(
        "message.created", {"id": "m", "content": "c"}, heraldtenant="acme"
    )
    assert await dead_letter_alert_tenant(flow, event_id) == "acme"


async def test_a_dead_letters_alert_joins_the_events_trace_and_tenant_in_any_case(
    flow: Flow,
) -> None:
    # The alert started a trace of its own; a producer writing the tenant header as
    # CE_HeraldTenant had the event scoped by matching (the binding reads header names
    # in any case) but its dead-letter alert went to every tenant
    await flow.stop_dispatch()
    await flow.add_dispatch(webhooks_addr="127.0.0.1:1", retry_schedule="0.3s")
    trace_id = uuid.uuid4().hex
    event_id = str(uuid.uuid4())
    await flow.produce_raw(
        json.dumps({"id": "m", "content": "c"}).encode(),
        [
            ("ce_specversion", b"1.0"),
            ("ce_id", event_id.encode()),
            ("ce_source", b"urn:test"),
            ("ce_type", b"message.created"),
            ("content-type", b"application/json"),
            ("CE_HeraldTenant", b"acme"),
            ("Traceparent", f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01".encode()),
        ],
    )
    assert await dead_letter_alert_tenant(flow, event_id) == "acme"
    alert_trace = await announced_trace(
        flow.infra.kafka_settings(), flow.settings.events_topic, "herald.dispatch.dead_lettered"
    )
    assert alert_trace == trace_id


async def test_a_webhook_created_changed_or_deleted_is_seen_within_a_second(
    flow: Flow,
) -> None:
    async with Receiver() as receiver:
        created = await flow.hook(name="late", url=receiver.url(), event_types=["message.*"])
        await asyncio.sleep(1.0)
        event_id = await flow.publish("message.created", {"id": "msg_9", "content": "x"})
        [request] = await receiver.wait_for(1, timeout=20)
        body = json.loads(request.body)
        assert body["id"] == event_id
        assert body["type"] == "message.created"

        # Changed: only message.deleted now. Seen within a second like a new one.
        narrowed = webhooks_pb2.Webhook(id=created.webhook.id, event_types=["message.deleted"])
        await flow.hooks.UpdateWebhook(
            webhooks_pb2.UpdateWebhookRequest(
                webhook=narrowed, update_mask=FieldMask(paths=["event_types"])
            ),
            metadata=KEY,
        )
        await asyncio.sleep(1.0)
        await flow.publish("message.created", {"id": "msg_11", "content": "z"})
        deleted_id = await flow.publish("message.deleted", {"id": "msg_9"})
        requests = await receiver.wait_for(2, timeout=20)
        await asyncio.sleep(1.0)
        assert [json.loads(r.body)["id"] for r in receiver.received()] == [event_id, deleted_id]
        assert json.loads(requests[1].body)["type"] == "message.deleted"

        await flow.hooks.DeleteWebhook(
            webhooks_pb2.DeleteWebhookRequest(id=created.webhook.id), metadata=KEY
        )
        await asyncio.sleep(1.0)
        await flow.publish("message.created", {"id": "msg_10", "content": "y"})
        await asyncio.sleep(2.0)
        assert len(receiver.received()) == 2, "a deleted webhook gets nothing more"


async def test_a_poison_record_is_dead_lettered_and_consumption_goes_on(flow: Flow) -> None:
    await flow.produce_raw(b"\x00garbage")
    await still_dispatching(flow.infra, flow.ingest)

    dlq = await read_matching(flow.infra.kafka_settings(), flow.settings.dlq_topic, bool, 1)
    assert [r.value for r in dlq] == [b"\x00garbage"]
    assert "not a CloudEvents record" in headers(dlq[0])["dlq-reason"]
    listed = await flow.stub.ListDeadLetters(dispatch_pb2.ListDeadLettersRequest())
    assert [d.targets for d in listed.dead_letters] == [["decode"]]
    assert listed.total_size == 1

    # Redriven by filter, it is tried again, fails to decode again, and dies again.
    by_reason = dispatch_pb2.DeadLetterFilter(reason_contains="not a CloudEvents record")
    redriven = await flow.stub.RedriveDeadLetters(
        dispatch_pb2.RedriveDeadLettersRequest(filter=by_reason)
    )
    assert redriven.redriven == 1
    every = dispatch_pb2.DeadLetterFilter(include_redriven=True)
    for _ in range(50):
        listed = await flow.stub.ListDeadLetters(dispatch_pb2.ListDeadLettersRequest(filter=every))
        if listed.total_size == 2:
            break
        await asyncio.sleep(0.2)
    assert [bool(d.HasField("redrive_time")) for d in listed.dead_letters] == [False, True]


async def test_redriving_each_dead_letter_while_paging_skips_none(flow: Flow) -> None:
    """An operator pages through the dead letters not yet redriven and redrives each one
    they see: it leaves the filter, and dies again as a newer dead letter; another one
    arrives meanwhile. Every one is on a page, once; by offset, pages showed the newer
    ones instead."""
    every = dispatch_pb2.DeadLetterFilter(include_redriven=True)

    async def stored(count: int) -> None:
        for _ in range(100):
            listed = await flow.stub.ListDeadLetters(
                dispatch_pb2.ListDeadLettersRequest(filter=every)
            )
            if listed.total_size == count:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{count} dead letters stored")

    for n in range(5):
        await flow.produce_raw(b"\x00garbage %d" % n)
    await stored(5)
    dead = [
        d.id
        for d in (
            await flow.stub.ListDeadLetters(dispatch_pb2.ListDeadLettersRequest())
        ).dead_letters
    ]
    seen, token, count = [], "", 5
    while True:
        page = await flow.stub.ListDeadLetters(
            dispatch_pb2.ListDeadLettersRequest(page_size=2, page_token=token)
        )
        ids = [d.id for d in page.dead_letters]
        seen += ids
        await flow.stub.RedriveDeadLetters(
            dispatch_pb2.RedriveDeadLettersRequest(ids=dispatch_pb2.DeadLetterIds(ids=ids))
        )
        count += len(ids)
        if len(seen) == 2:
            await flow.produce_raw(b"\x00garbage late")
            count += 1
        await stored(count)
        token = page.next_page_token
        if not token:
            break
    assert seen == dead, "newest first, each once"


async def test_deleting_each_route_while_paging_skips_none(flow: Flow) -> None:
    """A client lists the routes page by page and deletes each one it sees: it sees
    every route once. Pages by offset skipped a page's worth on every page."""
    for n in range(5):
        await flow.stub.CreateRoute(
            dispatch_pb2.CreateRouteRequest(
                route=dispatch_pb2.Route(
                    name=f"paged {n}",
                    filter=dispatch_pb2.RouteFilter(type=dispatch_pb2.TypeMatch(prefix="x.")),
                    target=dispatch_pb2.JobTarget(channel="sms", template_code="t"),
                )
            )
        )
    everything = await flow.stub.ListRoutes(dispatch_pb2.ListRoutesRequest(page_size=1000))
    assert len(everything.routes) >= 5 + 3, "with the built-in routes"
    seen, totals, token = [], [], ""
    while True:
        page = await flow.stub.ListRoutes(
            dispatch_pb2.ListRoutesRequest(page_size=2, page_token=token)
        )
        totals.append(page.total_size)
        for route in page.routes:
            seen.append(route.id)
            await flow.stub.DeleteRoute(dispatch_pb2.DeleteRouteRequest(id=route.id))
        token = page.next_page_token
        if not token:
            break
    assert seen == [r.id for r in everything.routes], "by name, each once"
    assert totals == list(range(len(seen), 0, -2))
    assert not (await flow.stub.ListRoutes(dispatch_pb2.ListRoutesRequest())).routes


async def test_a_record_postgresql_cannot_store_still_reaches_the_dlq_topic(flow: Flow) -> None:
    # A NUL character in a header name cannot be stored in PostgreSQL's text: storing
    # its dead letter had been retried for ever, and dispatch stood still.
    await flow.produce_raw(b"\xffjunk", [("ce_i\x00d", b"x")])
    await still_dispatching(flow.infra, flow.ingest)
    [dead] = await read_matching(flow.infra.kafka_settings(), flow.settings.dlq_topic, bool, 1)
    assert dead.value == b"\xffjunk"
    assert "not stored" in headers(dead)["dlq-reason"]


async def test_a_failing_target_is_retried_on_schedule_then_dead_lettered_and_redriven(
    flow: Flow,
) -> None:
    # A second dispatch group whose webhooks service is unreachable: its webhook target
    # fails, is retried twice (0.3 s apart) and then dead-lettered.
    await flow.stop_dispatch()
    broken = await flow.add_dispatch(
        webhooks_addr="127.0.0.1:1", subscriptions_max_staleness_seconds=0.5
    )
    stub = dispatch_pb2_grpc.DispatchServiceStub(
        channel := grpc.aio.insecure_channel(f"127.0.0.1:{broken.port}")
    )
    flow.channels.append(channel)
    async with Receiver() as receiver:
        await flow.hook(name="owed", url=receiver.url(), event_types=["message.created"])
        exhausted = {"reason": "exhausted"}
        before = REGISTRY.get_sample_value("events_dlq_total", exhausted) or 0.0
        event_id = await flow.publish("message.created", {"id": "m", "content": "c"})
        for _ in range(100):
            listed = await stub.ListDeadLetters(dispatch_pb2.ListDeadLettersRequest())
            if listed.dead_letters:
                break
            await asyncio.sleep(0.2)
        [dead] = listed.dead_letters
        assert (dead.event_id, dead.event_type) == (event_id, "message.created")
        assert list(dead.targets) == ["webhooks"]
        assert dead.attempts == 3, "the first try and the two retries of the schedule"
        assert "webhook subscriptions unknown" in dead.reason
        dlq = await read_matching(flow.infra.kafka_settings(), flow.settings.dlq_topic, bool, 1)
        assert headers(dlq[0])["ce_id"] == event_id, "the original headers travel along"
        assert "webhook subscriptions unknown" in headers(dlq[0])["dlq-reason"]
        assert REGISTRY.get_sample_value("events_dlq_total", exhausted) == before + 1
        [alert] = await announced(flow.database_url, "herald.dispatch.dead_lettered")
        assert (alert["event_id"], alert["targets"]) == (event_id, ["webhooks"])

        # Fixed: a dispatch that reaches webhooks redrives it; the webhook receives it.
        await broken.stop(1)
        flow.dispatch.clear()
        healthy = await flow.add_dispatch()
        fixed = dispatch_pb2_grpc.DispatchServiceStub(
            channel := grpc.aio.insecure_channel(f"127.0.0.1:{healthy.port}")
        )
        flow.channels.append(channel)
        redriven = await fixed.RedriveDeadLetters(
            dispatch_pb2.RedriveDeadLettersRequest(ids=dispatch_pb2.DeadLetterIds(ids=[dead.id]))
        )
        assert redriven.redriven == 1
        [request] = await receiver.wait_for(1, timeout=20)
        assert json.loads(request.body)["id"] == event_id
        again = await fixed.RedriveDeadLetters(
            dispatch_pb2.RedriveDeadLettersRequest(ids=dispatch_pb2.DeadLetterIds(ids=[dead.id]))
        )
        assert again.redriven == 0, "never twice"


@pytest.mark.parametrize("null_header", [False, True])
async def test_a_dead_letter_that_could_not_be_decoded_is_dispatched_when_redriven(
    flow: Flow, null_header: bool
) -> None:
    # A record an older dispatch could not decode (stored with the target "decode"),
    # redriven once the decoder takes it: the retrier sent it to "decode", a route that
    # does not exist, owed nothing, and called it retried; no job went out. One stored
    # with a header without a value (null) crashed the retrier, again after each lease
    async with Receiver() as receiver:
        await flow.hook(name="owed", url=receiver.url(), event_types=["message.created"])
        await asyncio.sleep(1)  # dispatch has seen the webhook
        event_id = await flow.publish("message.created", {"id": "m", "content": "c"})
        await receiver.wait_for(1, timeout=20)
        [record] = await read_matching(
            flow.infra.kafka_settings(),
            flow.settings.events_topic,
            lambda r: headers(r).get("ce_id") == event_id,
            1,
        )
        conn = await asyncpg.connect(flow.database_url)
        try:
            dead = await conn.fetchval(
                """INSERT INTO dispatch.dead_letters (id, topic, partition, "offset", key,
                       value, header_names, header_values, event_id, event_source,
                       event_type, targets, attempts, reason)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, '{decode}', 1,
                           'cannot be decoded: an older decoder') RETURNING id""",
                *stored(InputRecord.of(record), EventIds()),
            )
            if null_header:
                await conn.execute(
                    "UPDATE dispatch.dead_letters SET header_names = header_names || "
                    "'{traceparent}', header_values = header_values || NULL::bytea "
                    "WHERE id = $1",
                    dead,
                )
        finally:
            await conn.close()
        redriven = await flow.stub.RedriveDeadLetters(
            dispatch_pb2.RedriveDeadLettersRequest(ids=dispatch_pb2.DeadLetterIds(ids=[str(dead)]))
        )
        assert redriven.redriven == 1
        jobs = await read_matching(
            flow.infra.kafka_settings(),
            flow.webhooks_settings.deliveries_topic,
            lambda r: headers(r).get("ce_id") == event_id,
            2,
        )
        # Sent again (webhooks, knowing the job, does not post it twice).
        assert len(jobs) == 2


async def count_rows(database_url: str, table: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def test_a_dead_letter_decided_while_kafka_is_away_survives_a_restart(flow: Flow) -> None:
    # The dead letter's DLQ record was sent after its row was stored, for up to 30 s, and
    # its alert stored only after that: with Kafka away, a stop in that window lost both
    if flow.infra.kafka is None:
        pytest.fail("this test stops Kafka: run it against the Kafka the session starts")
    await flow.stop_dispatch()
    # webhooks unreachable: the event is parked, and dead-lettered at its one retry
    await flow.add_dispatch(webhooks_addr="127.0.0.1:1", retry_schedule="6s")
    await flow.hook(name="owed", url="http://127.0.0.1:9/hook", event_types=["message.created"])
    event_id = await flow.publish("message.created", {"id": "m", "content": "c"})
    for _ in range(100):
        if await count_rows(flow.database_url, "dispatch.retries"):
            break
        await asyncio.sleep(0.1)
    await asyncio.to_thread(flow.infra.kafka.stop)
    try:
        for _ in range(150):
            if await count_rows(flow.database_url, "dispatch.dead_letters"):
                break
            await asyncio.sleep(0.1)
        [alert] = await announced(flow.database_url, "herald.dispatch.dead_lettered")
        assert alert["event_id"] == event_id
        await flow.stop_dispatch()
        assert await count_rows(flow.database_url, "dispatch.dlq_outbox") == 1, "owed, stored"
    finally:
        await asyncio.to_thread(flow.infra.kafka.start)
    await flow.add_dispatch()  # any replica sends what is owed
    dlq = await read_matching(
        flow.infra.kafka_settings(), flow.settings.dlq_topic, bool, 1, timeout=60
    )
    assert [headers(r)["ce_id"] for r in dlq] == [event_id]
    assert "webhook subscriptions unknown" in headers(dlq[0])["dlq-reason"]
    for _ in range(50):
        if not await count_rows(flow.database_url, "dispatch.dlq_outbox"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the sent record left the outbox")


async def test_route_crud_and_validation(flow: Flow) -> None:
    listed = await flow.stub.ListRoutes(dispatch_pb2.ListRoutesRequest())
    assert {r.name for r in listed.routes} >= {
        "builtin.user_registered.welcome",
        "builtin.new_film_released.segment",
        "builtin.campaign_triggered.channels",
    }
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await flow.stub.CreateRoute(
            dispatch_pb2.CreateRouteRequest(
                route=dispatch_pb2.Route(
                    name="",
                    filter=dispatch_pb2.RouteFilter(
                        conditions=[dispatch_pb2.Condition(path="nowhere.x")]
                    ),
                    target=dispatch_pb2.JobTarget(channel="bad channel!", recipient="$item"),
                )
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    trailing = dict(caught.value.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
    fields = {v.field for v in bad_request_of(status)}
    assert fields >= {
        "route.name",
        "route.filter.conditions[0].path",
        "route.filter.conditions[0].operator",
        "route.target.channel",
        "route.target.template_code",
        "route.target.recipient",
    }
    made = await flow.stub.CreateRoute(
        dispatch_pb2.CreateRouteRequest(
            route=dispatch_pb2.Route(
                name="r1",
                filter=dispatch_pb2.RouteFilter(type=dispatch_pb2.TypeMatch(prefix="order.")),
                target=dispatch_pb2.JobTarget(channel="sms", template_code="t"),
            )
        )
    )
    changed = await flow.stub.UpdateRoute(
        dispatch_pb2.UpdateRouteRequest(
            route=dispatch_pb2.Route(id=made.route.id, disabled=True, name="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["disabled"]),
        )
    )
    assert (changed.route.disabled, changed.route.name) == (True, "r1")
    await flow.stub.DeleteRoute(dispatch_pb2.DeleteRouteRequest(id=made.route.id))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await flow.stub.GetRoute(dispatch_pb2.GetRouteRequest(id=made.route.id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_route_may_not_send_jobs_to_dispatchs_own_topics(flow: Flow) -> None:
    # A route whose jobs went to the events topic was accepted: each job, carrying the
    # event's ce_* headers, was consumed as the event again and made a job again, for ever
    own = flow.settings
    for topic in (own.events_topic, own.deliveries_topic, own.dlq_topic):
        refused = await refused_fields(
            flow.stub.CreateRoute(
                dispatch_pb2.CreateRouteRequest(
                    route=dispatch_pb2.Route(
                        name="loop",
                        target=dispatch_pb2.JobTarget(
                            channel="sms", template_code="t", topic=topic
                        ),
                    )
                )
            )
        )
        assert "is one of dispatch's own topics" in refused["route.target.topic"]
    prefix, _, suffix = own.events_topic.rpartition(".")
    made = await flow.stub.CreateRoute(
        dispatch_pb2.CreateRouteRequest(
            route=dispatch_pb2.Route(
                name="by-data",
                filter=dispatch_pb2.RouteFilter(
                    type=dispatch_pb2.TypeMatch(exact="message.created")
                ),
                target=dispatch_pb2.JobTarget(
                    channel="$data.id", template_code="t", topic=prefix + ".{channel}"
                ),
            )
        )
    )
    refused = await refused_fields(
        flow.stub.UpdateRoute(
            dispatch_pb2.UpdateRouteRequest(
                route=dispatch_pb2.Route(
                    id=made.route.id,
                    target=dispatch_pb2.JobTarget(
                        channel="x", template_code="t", topic=own.dlq_topic
                    ),
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["target"]),
            )
        )
    )
    assert "is one of dispatch's own topics" in refused["route.target.topic"]
    # One stored before the rule (its topic written here) can still be disabled
    conn = await asyncpg.connect(flow.database_url)
    try:
        await conn.execute(
            "UPDATE dispatch.routes SET target = jsonb_set(target, '{topic}', to_jsonb($2::text))"
            " WHERE id = $1::uuid",
            made.route.id,
            own.events_topic,
        )
    finally:
        await conn.close()
    disabled = await flow.stub.UpdateRoute(
        dispatch_pb2.UpdateRouteRequest(
            route=dispatch_pb2.Route(id=made.route.id, disabled=True),
            update_mask=field_mask_pb2.FieldMask(paths=["disabled"]),
        )
    )
    assert disabled.route.disabled
    refused = await refused_fields(  # enabled again as it is: judged
        flow.stub.UpdateRoute(
            dispatch_pb2.UpdateRouteRequest(
                route=dispatch_pb2.Route(id=made.route.id, disabled=False),
                update_mask=field_mask_pb2.FieldMask(paths=["disabled"]),
            )
        )
    )
    assert "is one of dispatch's own topics" in refused["route.target.topic"]
    await flow.stub.UpdateRoute(
        dispatch_pb2.UpdateRouteRequest(
            route=dispatch_pb2.Route(
                id=made.route.id,
                disabled=False,
                target=dispatch_pb2.JobTarget(
                    channel="$data.id", template_code="t", topic=prefix + ".{channel}"
                ),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["disabled", "target"]),
        )
    )
    # Known only per event (the channel from its data): the target is dead-lettered
    await asyncio.sleep(1)  # every replica has the route
    event_id = await flow.publish("message.created", {"id": suffix, "content": "c"})
    for _ in range(100):
        listed = await flow.stub.ListDeadLetters(dispatch_pb2.ListDeadLettersRequest())
        if listed.dead_letters:
            break
        await asyncio.sleep(0.2)
    [dead] = listed.dead_letters
    assert (dead.event_id, list(dead.targets)) == (event_id, [f"route:{made.route.id}"])
    assert f"{own.events_topic} is one of dispatch's own topics" in dead.reason
    on_events = await read_matching(
        flow.infra.kafka_settings(),
        own.events_topic,
        lambda r: headers(r).get("ce_id") == event_id,
        1,
    )
    assert len(on_events) == 1


async def refused_fields(call: Any) -> dict[str, str]:
    """The field violations of a call that must fail with INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    trailing = dict(caught.value.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
    return {v.field: v.description for v in bad_request_of(status)}


async def test_a_condition_that_can_never_be_stored_or_matched_is_refused(flow: Flow) -> None:
    """A value that is a NaN or an infinity (JSON, the stored form, has none) had been
    INTERNAL; an operator the API does not define had made a route that never matches."""
    target = dispatch_pb2.JobTarget(channel="push", template_code="t", recipient="$data.to")
    made = await flow.stub.CreateRoute(
        dispatch_pb2.CreateRouteRequest(
            route=dispatch_pb2.Route(name="conditions", disabled=True, target=target)
        )
    )
    bad = [
        dispatch_pb2.Condition(
            path="data.x", operator=Op.OPERATOR_EQUALS, value=struct_pb2.Value(number_value=n)
        )
        for n in (float("nan"), float("inf"), float("-inf"))
    ]
    bad.append(
        dispatch_pb2.Condition(
            path="data.x",
            operator=99,  # type: ignore[arg-type]
            value=struct_pb2.Value(string_value="a"),
        )
    )
    expected = {f"route.filter.conditions[{i}].value" for i in range(3)}
    expected.add("route.filter.conditions[3].operator")
    route_filter = dispatch_pb2.RouteFilter(conditions=bad)
    created = await refused_fields(
        flow.stub.CreateRoute(
            dispatch_pb2.CreateRouteRequest(
                route=dispatch_pb2.Route(name="bad", filter=route_filter, target=target)
            )
        )
    )
    assert set(created) == expected
    updated = await refused_fields(
        flow.stub.UpdateRoute(
            dispatch_pb2.UpdateRouteRequest(
                route=dispatch_pb2.Route(id=made.route.id, filter=route_filter),
                update_mask=field_mask_pb2.FieldMask(paths=["filter"]),
            )
        )
    )
    assert set(updated) == expected
    listed = await flow.stub.ListRoutes(dispatch_pb2.ListRoutesRequest(page_size=1000))
    assert "bad" not in {r.name for r in listed.routes}
    got = await flow.stub.GetRoute(dispatch_pb2.GetRouteRequest(id=made.route.id))
    assert not got.route.filter.conditions


async def test_two_replicas_and_rebalances_mid_stream_lose_nothing(flow: Flow) -> None:
    source = f"urn:rebalance:{uuid.uuid4().hex[:8]}"
    target_topic, _ = await flow.push_route(
        "rebalance",
        dispatch_pb2.RouteFilter(
            type=dispatch_pb2.TypeMatch(exact="message.created"), source=source
        ),
    )

    async def publish(n: int) -> list[str]:
        return [
            await flow.publish(
                "message.created", {"id": "m", "content": "c", "to": f"u{i}"}, source=source
            )
            for i in range(n)
        ]

    published = await publish(150)
    second = asyncio.create_task(flow.add_dispatch())  # joins the group: a rebalance
    published += await publish(150)
    await second
    published += await publish(100)
    first = flow.dispatch.pop(0)
    leaving = asyncio.create_task(first.stop(1))  # leaves the group: another rebalance
    published += await publish(100)
    await leaving
    published += await publish(50)  # the second replica alone now

    jobs = await flow.jobs(target_topic, set(published), len(published), timeout=90)
    by_event: dict[str, set[str]] = {}
    for record in jobs:
        job = decode_job(record)
        by_event.setdefault(job.event_id, set()).add(job.job_id)
    assert set(by_event) == set(published), "every event made its job"
    assert all(len(ids) == 1 for ids in by_event.values()), "a repeat is the same job"


async def test_one_keys_jobs_keep_their_order_and_carry_the_events_context(flow: Flow) -> None:
    source = f"urn:order:{uuid.uuid4().hex[:8]}"
    target_topic, _ = await flow.push_route("ordered", dispatch_pb2.RouteFilter(source=source))
    trace_id = uuid.uuid4().hex
    published: list[tuple[str, str, int]] = []  # (event id, subject, index)
    for i in range(60):  # one conversation's events, another's interleaved
        subject = "conversation-7" if i % 3 else "conversation-8"
        event_id = str(uuid.uuid4())
        doc = {
            "specversion": "1.0",
            "id": event_id,
            "source": source,
            "type": "message.created",
            "subject": subject,
            "time": "2026-11-22T10:00:00Z",
            "datacontenttype": "application/json",
            "data": {"id": f"m{i}", "content": "c", "to": f"{subject}/u{i}"},
        }
        metadata = (
            ("x-correlation-id", f"corr-{i}"),
            ("traceparent", f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"),
        )
        await flow.ingest.stub.Publish(
            ingest_pb2.PublishRequest(json=json.dumps(doc)), metadata=metadata
        )
        published.append((event_id, subject, i))

    jobs = await flow.jobs(target_topic, {p[0] for p in published}, len(published))
    for subject in ("conversation-7", "conversation-8"):
        mine = [r for r in jobs if r.key == subject.encode()]
        expected = [f"{subject}/u{i}" for _, s, i in published if s == subject]
        assert [decode_job(r).recipient for r in mine] == expected, "one key's jobs in order"
    for record in jobs:
        job, meta = decode_job(record), headers(record)
        i = int(job.recipient.rsplit("/u", 1)[1])
        assert meta["ce_id"] == published[i][0] == job.event_id
        assert meta["x-correlation-id"] == f"corr-{i}", "the caller's correlation id travels on"
        assert meta["traceparent"].split("-")[1] == trace_id, "so does the caller's trace"
        assert meta["content-type"] == "application/x-protobuf"


async def test_each_hop_continues_the_callers_trace_under_a_span_of_its_own(
    flow: Flow,
) -> None:
    """Seed 000: event.publish (ingest) and event.consume (dispatch, webhooks) spans join
    by traceparent. With spans carrying ids only (the default), the trace id the caller
    sent reaches the webhook's POST, and each hop (the event's record, its delivery job,
    the POST) carries a span id of its own."""
    caller_trace, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    async with Receiver() as receiver:
        await flow.hook(name="traced", url=receiver.url(), event_types=["message.created"])
        await asyncio.sleep(1)  # dispatch has seen the webhook
        event_id = str(uuid.uuid4())
        doc = {
            "specversion": "1.0",
            "id": event_id,
            "source": "urn:test",
            "type": "message.created",
            "time": "2026-11-22T10:00:00Z",
            "datacontenttype": "application/json",
            "data": {"id": "m", "content": "c"},
        }
        await flow.ingest.stub.Publish(
            ingest_pb2.PublishRequest(json=json.dumps(doc)),
            metadata=(
                ("traceparent", f"00-{caller_trace}-{caller_span}-01"),
                ("x-request-id", "req-traced"),
            ),
        )
        [post] = await receiver.wait_for(1, timeout=30)
    [record] = await flow.jobs(flow.settings.events_topic, {event_id}, 1)
    [job_record] = await flow.jobs(flow.webhooks_settings.deliveries_topic, {event_id}, 1)
    job = delivery_pb2.DeliveryJob.FromString(job_record.value)
    hops = [
        f"00-{caller_trace}-{caller_span}-01",
        headers(record)["traceparent"],
        headers(job_record)["traceparent"],
        post.headers["traceparent"],
    ]
    assert job.context["traceparent"] == hops[2], "the job says what its record says"
    for parent, child in itertools.pairwise(hops):
        parent_span = parent.split("-")[2]
        version, trace_id, span_id, flags = child.split("-")
        assert (version, trace_id, flags) == ("00", caller_trace, "01"), hops
        assert span_id != parent_span, f"a span of its own: {hops}"
    assert len({h.split("-")[2] for h in hops}) == len(hops), hops
    assert post.headers["x-request-id"] == "req-traced", "the other key spans join by"


async def test_a_graceful_stop_finishes_the_batches_in_flight(flow: Flow) -> None:
    """A rolling restart under load: the stopping dispatch waits for the batches it has
    handed to Kafka and commits past them, so the next one does not make their jobs
    again."""
    event_ids = [str(uuid.uuid4()) for _ in range(6000)]
    template = json.loads(LEGACY_EXAMPLES["user_registered"])

    async def publish() -> None:  # ~3 s of steady load
        for chunk in range(0, len(event_ids), 200):
            await flow.ingest.stub.PublishBatch(
                ingest_pb2.PublishBatchRequest(
                    requests=[
                        ingest_pb2.PublishRequest(json=json.dumps(template | {"event_id": e}))
                        for e in event_ids[chunk : chunk + 200]
                    ]
                )
            )
            await asyncio.sleep(0.1)

    wanted = set(event_ids)
    load = asyncio.ensure_future(publish())
    await asyncio.sleep(1.5)  # batches are in flight
    await flow.dispatch[0].stop(5)
    await flow.add_dispatch()
    await load

    def ours(record: Any) -> bool:
        return headers(record).get("ce_id") in wanted

    def event_of(record: Any) -> object:
        return headers(record)["ce_id"]

    email = "herald.notifications.email"
    settings = flow.infra.kafka_settings()
    await read_matching(settings, email, ours, len(wanted), timeout=60, distinct=event_of)
    await asyncio.sleep(2)  # a repeat of the last batches would be there by now
    jobs = await read_matching(settings, email, ours, len(wanted), timeout=60, distinct=event_of)
    made = collections.Counter(event_of(r) for r in jobs)
    assert set(made) == wanted
    assert not [e for e, n in made.items() if n > 1], "no job made twice"
