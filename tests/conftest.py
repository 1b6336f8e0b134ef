"""Session-wide fixtures: the real PostgreSQL and Kafka this test session uses.

They are started here when not running (and stopped again at the end); a
``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` in the environment points the tests
at an existing server instead. Every test gets its own database and topics.
"""

from __future__ import annotations

import asyncio
import gc
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from herald.devenv import LocalKafka, servers
from herald.runtime.kafka import connection_options
from herald.runtime.server import Running, where
from herald.runtime.settings import KafkaSettings


@dataclass(frozen=True)
class Infra:
    """Where the session's servers are, and the local Kafka when we manage it."""

    database_url: str
    bootstrap_servers: str
    kafka: LocalKafka | None  # None when external: tests that stop Kafka need it

    def kafka_settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers)

    def scram_settings(self, password: str = "vibe-secret") -> KafkaSettings:
        """The local Kafka's SCRAM-SHA-512 listener, as user ``vibe`` (the test fails
        where Kafka is external: the listener is the project's own)."""
        if self.kafka is None:
            pytest.fail("needs the local Kafka's SCRAM-SHA-512 listener")
        return KafkaSettings(
            bootstrap_servers=self.kafka.scram_bootstrap_servers,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="vibe",
            sasl_password=password,
        )


# Topics of one test carry a random hex suffix (``….t0123456789``); bench ones too.
TEST_TOPIC = re.compile(r"[.-][a-z]?[0-9a-f]{8,}(\.raw\.[0-9a-f]+)?$")


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with servers() as running:
        where = Infra(running.database_url, running.bootstrap_servers, running.kafka)
        before = asyncio.run(_topics(where)) if where.kafka is not None else None
        yield where
        if before is not None:
            # The project's own Kafka keeps what tests create from run to run; left
            # alone, thousands of partitions exhaust the broker's open files.
            asyncio.run(_delete_test_topics(where, before))


async def _topics(where: Infra) -> set[str]:
    admin = AIOKafkaAdminClient(**connection_options(where.kafka_settings()))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _delete_test_topics(where: Infra, before: set[str]) -> None:
    """Deletes the topics this session created whose names mark them as a test's."""
    try:
        created = sorted(t for t in await _topics(where) - before if TEST_TOPIC.search(t))
        admin = AIOKafkaAdminClient(**connection_options(where.kafka_settings()))
        await admin.start()
        try:
            for i in range(0, len(created), 200):
                await admin.delete_topics(created[i : i + 200], timeout_ms=30_000)
        finally:
            await admin.close()
    except Exception as exc:  # hygiene only: never fail the session for it
        print(f"test topics not deleted: {exc!r}")


@pytest.fixture
async def database_url(infra: Infra) -> AsyncIterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"herald_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(infra.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = infra.database_url.rpartition("/")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(infra.database_url)
    try:
        await asyncio.wait_for(admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'), 30)
    finally:
        await admin.close()


@pytest.fixture
def topic() -> str:
    """A topic name of this test's own."""
    return f"herald.events.t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session", autouse=True)
async def every_service_stopped() -> AsyncIterator[None]:
    """After the session: no service a test started is still running. One left running
    (its workers, pools, Kafka clients and gRPC server) outlived its database and, torn
    down with the interpreter after the event loop had closed, made the process exit
    with a segmentation fault now and then."""
    yield
    gc.collect()  # while the event loop still runs
    running = [
        f"{o.app.name} on port {o.port} (stopped: {o.stopping}; running: "
        + ", ".join(f"{t.get_name()} at {where(t)}" for t in o.tasks if not t.done())
        + ")"
        for o in gc.get_objects()
        if isinstance(o, Running) and any(not t.done() for t in o.tasks)
    ]
    assert not running, f"services a test left running: {running}"
