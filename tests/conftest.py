"""Session-wide fixtures: the real PostgreSQL and Kafka this test session uses.

They are started here when not running (and stopped again at the end); a
``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` in the environment points the tests
at an existing server instead. Every test gets its own database and topics.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import pytest

from herald.devenv import LocalKafka, servers
from herald.runtime.settings import KafkaSettings


@dataclass(frozen=True)
class Infra:
    """Where the session's servers are, and the local Kafka when we manage it."""

    database_url: str
    bootstrap_servers: str
    kafka: LocalKafka | None  # None when external: tests that stop Kafka need it

    def kafka_settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers)


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with servers() as running:
        yield Infra(running.database_url, running.bootstrap_servers, running.kafka)


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
