"""A reconcile service under test over the real Kafka and PostgreSQL, with an ingest
(for the events it publishes), builders of Ticketland records and readers of what
landed on Vibeapp's topics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from google.protobuf import json_format
from google.protobuf.message import Message
from herald.reconcile.v1 import reconcile_pb2_grpc
from ticketland.v1 import ticketland_pb2 as tl

from herald.runtime.kafka import connection_options
from herald.runtime.server import Running, start
from herald.runtime.settings import KafkaSettings
from herald.services.reconcile.app import build
from herald.services.reconcile.settings import ReconcileSettings
from tests.conftest import Infra
from tests.integration.conftest import IngestUnderTest, start_ingest
from tests.kafka_helpers import read_topic

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def reconcile_settings(database_url: str, ingest_port: int, **overrides: Any) -> ReconcileSettings:
    """Topics and a consumer group of this test's own."""
    s = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "database_url": database_url,
        "reconcile_addr": "127.0.0.1:0",
        "ingest_addr": f"127.0.0.1:{ingest_port}",
        "ticketland_events_topic": f"ticketland.events.t{s}",
        "ticketland_orders_topic": f"ticketland.orders.t{s}",
        "ticketland_refunds_topic": f"ticketland.refunds.t{s}",
        "reconcile_group": f"r{s}",
        "vibe_events_topic": f"vibe.events.t{s}",
        "vibe_orders_topic": f"vibe.orders.t{s}",
        "vibe_refunds_topic": f"vibe.refunds.t{s}",
        "dlq_topic": f"herald.dlq.r{s}",
    }
    values.update(overrides)
    return ReconcileSettings(**values)


# ------------------------------------------------------------------ Ticketland records


def event(event_id: str, organizer_id: str = "org-1", updated_at: int = 1, **kw: Any) -> tl.Event:
    return tl.Event(
        id=event_id,
        group_id="g-1",
        name=kw.pop("name", f"Concert {event_id}"),
        status=kw.pop("status", tl.Event.STATUS_ACTIVE),
        category=kw.pop("category", "concert"),
        start_at=1_767_196_800_000,
        finish_at=1_767_207_600_000,
        timezone_offset=3,
        media="https://img.example/1.png",
        description="An evening",
        organizer=tl.Organizer(
            id=organizer_id,
            name="Org One",
            legals=tl.LegalEntity(
                name="OOO Org", type=tl.LegalEntity.LEGAL_TYPE_RU_LTD, inn="7700000000"
            ),
        ),
        venue=tl.Venue(id="v-1", name="Hall", address="Tverskaya 1", city="Moscow", lat=55.7),
        updated_at=updated_at,
        **kw,
    )


def order(
    order_id: str,
    event_id: str,
    tickets: dict[str, int],
    status: str = "DONE",
    updated_at: int = 1,
    ticket_status: dict[str, str] | None = None,
) -> tl.Order:
    """``tickets``: ticket id → nominal price (kopecks)."""
    states = ticket_status or {}
    return tl.Order(
        id=order_id,
        number=f"N-{order_id}",
        status=tl.Order.Status.Value(f"STATUS_{status}"),
        event_id=event_id,
        organizer_id="org-1",
        customer=tl.Customer(
            email="ivan@example.com", phone="+79990000000", first_name="Ivan", last_name="P"
        ),
        tickets=[
            tl.Ticket(
                id=tid,
                event_id=event_id,
                barcode=f"BC-{tid}",
                row="1",
                seat=str(n),
                category="parterre",
                price_nominal=price,
                currency="RUB",
                status=tl.Ticket.Status.Value(f"STATUS_{states.get(tid, 'ACTIVE')}"),
            )
            for n, (tid, price) in enumerate(tickets.items(), 1)
        ],
        updated_at=updated_at,
    )


def refund(
    refund_id: str,
    order_id: str,
    event_id: str,
    tickets: dict[str, tuple[int, int, int, int]],
    status: str = "APPROVED",
    updated_at: int = 1,
    total: tuple[int, int, int, int] | None = None,
) -> tl.RefundRequest:
    """``tickets``: ticket id → (refund_nominal, customer, org, agent); ``total`` by
    default sums them."""

    def money(m: tuple[int, int, int, int]) -> tl.Money:
        return tl.Money(refund_nominal=m[0], customer=m[1], org=m[2], agent=m[3])

    summed = tuple(sum(t[i] for t in tickets.values()) for i in range(4))
    return tl.RefundRequest(
        id=refund_id,
        status=tl.RefundRequest.Status.Value(f"STATUS_{status}"),
        order_id=order_id,
        event_id=event_id,
        organizer_id="org-1",
        policy=tl.RefundRequest.POLICY_LAW_RU_193,
        reason_type=tl.RefundRequest.REASON_TYPE_AT_WILL,
        money=money(total or summed),  # type: ignore[arg-type]
        tickets=[
            tl.RefundTicket(ticket_id=tid, price=m[0], nominal=m[0], money=money(m))
            for tid, m in tickets.items()
        ],
        tickets_quantity=len(tickets),
        updated_at=updated_at,
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------- the flow


@dataclass
class ReconcileFlow:
    infra: Infra
    database_url: str
    ingest: IngestUnderTest
    settings: ReconcileSettings
    running: list[Running]
    stub: reconcile_pb2_grpc.ReconcileServiceAsyncStub
    producer: AIOKafkaProducer
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def kafka(self) -> KafkaSettings:
        return self.infra.kafka_settings()

    async def add_replica(self, **overrides: Any) -> Running:
        settings = self.settings.model_copy(update=overrides)
        running = await start(await build(settings, self.kafka(), self.kafka()), "127.0.0.1:0")
        self.running.append(running)
        return running

    def input_topic(self, message: Message) -> str:
        s = self.settings
        if isinstance(message, tl.Event):
            return s.ticketland_events_topic
        if isinstance(message, tl.Order):
            return s.ticketland_orders_topic
        return s.ticketland_refunds_topic

    async def send(self, *messages: Message, as_json: bool = False) -> None:
        """Produces Ticketland records (keyed by the entity id), acknowledged."""
        for m in messages:
            if as_json:
                value = json.dumps(json_format.MessageToDict(m, preserving_proto_field_name=True))
                body, ctype = value.encode(), JSON
            else:
                body, ctype = m.SerializeToString(), PROTOBUF
            await self.producer.send_and_wait(
                self.input_topic(m),
                body,
                key=getattr(m, "id").encode(),  # noqa: B009
                headers=[("content-type", ctype.encode())],
            )

    async def send_raw(self, topic: str, value: bytes, content_type: str = PROTOBUF) -> None:
        await self.producer.send_and_wait(
            topic, value, key=b"poison", headers=[("content-type", content_type.encode())]
        )

    async def outputs(self, kind: str, count: int, timeout: float = 30) -> list[Any]:
        """The records on Vibeapp's ``kind`` topic (at least ``count``, if they come)."""
        topic = {
            "event": self.settings.vibe_events_topic,
            "order": self.settings.vibe_orders_topic,
            "refund": self.settings.vibe_refunds_topic,
        }[kind]
        return await read_topic(self.kafka(), topic, count, timeout=timeout)

    async def db(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def settled(self, timeout: float = 30) -> None:
        """Waits until every input record was taken and every output sent."""
        await eventually(self._settled, timeout)

    async def _settled(self) -> bool:
        [row] = await self.db(
            "SELECT (SELECT count(*) FROM reconcile.outbox"
            " WHERE sent_at IS NULL AND superseded_at IS NULL) AS pending"
        )
        return bool(row["pending"] == 0) and await self.consumed_all()

    async def consumed_all(self) -> bool:
        """Whether the consumer group has committed the end of every input topic."""
        admin = AIOKafkaAdminClient(**connection_options(self.kafka()))
        consumer = AIOKafkaConsumer(**connection_options(self.kafka()))
        await admin.start()
        await consumer.start()
        try:
            try:
                committed = await admin.list_consumer_group_offsets(self.settings.reconcile_group)
            except KafkaError:  # a fresh broker creates its offsets topic on first use
                return False
            parts = [
                TopicPartition(t, p)
                for t in self.settings.input_topics()
                for p in await self.producer.partitions_for(t)
            ]
            ends = await consumer.end_offsets(parts)
            done = {tp: meta.offset for tp, meta in committed.items()}
            return all(done.get(tp, 0) >= end for tp, end in ends.items())
        finally:
            await consumer.stop()
            await admin.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def open_flow(
    infra: Infra,
    database_url: str,
    ingest: IngestUnderTest,
    vibe_kafka: KafkaSettings | None = None,
    **overrides: Any,
) -> AsyncIterator[ReconcileFlow]:
    """Reconcile with Vibeapp's topics on ``vibe_kafka`` (default: Herald's cluster)."""
    settings = reconcile_settings(database_url, ingest.running.port, **overrides)
    kafka = infra.kafka_settings()
    running = await start(await build(settings, kafka, vibe_kafka or kafka), "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    producer = AIOKafkaProducer(**connection_options(kafka), acks="all")
    await producer.start()
    flow = ReconcileFlow(
        infra,
        database_url,
        ingest,
        settings,
        [running],
        reconcile_pb2_grpc.ReconcileServiceStub(channel),
        producer,
        [channel],
    )
    try:
        yield flow
    finally:
        await producer.stop()
        for c in flow.channels:
            await c.close()
        for r in flow.running:
            await r.stop(1)


@contextlib.asynccontextmanager
async def flow_with_ingest(
    infra: Infra, database_url: str, topic: str
) -> AsyncIterator[ReconcileFlow]:
    """An ingest of its own publishing to ``topic``, and reconcile (orders parked 2 s
    at most) publishing through it: the ``flow`` fixture of the reconcile tests."""
    ingest = await start_ingest(infra, database_url, topic)
    try:
        async with open_flow(infra, database_url, ingest, park_limit_seconds=2) as flow:
            yield flow
    finally:
        await ingest.stop()
