"""The shared runtime against the real servers: migrations, Kafka security, /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from herald.runtime import db, kafka
from herald.runtime import listen as listen_module
from herald.runtime import server as server_module
from herald.runtime.channels import internal_channel
from herald.runtime.listen import listen
from herald.runtime.metrics import MetricsServer
from herald.runtime.settings import KafkaSettings, StartError
from tests.conftest import Infra
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration
MIGRATIONS = Path(__file__).parents[2] / "src/herald/services/ingest/sql/migrations"


async def test_migrations_apply_once(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        migrations = db.read_migrations("ingest", MIGRATIONS)
        assert await db.migrate(conn, migrations) == [1, 2]
        assert await db.migrate(conn, migrations) == []
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'ingest'")
        }
        assert tables == {"event_types", "events", "idempotency_keys", "outbox", "dlq_outbox"}
    finally:
        await conn.close()


@pytest.mark.parametrize(("query", "idle"), [("", "60"), ("?tcp_keepalives_idle=30", "30")])
async def test_postgresql_soon_notices_a_service_that_vanished(
    database_url: str, query: str, idle: str
) -> None:
    # A relay whose host was lost kept its transaction, and the lanes it had locked,
    # until the operating system's keepalive (two hours and more) closed it
    pool = await db.create_pool(database_url + query, 1)
    try:
        settings = await pool.fetchrow(
            "SELECT current_setting('tcp_keepalives_idle') AS idle,"
            " current_setting('tcp_keepalives_interval') AS every,"
            " current_setting('tcp_keepalives_count') AS count"
        )
    finally:
        await pool.close()
    assert settings is not None
    assert (settings["idle"], settings["every"], settings["count"]) == (idle, "10", "6")


async def test_a_failing_migration_stops_the_start_naming_its_file_and_applies_none_of_it(
    database_url: str,
) -> None:
    """An operator whose migration fails reads one line naming the file and the reason
    (no traceback), finds none of it applied and the migration lock free for the next
    start."""
    conn = await asyncpg.connect(database_url)
    try:
        migrations = [
            db.Migration("probe", 1, "first", "CREATE TABLE probe_a (x int)"),
            db.Migration("probe", 2, "broken", "CREATE TABLE probe_b (x int); SELECT 1/0"),
        ]
        with pytest.raises(StartError) as raised:
            await db.migrate(conn, migrations)
        message = str(raised.value)
        assert message.startswith("cannot start: DATABASE_URL: probe migration 002_broken.sql")
        assert "rolled back" in message
        assert "division by zero" in message
        assert await conn.fetchval("SELECT to_regclass('probe_a') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('probe_b') IS NULL")
        applied = await conn.fetch("SELECT version FROM herald_migrations WHERE service = 'probe'")
        assert [r["version"] for r in applied] == [1]
        other = await asyncpg.connect(database_url)
        try:
            assert await other.fetchval("SELECT pg_try_advisory_lock($1)", db._MIGRATION_LOCK)
        finally:
            await other.close()
    finally:
        await conn.close()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_compressed_batches_are_read(infra: Infra, topic: str, codec: str) -> None:
    # A batch compressed with snappy, lz4 or zstd (any producer may compress; a topic's
    # compression.type may ask for it) raised UnsupportedCodecError in every consumer of
    # the topic: dispatch (or reconcile) stopped at it, restart after restart
    settings = infra.kafka_settings()
    producer = kafka.make_producer(settings, compression_type=codec)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"compressed " * 100, key=b"k")
    finally:
        await producer.stop()
    consumer = kafka.make_consumer(settings, topic, group_id=f"g-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()
    values = [r.value for records in batches.values() for r in records]
    assert values == [b"compressed " * 100]


async def test_producer_honours_sasl_scram_settings(infra: Infra) -> None:
    topic = f"herald.scram.t{uuid.uuid4().hex[:8]}"
    good = infra.scram_settings()
    producer = kafka.make_producer(good)
    await producer.start()
    try:
        await (await producer.send(topic, b"hello", key=b"k"))
    finally:
        await producer.stop()
    [record] = await read_topic(infra.kafka_settings(), topic, 1)
    assert record.value == b"hello"

    bad = infra.scram_settings(password="wrong")
    producer = kafka.make_producer(bad, request_timeout_ms=3000)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(producer.start(), 20)
    await producer.stop()


async def test_wrong_kafka_credentials_are_named_in_the_unreachable_line(infra: Infra) -> None:
    """A wrong SCRAM password made a service log only "Unable to bootstrap": the
    authentication failure was in aiokafka's silenced lines."""
    wrong = infra.scram_settings(password="wrong")
    with capture_logs() as logs, contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            kafka.start_when_reachable(lambda: kafka.make_producer(wrong), "vibe"), 3
        )
    unreachable = [line for line in logs if line["event"] == "kafka.unreachable"]
    assert unreachable, logs
    assert "SaslAuthenticationFailed" in unreachable[0]["reason"]


def test_ssl_settings_build_a_context_from_the_ca_file() -> None:
    cafile = "/etc/ssl/certs/ca-certificates.crt"
    if not Path(cafile).exists():
        pytest.fail("the system CA bundle is expected on Debian")
    options = kafka.connection_options(
        KafkaSettings(
            bootstrap_servers="broker:9091",
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="u",
            sasl_password="p",
            ssl_cafile=cafile,
        )
    )
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"


def test_metrics_endpoint_serves_prometheus_text() -> None:
    server = MetricsServer("127.0.0.1", 0)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read().decode()
    finally:
        server.close()
    for name in (
        "events_published_total",
        "events_retry_total",
        "events_latency_seconds",
        "events_dlq_total",
    ):
        assert name in body


def test_a_metrics_address_in_use_stops_the_start_naming_its_variable() -> None:
    taken = MetricsServer("127.0.0.1", 0)
    try:
        address = f"127.0.0.1:{taken.port}"
        with pytest.raises(StartError) as exc:
            MetricsServer.listen(address, "INGEST_METRICS_ADDR")
    finally:
        taken.close()
    assert exc.value.code == (
        f"cannot start: INGEST_METRICS_ADDR: cannot serve /metrics on {address}: "
        "Address already in use"
    )


def test_a_bracketed_ipv6_metrics_address_is_served() -> None:
    # "[::1]:0" passed the setting's check, then failed: "Name or service not known"
    server = MetricsServer.listen("[::1]:0", "INGEST_METRICS_ADDR")
    try:
        body = urllib.request.urlopen(f"http://[::1]:{server.port}/metrics").read().decode()
    finally:
        server.close()
    assert "events_published_total" in body


async def test_an_address_not_on_this_host_stops_the_start_at_once_saying_so() -> None:
    # Waited for 70 s, then "the port is in use (waited 70 s)"
    address = "192.0.2.1:50051"  # TEST-NET-1: no host has it
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(StartError) as exc:
        await listen(grpc.aio.server(), address, "INGEST_ADDR")
    assert time.monotonic() - started < 5
    assert exc.value.message == (
        f"INGEST_ADDR: cannot listen on {address}: Cannot assign requested address"
    )
    assert logs == []
    # One address of several that cannot be had is grpc's to skip (localhost on a host
    # without IPv6): not fatal while another can be bound
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    places: list[Any] = [
        (socket.AF_INET, ("192.0.2.1", port)),
        (socket.AF_INET, ("127.0.0.1", port)),
    ]
    assert listen_module._bind_error(places) is None
    assert listen_module._bind_error(places[:1]) is not None


def test_a_family_the_kernel_lacks_is_skipped_as_grpc_skips_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # localhost resolving to ::1 too on a kernel without IPv6 (ipv6.disable=1): making
    # the probe's socket raised, a traceback instead of a start on 127.0.0.1
    real = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: Any) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(family, *args)

    monkeypatch.setattr(socket, "socket", no_ipv6)  # the module listen uses
    with real() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    places: list[Any] = [
        (socket.AF_INET6, ("::1", port, 0, 0)),
        (socket.AF_INET, ("127.0.0.1", port)),
    ]
    assert listen_module._bind_error(places) is None
    assert listen_module._listened_on(places) is False


async def test_a_stop_hook_may_spend_the_stops_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each hook was cut at STOP_STEP_SECONDS (15 s): ingest's relay drained its outbox
    # for 15 s whatever SHUTDOWN_GRACE_SECONDS said (made 0.3 s here, the grace 1 s).
    # Only the drain may: a stuck pool.close holds the stop no longer than before
    monkeypatch.setattr(server_module, "STOP_STEP_SECONDS", 0.3)
    finished: list[str] = []

    async def drain() -> None:
        await asyncio.sleep(0.8)  # past the step, within step + grace
        finished.append("drain")

    async def stuck() -> None:
        await asyncio.sleep(60)
        finished.append("stuck")

    app = server_module.App(name="probe", service_names=[], register=lambda _s: None)
    app.on_stop = [server_module.spending_grace(drain), stuck]
    running = await server_module.start(app, "127.0.0.1:0")
    started = time.monotonic()
    with capture_logs() as logs:
        await running.stop(1.0)
    assert finished == ["drain"]
    assert [e for e in logs if e["event"] == "shutdown.hook_stuck"] == [
        {
            "event": "shutdown.hook_stuck",
            "hook": stuck.__qualname__,
            "seconds": 0.3,  # a hook not marked: the step alone
            "log_level": "error",
        }
    ]
    assert time.monotonic() - started < 3


def _time_wait_port() -> int:
    """A local port held by a closed outgoing connection in TIME_WAIT (no listener)."""
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.bind(("127.0.0.1", 0))
        client.connect(server.getsockname())
        accepted, _ = server.accept()
        port: int = client.getsockname()[1]
        client.close()  # the active close: TIME_WAIT on the client's end
        accepted.close()
    return port


async def test_a_grpc_port_another_process_listens_on_stops_the_start_at_once() -> None:
    # Retried for 70 s, a grpc error line a second, before the start stopped
    server = grpc.aio.server()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        started = time.monotonic()
        with capture_logs() as logs, pytest.raises(StartError) as exc:
            await listen(server, address, "INGEST_ADDR")
    assert time.monotonic() - started < 5
    assert exc.value.message == (
        f"INGEST_ADDR: cannot listen on {address}: the port is in use (another process "
        "listens on it)"
    )
    assert logs == []


async def test_a_grpc_port_held_without_a_listener_is_waited_for_saying_so_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listen_module, "BIND_WAIT_SECONDS", 2.0)
    address = f"127.0.0.1:{_time_wait_port()}"
    with capture_logs() as logs, pytest.raises(StartError) as exc:
        await listen(grpc.aio.server(), address, "INGEST_ADDR")
    assert exc.value.message == (
        f"INGEST_ADDR: cannot listen on {address}: the port is in use (waited 2 s)"
    )
    assert [e["event"] for e in logs] == ["server.address_in_use"]
    assert "TIME_WAIT" in logs[0]["detail"]


async def test_a_grpc_port_freed_while_waited_for_is_bound() -> None:
    held = socket.socket()  # bound, not listening: what a TIME_WAIT end looks like
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    asyncio.get_running_loop().call_later(1.5, held.close)
    server = grpc.aio.server()
    with capture_logs() as logs:
        bound = await listen(server, f"127.0.0.1:{port}", "INGEST_ADDR")
    assert bound == port
    assert [e["event"] for e in logs] == ["server.address_in_use", "server.address_free"]
    await server.start()
    await server.stop(None)


async def test_a_database_that_cannot_be_reached_stops_the_start_naming_database_url(
    database_url: str,
) -> None:
    # An asyncpg traceback that never named DATABASE_URL
    base, _, _ = database_url.rpartition("/")
    with pytest.raises(StartError) as exc:
        await db.create_pool(f"{base}/no_such_database", 2)
    assert exc.value.message == (
        f"DATABASE_URL: cannot connect to {base}/no_such_database: "
        'InvalidCatalogNameError: database "no_such_database" does not exist'
    )
    with pytest.raises(StartError) as exc:
        await db.create_pool("postgresql://herald:pa%40ss@127.0.0.1:1/herald?password=pw2", 2)
    assert exc.value.message.startswith(
        "DATABASE_URL: cannot connect to postgresql://herald:***@127.0.0.1:1/herald"
        "?password=***: ConnectionRefusedError: "
    )
    for secret in ("pa%40ss", "pa@ss", "pw2"):
        assert secret not in exc.value.message
    # The client key's passphrase is a secret too
    with pytest.raises(StartError) as exc:
        await db.create_pool(
            "postgresql://herald@127.0.0.1:1/herald?sslmode=disable&sslpassword=keypass9", 2
        )
    assert exc.value.message.startswith(
        "DATABASE_URL: cannot connect to postgresql://herald@127.0.0.1:1/herald"
        "?sslmode=disable&sslpassword=***: "
    )
    assert "keypass9" not in exc.value.message


async def test_a_topic_kafka_refuses_to_create_stops_the_start(infra: Infra, topic: str) -> None:
    # Any refusal was ignored, and kafka.topics_created logged
    settings = infra.kafka_settings()
    await kafka.ensure_topics(settings, [topic], partitions=1)
    colliding = topic.replace(".", "_")  # Kafka refuses: '.' and '_' collide in metrics
    fresh = f"{topic}.fresh"
    with pytest.raises(kafka.TopicsNotCreated) as exc:
        await kafka.ensure_topics(settings, [topic, colliding], partitions=1)
    assert list(exc.value.refused) == [colliding]
    assert exc.value.refused[colliding].startswith("InvalidTopicError: ")
    assert f"Kafka refused to create topic '{colliding}': InvalidTopicError: " in str(exc.value)
    with pytest.raises(kafka.TopicsNotCreated) as exc:
        await kafka.ensure_topics(settings, [fresh], partitions=0)
    assert exc.value.refused[fresh].startswith("InvalidPartitionsError: ")
    admin = AIOKafkaAdminClient(**kafka.connection_options(settings))
    await admin.start()
    try:
        assert not {colliding, fresh} & set(await admin.list_topics())
    finally:
        await admin.close()
    await kafka.ensure_topics(settings, [topic, topic], partitions=1)  # exists: nothing to do


async def test_a_migration_runner_that_may_not_create_its_table_stops_the_start_saying_so(
    database_url: str,
) -> None:
    # A raw InsufficientPrivilegeError traceback (only a migration's own failure was
    # told): PostgreSQL 15 lets no other user create in the public schema
    role = f"herald_probe_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        base, _, rest = database_url.partition("://")
        conn = await asyncpg.connect(f"{base}://{role}@{rest.partition('@')[2]}")
        try:
            with pytest.raises(StartError) as raised:
                await db.migrate(conn, [db.Migration("probe", 1, "first", "SELECT 1")])
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()
    assert raised.value.message.startswith(
        "DATABASE_URL: migrations: creating herald_migrations failed: "
        "InsufficientPrivilegeError: permission denied for schema public"
    )


async def test_topics_get_the_replication_the_setting_asks_for(infra: Infra, topic: str) -> None:
    # Every topic Herald created had one replica, whatever the cluster: a broker lost
    # lost its events, and acks=all sends failed for ever where min.insync.replicas > 1
    settings = infra.kafka_settings()
    admin = AIOKafkaAdminClient(**kafka.connection_options(settings))
    await admin.start()
    try:
        assert await kafka.cluster_replication(admin) == 1  # default.replication.factor
    finally:
        await admin.close()
    wanted = settings.model_copy(update={"topic_replication_factor": 2})
    with pytest.raises(kafka.TopicsNotCreated) as exc:
        await kafka.ensure_topics(wanted, [topic], partitions=1)  # one broker: refused
    assert exc.value.refused[topic].startswith("InvalidReplicationFactorError: ")
    await kafka.ensure_topics(settings, [topic], partitions=1)
    admin = AIOKafkaAdminClient(**kafka.connection_options(settings))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert [len(p["replicas"]) for p in described["partitions"]] == [1]


async def test_topics_at_a_services_start_get_their_partitions_and_outlive_no_kafka(
    infra: Infra, topic: str
) -> None:
    settings = infra.kafka_settings()
    wide, usual = f"{topic}.wide", f"{topic}.usual"
    await kafka.ensure_topics_at_start(settings, [wide, usual], "svc", {wide: 3})
    producer = kafka.make_producer(settings)
    await producer.start()
    try:
        assert len(await producer.partitions_for(wide)) == 3
        assert len(await producer.partitions_for(usual)) == 6
    finally:
        await producer.stop()
    with pytest.raises(kafka.TopicsNotCreated):  # a refusal still stops the start
        await kafka.ensure_topics_at_start(settings, [f"{topic}.none"], "svc", {f"{topic}.none": 0})
    away = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    with capture_logs() as logs:
        await kafka.ensure_topics_at_start(away, [usual], "svc")  # logged, not raised
    assert [(line["event"], line["service"]) for line in logs] == [
        ("kafka.topics_unchecked", "svc")
    ]


async def _produce_numbers(settings: KafkaSettings, topic: str, n: int) -> None:
    """Records "0" … "n-1", one key, in order."""
    producer = kafka.make_producer(settings)
    await producer.start()
    try:
        for i in range(n):
            await producer.send(topic, str(i).encode(), key=b"k")
        await producer.flush()
    finally:
        await producer.stop()


def _consuming(
    settings: KafkaSettings,
    topic: str,
    group: str,
    take: Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[None]],
    **options: Any,
) -> asyncio.Task[None]:
    """``kafka.consume`` of ``topic`` in ``group`` as a task."""
    return asyncio.create_task(
        kafka.consume(
            lambda: kafka.make_consumer(settings, topic, group_id=group), "test", take, **options
        )
    )


async def _until_committed(
    worker: asyncio.Task[None], settings: KafkaSettings, group: str, topic: str, n: int
) -> None:
    """Waits until ``group`` has committed offset ``n`` on partition 0, then stops
    ``worker``."""
    try:
        async with asyncio.timeout(30):
            while await _committed(settings, group, topic) != n:
                await asyncio.sleep(0.1)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def _committed(settings: KafkaSettings, group: str, topic: str) -> int | None:
    admin = AIOKafkaAdminClient(**kafka.connection_options(settings))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    found = offsets.get(TopicPartition(topic, 0))
    return None if found is None or found.offset < 0 else found.offset


@pytest.mark.parametrize("depth", [1, 2])
async def test_overlapped_consume_commits_a_batch_only_once_it_has_finished(
    infra: Infra, topic: str, depth: int
) -> None:
    """``depth`` more batches start while one finishes, but no offset passes a batch
    whose finish has not returned, and every record is started once, in order."""
    settings = infra.kafka_settings()
    await kafka.ensure_topics(settings, [topic], partitions=1)
    await _produce_numbers(settings, topic, 30)

    group = f"overlap-{uuid.uuid4().hex[:8]}"
    started: list[list[int]] = []
    gate = asyncio.Event()

    async def finish(first: bool) -> None:
        if first:
            await gate.wait()

    async def start(records: list[ConsumerRecord[bytes, bytes]]) -> Awaitable[None]:
        started.append([int(r.value) for r in records])
        return finish(len(started) == 1)

    worker = asyncio.create_task(
        kafka.consume_overlapped(
            lambda: kafka.make_consumer(settings, topic, group_id=group),
            "test",
            start,
            max_records=10,
            depth=depth,
        )
    )
    try:
        async with asyncio.timeout(30):
            while len(started) < depth + 1:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1)  # time enough to start another batch or commit, if it would
        assert len(started) == depth + 1  # started while the first waits, and no more
        assert await _committed(settings, group, topic) is None

        gate.set()
        async with asyncio.timeout(30):
            while await _committed(settings, group, topic) != 30:
                await asyncio.sleep(0.1)
        assert [n for batch in started for n in batch] == list(range(30))
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def test_consume_fetches_no_more_than_the_budget_allows(infra: Infra, topic: str) -> None:
    """A busy downstream (budget 7) gets batches of at most 7; the rest waits on Kafka."""
    settings = infra.kafka_settings()
    await kafka.ensure_topics(settings, [topic], partitions=1)
    await _produce_numbers(settings, topic, 30)
    taken: list[list[int]] = []

    async def take(records: list[ConsumerRecord[bytes, bytes]]) -> None:
        taken.append([int(r.value) for r in records])

    async def budget() -> int:
        return 7

    group = f"budget-{uuid.uuid4().hex[:8]}"
    worker = _consuming(settings, topic, group, take, max_records=500, budget=budget)
    await _until_committed(worker, settings, group, topic, 30)
    assert [n for batch in taken for n in batch] == list(range(30))
    assert max(len(batch) for batch in taken) <= 7


async def test_consume_commits_taken_batches_together_at_most_every_interval(
    infra: Infra, topic: str
) -> None:
    """With commit_every, batches are not committed one by one: together, when the
    interval has passed or a poll finds nothing new."""
    settings = infra.kafka_settings()
    await kafka.ensure_topics(settings, [topic], partitions=1)
    await _produce_numbers(settings, topic, 30)
    group = f"coalesce-{uuid.uuid4().hex[:8]}"
    committed_while_taking: list[int | None] = []
    taken: list[int] = []

    async def take(records: list[ConsumerRecord[bytes, bytes]]) -> None:
        committed_while_taking.append(await _committed(settings, group, topic))
        taken.extend(int(r.value) for r in records)

    worker = _consuming(settings, topic, group, take, max_records=5, commit_every=60.0)
    # Six batches of five, then a poll that finds nothing: one commit of all.
    await _until_committed(worker, settings, group, topic, 30)
    assert taken == list(range(30))
    assert len(committed_while_taking) >= 6
    assert set(committed_while_taking) == {None}, "nothing committed batch by batch"


async def test_consume_commits_what_it_took_when_stopped(infra: Infra, topic: str) -> None:
    """Batches taken but not yet committed are committed on the way out; the one being
    taken when it stopped is not."""
    settings = infra.kafka_settings()
    await kafka.ensure_topics(settings, [topic], partitions=1)
    await _produce_numbers(settings, topic, 10)
    group = f"coalesce-stop-{uuid.uuid4().hex[:8]}"
    took = asyncio.Event()
    hold = asyncio.Event()
    first: list[int] = []

    async def take(records: list[ConsumerRecord[bytes, bytes]]) -> None:
        if took.is_set():
            await hold.wait()  # the second batch: stopped while taking it
        first.extend(int(r.value) for r in records)
        took.set()

    worker = _consuming(settings, topic, group, take, max_records=4, commit_every=60.0)
    async with asyncio.timeout(30):
        await took.wait()
        await asyncio.sleep(0.5)
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    assert first == list(range(len(first)))
    assert await _committed(settings, group, topic) == len(first), "the first batch only"


async def _members(settings: KafkaSettings, group: str) -> int:
    admin = AIOKafkaAdminClient(**kafka.connection_options(settings))
    await admin.start()
    try:
        [reply] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    return len(reply.groups[0][5])


async def test_a_consumer_stopped_while_joining_its_group_leaves_no_member_behind(
    infra: Infra, topic: str
) -> None:
    """A consumer joining a group with a member already in it waits for the rebalance
    (until the member's next heartbeat) inside its start. Stopped then, it must not
    stay behind in the group, holding partitions nobody consumes for as long as the
    process lives."""
    settings = infra.kafka_settings()
    await kafka.ensure_topics(settings, [topic], partitions=4)
    group = f"joining-{uuid.uuid4().hex[:8]}"
    present = kafka.make_consumer(settings, topic, group_id=group)
    await present.start()
    try:
        await present.getmany(timeout_ms=500)  # a member, assigned every partition

        async def take(records: list[ConsumerRecord[bytes, bytes]]) -> None:
            pass

        joining = _consuming(settings, topic, group, take, max_records=10)
        await asyncio.sleep(0.5)  # in its start, waiting for the rebalance
        joining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await joining
        async with asyncio.timeout(30):
            while True:
                await present.getmany(timeout_ms=500)  # heartbeats: the rebalance ends
                if await _members(settings, group) == 1:
                    break
        await asyncio.sleep(4)  # a member left behind would have rejoined by now
        await present.getmany(timeout_ms=500)
        assert await _members(settings, group) == 1
        assert len(present.assignment()) == 4
    finally:
        await present.stop()


async def test_calls_between_services_do_not_go_through_a_proxy_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An http_proxy set for outbound access made gRPC send Herald's own calls (the
    internal key and alerts in plaintext) through that proxy."""
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(200))
        writer.close()

    proxy_server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    proxy_port = proxy_server.sockets[0].getsockname()[1]
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy_port}")
    monkeypatch.setenv("grpc_proxy", f"http://127.0.0.1:{proxy_port}")
    try:
        async with internal_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert seen == []
    finally:
        await server.stop(None)
        proxy_server.close()
