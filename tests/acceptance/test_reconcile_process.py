"""reconcile as a process: kill -9 while it works through a backlog, restart, and
Vibeapp still gets every event, order and refund, in order; a repeat (a record sent
but not yet marked when the process died) is the same record again."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from vibe.v1 import vibe_pb2 as vibe

from herald.runtime.kafka import connection_options
from tests.acceptance.conftest import ServiceProcess, free_port
from tests.conftest import Infra
from tests.integration.reconcile_flow import event, order, refund
from tests.kafka_helpers import read_matching

pytestmark = pytest.mark.acceptance
EVENTS, ORDERS, REFUNDS = 10, 5000, 1000


async def test_kill_9_mid_backlog_then_restart_loses_nothing_and_keeps_the_order(
    infra: Infra, database_url: str, service_logs: Path
) -> None:
    s = uuid.uuid4().hex[:8]
    topics = {
        "TICKETLAND_EVENTS_TOPIC": f"ticketland.events.{s}",
        "TICKETLAND_ORDERS_TOPIC": f"ticketland.orders.{s}",
        "TICKETLAND_REFUNDS_TOPIC": f"ticketland.refunds.{s}",
        "VIBE_EVENTS_TOPIC": f"vibe.events.{s}",
        "VIBE_ORDERS_TOPIC": f"vibe.orders.{s}",
        "VIBE_REFUNDS_TOPIC": f"vibe.refunds.{s}",
    }
    reconcile = ServiceProcess(
        "reconcile",
        {
            "RECONCILE_ADDR": f"127.0.0.1:{free_port()}",
            "RECONCILE_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
            "RECONCILE_GROUP": f"g{s}",
            "DLQ_TOPIC": f"herald.dlq.{s}",
            "INGEST_ADDR": f"127.0.0.1:{free_port()}",  # none: nothing to announce here
            "LOG_LEVEL": "WARNING",
            **topics,
        },
        service_logs / "reconcile.log",
    )
    await asyncio.to_thread(reconcile.start)
    try:
        await _produce(infra, topics)
        # Killed as soon as the first orders went out: mid-backlog.
        sent_at_kill = await _first_sent(database_url, 60)
        reconcile.kill()
        assert 0 < sent_at_kill < ORDERS, "the kill came mid-backlog"
        await asyncio.to_thread(reconcile.start)
        orders = await _read_keys(infra, topics["VIBE_ORDERS_TOPIC"], ORDERS, 120)
        refunds = await _read_keys(infra, topics["VIBE_REFUNDS_TOPIC"], REFUNDS, 60)
        events = await _read_keys(infra, topics["VIBE_EVENTS_TOPIC"], EVENTS, 30)
    finally:
        reconcile.terminate()

    def by_key(found: list[Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = defaultdict(list)
        for r in found:
            out[r.key.decode()].append(r)
        return out

    got_events, got_orders, got_refunds = by_key(events), by_key(orders), by_key(refunds)
    assert set(got_events) == {f"e{i}" for i in range(EVENTS)}
    missing = sorted({f"o{i}" for i in range(ORDERS)} - set(got_orders))
    if missing:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT o.id, o.delivery, o.status, (SELECT count(*) FROM reconcile.outbox b"
                " WHERE b.entity_id = o.id) AS queued, (SELECT count(*) FROM reconcile.outbox b"
                " WHERE b.entity_id = o.id AND sent_at IS NOT NULL) AS sent"
                " FROM reconcile.orders o WHERE o.id = ANY($1)",
                missing[:20],
            )
            inputs = await conn.fetchval(
                "SELECT count(*) FROM reconcile.inputs WHERE kind = 'order'"
            )
        finally:
            await conn.close()
        pytest.fail(f"{len(missing)} orders lost; inputs taken {inputs}; {[dict(r) for r in rows]}")
    assert set(got_refunds) == {f"r{i}" for i in range(REFUNDS)}, "no refund lost"
    for group in (got_events, got_orders, got_refunds):
        for key, copies in group.items():
            assert len({c.value for c in copies}) == 1, f"{key}: a repeat must be the same"
    first_event = {k: min(c.timestamp for c in v) for k, v in got_events.items()}
    first_order = {k: min(c.timestamp for c in v) for k, v in got_orders.items()}
    for key, copies in got_orders.items():
        event_id = vibe.Order.FromString(copies[0].value).event_id
        assert first_event[event_id] <= min(c.timestamp for c in copies), key
    for key, copies in got_refunds.items():
        order_id = vibe.Refund.FromString(copies[0].value).order_id
        assert first_order[order_id] <= min(c.timestamp for c in copies), key

    conn = await asyncpg.connect(database_url)
    try:
        refunded = await conn.fetchval(
            "SELECT count(*) FROM reconcile.tickets WHERE status = 'refunded'"
        )
        open_findings = await conn.fetchval("SELECT count(*) FROM reconcile.discrepancies")
    finally:
        await conn.close()
    assert (refunded, open_findings) == (REFUNDS, 0)


async def _first_sent(database_url: str, within: float) -> int:
    """Waits until some orders were sent to Vibeapp; how many."""
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(int(within / 0.02)):
            try:
                n = await conn.fetchval(
                    "SELECT count(*) FROM reconcile.outbox"
                    " WHERE kind = 'order' AND sent_at IS NOT NULL"
                )
            except asyncpg.UndefinedTableError:  # not migrated yet
                n = 0
            if n:
                return int(n)
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    raise AssertionError(f"no order sent within {within} s")


async def _produce(infra: Infra, topics: dict[str, str]) -> None:
    """The inputs, produced while reconcile runs: events, orders, refunds."""
    producer = AIOKafkaProducer(**connection_options(infra.kafka_settings()), linger_ms=5)
    await producer.start()
    try:
        records: list[tuple[str, Any]] = [
            (topics["TICKETLAND_EVENTS_TOPIC"], event(f"e{i}")) for i in range(EVENTS)
        ]
        records += [
            (topics["TICKETLAND_ORDERS_TOPIC"], order(f"o{i}", f"e{i % EVENTS}", {f"t{i}": 100}))
            for i in range(ORDERS)
        ]
        records += [
            (
                topics["TICKETLAND_REFUNDS_TOPIC"],
                refund(f"r{i}", f"o{i}", f"e{i % EVENTS}", {f"t{i}": (100, 100, 0, 0)}),
            )
            for i in range(REFUNDS)
        ]
        headers = [("content-type", b"application/x-protobuf")]
        sent = [
            await producer.send(t, m.SerializeToString(), key=m.id.encode(), headers=headers)
            for t, m in records
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _read_keys(infra: Infra, topic: str, keys: int, within: float) -> list[Any]:
    """Every record of ``topic`` once ``keys`` distinct keys were seen (repeats after
    the kill make more records than keys)."""
    return await read_matching(
        infra.kafka_settings(), topic, lambda _: True, keys, within, distinct=lambda r: r.key
    )
