"""The servers a run uses: started when needed, stopped again only if we started them.

Every ingest scenario gets a database and a topic of its own (``herald_bench_<hex>``,
``herald.bench.<run>.<label>.<hex>``); the database is dropped afterwards. Every topic
a run creates starts with its own ``RUN_PREFIX``, and those a scenario leaves are
deleted after it (``sweep_topics``): thousands of leftover partitions slow the broker,
and with it every later figure. A run never deletes another run's topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from herald import devenv
from herald.devenv import LocalKafka, local_root
from herald.runtime import kafka
from herald.runtime.settings import KafkaSettings

# The topics of one `python -m bench` run, and only they, start with this.
RUN_PREFIX = f"herald.bench.{uuid.uuid4().hex[:6]}."


@dataclass(frozen=True)
class Infra:
    """Where the servers of this run are."""

    database_url: str
    bootstrap_servers: str
    started: tuple[str, ...]  # the local servers this run started (and will stop)

    def kafka_settings(self) -> KafkaSettings:
        """Settings of the Kafka cluster."""
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers)


@contextlib.contextmanager
def servers() -> Iterator[Infra]:
    """Starts the local Kafka and PostgreSQL unless running or external; on exit
    stops only those it started."""
    with devenv.servers() as running:
        yield Infra(running.database_url, running.bootstrap_servers, running.started)


def kafka_version(bootstrap_servers: str) -> str:
    """The local broker's version (from its jars), or "external"."""
    local = LocalKafka(local_root())
    if bootstrap_servers != local.bootstrap_servers:
        return "external"
    jars = sorted(local.libs_dir.glob("kafka-server-[0-9]*.jar"))
    return jars[-1].stem.removeprefix("kafka-server-") if jars else "?"


def new_topic_name(label: str) -> str:
    """A topic name nobody used before."""
    return topic_name(label, uuid.uuid4().hex[:10])


def topic_name(label: str, suffix: str) -> str:
    """This run's topic ``label`` with ``suffix`` (swept after the scenario)."""
    return f"{RUN_PREFIX}{label}.{suffix}"


async def create_topic(settings: KafkaSettings, topic: str, partitions: int) -> None:
    """Creates ``topic`` with ``partitions`` partitions (as ingest would)."""
    await kafka.ensure_topics(settings, [topic], partitions=partitions)


async def delete_topic(settings: KafkaSettings, topic: str) -> None:
    """Deletes ``topic`` (best effort: a leftover topic harms nothing)."""
    admin = AIOKafkaAdminClient(**kafka.connection_options(settings))
    try:
        await admin.start()
        await admin.delete_topics([topic])
    except Exception as exc:
        print(f"  (could not delete topic {topic}: {exc!r})")
    finally:
        await admin.close()


async def sweep_topics(settings: KafkaSettings) -> int:
    """Deletes the topics of this run that exist now; returns how many (best effort: a
    failure is printed, the figures stand)."""
    try:
        admin = AIOKafkaAdminClient(**kafka.connection_options(settings))
        try:
            await admin.start()
            created = sorted(t for t in await admin.list_topics() if t.startswith(RUN_PREFIX))
            for i in range(0, len(created), 100):
                await admin.delete_topics(created[i : i + 100])
        finally:
            await admin.close()
    except Exception as exc:
        print(f"  (could not delete this scenario's topics: {exc!r})")
        return 0
    return len(created)


@contextlib.asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server of ``server_url``; dropped on exit."""
    name = f"herald_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = server_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await asyncio.wait_for(admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'), 30)
        finally:
            await admin.close()


async def postgres_version(server_url: str) -> str:
    """The server's ``server_version``."""
    conn = await asyncpg.connect(server_url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
