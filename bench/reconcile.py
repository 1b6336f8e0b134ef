"""(r) Reconcile: Ticketland orders and refunds from their input topics to Vibeapp's
output topics, beside a raw aiokafka consume→produce loop over the same input records
(one record out per record in, offsets committed per batch) in the same run.

The inputs are produced beforehand onto fresh topics (Protobuf): EVENTS events, then
ORDERS orders of two tickets each, then REFUNDS approved refunds of one ticket (the
refunds carry their money split, so every check runs). Reconcile runs as its own
process with Vibeapp's topics on the same broker. The rate is orders + refunds sent,
from the start of the ledger's first batch (the earliest ``reconcile.inputs`` row) to
the last output record's Kafka timestamp, so process start and group join are not
counted; the rate from the process's spawn to the last output is kept too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
from ticketland.v1 import ticketland_pb2 as tl

from bench import infra
from bench.cpu import CpuMeter
from bench.dispatch import RAW_REPEATS, output_times, raw_loop
from bench.ingest_proc import free_port, service_env, service_process
from herald.runtime import kafka

EVENTS, ORDERS, REFUNDS = 100, 20_000, 5_000


def _topic(name: str, suffix: str) -> str:
    """This run's stand-in for the topic ``name`` (swept after the scenario)."""
    return infra.topic_name(name, suffix)


def _inputs(suffix: str) -> list[tuple[str, str, bytes]]:
    """(topic, key, value) of every input record, in production order."""
    out: list[tuple[str, str, bytes]] = []
    for e in range(EVENTS):
        event = tl.Event(
            id=f"e{e}",
            name=f"Event {e}",
            status=tl.Event.STATUS_ACTIVE,
            category="concert",
            start_at=1_767_196_800_000,
            finish_at=1_767_207_600_000,
            organizer=tl.Organizer(id=f"org{e % 10}", name="Org"),
        )
        out.append((_topic("ticketland.events", suffix), event.id, event.SerializeToString()))
    for o in range(ORDERS):
        order = tl.Order(
            id=f"o{o}",
            number=str(o),
            status=tl.Order.STATUS_DONE,
            event_id=f"e{o % EVENTS}",
            organizer_id=f"org{o % 10}",
            customer=tl.Customer(email=f"c{o}@example.com", phone="+79990000000"),
            tickets=[
                tl.Ticket(
                    id=f"o{o}t{t}", barcode=f"b{o}t{t}", price_nominal=150_000, currency="RUB"
                )
                for t in range(2)
            ],
        )
        out.append((_topic("ticketland.orders", suffix), order.id, order.SerializeToString()))
    for r in range(REFUNDS):
        money = tl.Money(refund_nominal=150_000, customer=140_000, org=5_000, agent=5_000)
        refund = tl.RefundRequest(
            id=f"r{r}",
            status=tl.RefundRequest.STATUS_APPROVED,
            order_id=f"o{r}",
            event_id=f"e{r % EVENTS}",
            organizer_id=f"org{r % 10}",
            money=money,
            tickets=[tl.RefundTicket(ticket_id=f"o{r}t0", price=150_000, money=money)],
        )
        out.append((_topic("ticketland.refunds", suffix), refund.id, refund.SerializeToString()))
    return out


async def _produce(where: infra.Infra, records: list[tuple[str, str, bytes]]) -> None:
    topics = sorted({t for t, _, _ in records})
    await kafka.ensure_topics(where.kafka_settings(), topics, partitions=6)
    producer = kafka.make_producer(where.kafka_settings(), linger_ms=5)
    await producer.start()
    try:
        headers = [("content-type", b"application/x-protobuf")]
        futures = [
            await producer.send(topic, value, key=key.encode(), headers=headers)
            for topic, key, value in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def run(where: infra.Infra) -> dict[str, Any]:
    """Measures (r): ``raw_rate`` and reconcile's orders + refunds per second."""
    suffix = uuid.uuid4().hex[:8]
    await _produce(where, _inputs(suffix))
    inputs = [_topic("ticketland.orders", suffix), _topic("ticketland.refunds", suffix)]
    n = ORDERS + REFUNDS
    raw = max([await raw_loop(where, inputs, n) for _ in range(RAW_REPEATS)])
    outputs = [_topic("vibe.orders", suffix), _topic("vibe.refunds", suffix)]
    async with infra.fresh_database(where.database_url) as database_url:
        env = service_env(
            {
                "DATABASE_URL": database_url,
                "KAFKA_BOOTSTRAP_SERVERS": where.bootstrap_servers,
                "RECONCILE_ADDR": f"127.0.0.1:{free_port()}",
                "RECONCILE_METRICS_ADDR": f"127.0.0.1:{free_port()}",
                "TICKETLAND_EVENTS_TOPIC": _topic("ticketland.events", suffix),
                "TICKETLAND_ORDERS_TOPIC": inputs[0],
                "TICKETLAND_REFUNDS_TOPIC": inputs[1],
                "RECONCILE_GROUP": f"bench-{suffix}",
                "VIBE_EVENTS_TOPIC": _topic("vibe.events", suffix),
                "VIBE_ORDERS_TOPIC": outputs[0],
                "VIBE_REFUNDS_TOPIC": outputs[1],
                "DLQ_TOPIC": infra.topic_name("dlq", suffix),
            }
        )
        spawned = time.time()
        async with service_process("herald.services.reconcile", env) as process:
            # From spawn (start-up included) to the last output: where the CPU went.
            meter = CpuMeter((process.pid,))
            meter.start()
            seen, first, last = await output_times(where, outputs, n, 900)
            cpu = meter.stop()
        conn = await asyncpg.connect(database_url)
        try:
            # When the ledger's first batch began (its transaction's start).
            taken = await conn.fetchval(
                "SELECT extract(epoch FROM min(received_at))::float8 FROM reconcile.inputs"
            )
        finally:
            await conn.close()
    if seen < n:
        raise RuntimeError(f"reconcile sent {seen} of {n} orders and refunds within 900 s")
    return {
        "raw_rate": raw,
        "orders": ORDERS,
        "refunds": REFUNDS,
        "events": EVENTS,
        "records": seen,
        "seconds": last - taken,
        "rate": seen / (last - taken),
        # First output to last: inflated when outputs queue up before the relay sends.
        "rate_first_to_last_output": seen / max(last - first, 1e-3),
        # Including the process's start, migrations and group join: a floor.
        "seconds_from_spawn": last - spawned,
        "rate_from_spawn": seen / (last - spawned),
        "cpu": cpu,
    }
