"""One ingest scenario's surroundings: fresh database and topic, the ingest
process, a watcher on the topic; all torn down afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench import infra
from bench.ingest_proc import IngestProcess, ingest_process
from bench.watcher import TopicWatcher


@dataclass
class Session:
    """What a scenario works with."""

    ingest: IngestProcess
    watcher: TopicWatcher
    topic: str


@contextlib.asynccontextmanager
async def session(
    where: infra.Infra, label: str, partitions: int, extra_env: Mapping[str, str]
) -> AsyncIterator[Session]:
    """Fresh database and topic, ingest SERVING on them, a watcher reading the topic.

    ``BENCH_PROFILE=DIR`` in ``extra_env`` runs ingest under pyinstrument and saves
    ``DIR/<label>.pyisession`` (see :func:`bench.ingest_proc.ingest_process`).
    """
    topic = infra.new_topic_name(label)
    settings = where.kafka_settings()
    env = {"EVENTS_TOPIC_PARTITIONS": str(partitions), **extra_env}
    profile_dir = env.pop("BENCH_PROFILE", "")
    profile_to = Path(profile_dir) / f"{label}.pyisession" if profile_dir else None
    try:
        async with (
            infra.fresh_database(where.database_url) as database_url,
            ingest_process(
                database_url, where.bootstrap_servers, topic, env, profile_to=profile_to
            ) as ingest,
        ):
            watcher = TopicWatcher(settings, topic)
            await watcher.start()
            try:
                yield Session(ingest, watcher, topic)
            finally:
                await watcher.stop()
    finally:
        await infra.delete_topic(settings, topic)
