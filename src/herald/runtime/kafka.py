"""aiokafka factories: security settings, the idempotent producer, consumers, topics."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

from herald.runtime.kafka_first import TopicFirst
from herald.runtime.kafka_producer import Producer, abandoned, broken
from herald.runtime.rounds import FINISH_SECONDS
from herald.runtime.settings import KafkaSettings, StartError

log = structlog.get_logger("herald.kafka")
C = TypeVar("C", AIOKafkaProducer, AIOKafkaConsumer)
_CONNECT_FAILED = "Unable connect to"  # aiokafka's line for a failed bootstrap connect


class _ConnectReasons(logging.Handler):
    """Why a broker could not be reached (refused, wrong credentials, TLS) is said only
    in aiokafka's ERROR line per attempt, which services do not write (noise): the
    latest few are kept here for ``kafka.unreachable``."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: collections.deque[tuple[float, str]] = collections.deque(maxlen=8)

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith(_CONNECT_FAILED):
            self.seen.append((record.created, record.getMessage()))

    def since(self, began: float) -> str | None:
        """The latest reason given at or after ``began`` (``time.time()``), else None."""
        if self.seen and self.seen[-1][0] >= began:
            return self.seen[-1][1]
        return None


connect_reasons = _ConnectReasons()
logging.getLogger("aiokafka").addHandler(connect_reasons)
COMMIT_WAIT_SECONDS = 5.0  # for an offset commit in flight when a consumer stops
STOP_BROKEN_SECONDS = 10.0  # for a broken producer to finish what it still can


def connection_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client for one cluster."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context: ssl.SSLContext = create_ssl_context(cafile=settings.ssl_cafile)
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password
    return options


PRODUCER_REQUEST_TIMEOUT_SECONDS = 15.0
# How long a relay's workers may take to stop: a round's grace (rounds.FINISH_SECONDS),
# then, cut short, abandoning its producer (waiting out the requests on the wire).
RELAY_STOP_SECONDS = FINISH_SECONDS + PRODUCER_REQUEST_TIMEOUT_SECONDS + 2.0


def make_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer (acks=all, no duplicates from its own retries) that
    notices when it is broken (:mod:`herald.runtime.kafka_producer`)."""
    options: dict[str, Any] = {
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 2,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": int(PRODUCER_REQUEST_TIMEOUT_SECONDS * 1000),
        "compression_type": None,
    }
    options.update(overrides)
    return Producer(**connection_options(settings), **options)


def make_consumer(
    settings: KafkaSettings, *topics: str, group_id: str, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer in ``group_id`` that commits offsets only when told to."""
    options: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **connection_options(settings), **options)


_DEFAULT_REPLICATION = "default.replication.factor"
GUESSED_REPLICATION = 3  # at most, where the cluster's default cannot be read


async def cluster_replication(admin: AIOKafkaAdminClient) -> int:
    """The replication factor Kafka gives a topic created without one: a broker's
    ``default.replication.factor``. Where that cannot be read (an ACL without
    DescribeConfigs on the cluster), the number of brokers up to 3, logged
    (``kafka.replication_guessed``)."""
    brokers = (await admin.describe_cluster())["brokers"]
    broker = str(min(b["node_id"] for b in brokers))
    reason = "no answer"
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, broker, {_DEFAULT_REPLICATION: None})]
        )
    except KafkaError as exc:
        reason = repr(exc)
    else:
        for response in responses:
            for code, message, _type, _name, entries in response.resources:
                if code:
                    reason = f"{errors.for_code(code).__name__}: {message}"
                    continue
                for name, value, *_ in entries:
                    if name == _DEFAULT_REPLICATION and value and value.isdigit():
                        if int(value) == 1 and len(brokers) > 1:
                            log.warning(
                                "kafka.replication_one",
                                brokers=len(brokers),
                                detail="the cluster's default.replication.factor is 1: "
                                "topics Herald creates have one replica (set "
                                "KAFKA_TOPIC_REPLICATION_FACTOR)",
                            )
                        return int(value)
    guessed = min(GUESSED_REPLICATION, len(brokers))
    log.warning(
        "kafka.replication_guessed", replication=guessed, brokers=len(brokers), error=reason
    )
    return guessed


async def ensure_topics(settings: KafkaSettings, names: Iterable[str], partitions: int = 6) -> None:
    """Creates the topics that do not exist yet; existing ones are left as they are.

    Each gets ``settings.topic_replication_factor`` replicas, 0 the cluster's default
    (:func:`cluster_replication`). A topic Kafka refuses to create (an invalid name, too
    many partitions or replicas, not authorized, …) is logged with Kafka's reason and
    stops the start (:class:`TopicsNotCreated`): the service needs it and it does not
    exist. Kafka being unreachable raises its own error, which the caller may choose to
    outlive.
    """
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = list(dict.fromkeys(n for n in names if n not in existing))
        if not missing:
            return
        replication = settings.topic_replication_factor or await cluster_replication(admin)
        response = await admin.create_topics(
            [
                NewTopic(n, num_partitions=partitions, replication_factor=replication)
                for n in missing
            ]
        )
    finally:
        await admin.close()
    refused: dict[str, str] = {}
    for topic, code, *message in response.topic_errors:
        error = errors.for_code(code)
        if code == 0 or error is TopicAlreadyExistsError:  # another replica won the race
            continue
        reason = f"{error.__name__}: {message[0] if message and message[0] else error.description}"
        log.error(
            "kafka.topic_not_created",
            topic=topic,
            partitions=partitions,
            replication=replication,
            error=reason,
        )
        refused[topic] = reason
    if refused:
        raise TopicsNotCreated(refused)
    log.info("kafka.topics_created", topics=missing, partitions=partitions, replication=replication)


class TopicsNotCreated(StartError):
    """Kafka refused to create topics the service needs (see :func:`ensure_topics`)."""

    def __init__(self, refused: dict[str, str]) -> None:
        super().__init__(
            "Kafka refused to create "
            + "; ".join(f"topic {topic!r}: {reason}" for topic, reason in refused.items())
        )
        self.refused = refused


async def ensure_topics_at_start(
    settings: KafkaSettings,
    names: Sequence[str],
    service: str,
    partitions: Mapping[str, int] | None = None,
) -> None:
    """:func:`ensure_topics` at a service's start, with 6 partitions unless
    ``partitions`` says otherwise for a topic. Kafka unreachable is logged
    (``kafka.topics_unchecked``, naming the service) and the start goes on (the
    service's Kafka clients wait for it); a topic Kafka refuses
    (:class:`TopicsNotCreated`, a SystemExit) stops it."""
    counts = partitions or {}
    by_count: dict[int, list[str]] = collections.defaultdict(list)
    for name in names:
        by_count[counts.get(name, 6)].append(name)
    try:
        for count, topics in by_count.items():
            await ensure_topics(settings, topics, partitions=count)
    except Exception as exc:
        log.warning("kafka.topics_unchecked", service=service, error=repr(exc))


async def start_when_reachable(make: Callable[[], C], what: str, max_backoff: float = 5.0) -> C:
    """Starts a client made by ``make``, retrying while Kafka is unreachable (a failed
    aiokafka client cannot be started again, so each try makes a new one)."""
    delay = 0.5
    while True:
        began = time.time()
        try:
            # Made each try: a client reads the TLS files as it is made (KAFKA_SSL_CAFILE
            # being rewritten, or unreadable for a while, is retried like Kafka away;
            # raised from a replacement started in the background, it was lost, and the
            # service stayed without a producer for good).
            client = make()
        except Exception as exc:
            log.warning("kafka.client_not_made", client=what, error=repr(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(max_backoff, delay * 2)
            continue
        try:
            await client.start()
        except asyncio.CancelledError:
            # Stopped while starting: a consumer's group coordinator may already run
            # (start waits for the group's assignment), and would stay in the group,
            # holding partitions nobody consumes, for as long as the process lives.
            await asyncio.shield(client.stop())
            raise
        except Exception as exc:  # any bootstrap failure: retry
            await client.stop()
            log.warning(
                "kafka.unreachable",
                client=what,
                error=repr(exc),
                reason=connect_reasons.since(began),  # e.g. wrong credentials
                retry_in=delay,
            )
            await asyncio.sleep(delay)
            delay = min(max_backoff, delay * 2)
        else:
            return client


async def check(producer: AIOKafkaProducer) -> None:
    """Raises unless a known broker answers a metadata request (health checks).

    The request names no topics: a metadata request for *all* topics (what
    ``fetch_all_metadata`` sends) costs the broker and us in proportion to the
    cluster's topic count, every few seconds, in every process.
    """
    client = producer.client
    last: BaseException | None = None
    for broker in client.cluster.brokers():
        try:
            reply = await asyncio.wait_for(client.send(broker.nodeId, MetadataRequest([])), 3)
        except (KafkaError, OSError, TimeoutError) as exc:
            last = exc
            continue
        if reply.brokers:
            return
    raise ConnectionError(f"no Kafka broker answered: {last!r}")


async def commit_after(
    consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[Any, Any]]
) -> bool:
    """Commits the offsets just past ``records``; False when the partitions moved
    meanwhile (a rebalance): their new owner repeats those records, which every
    consumer of Herald's makes harmless (deterministic ids, recognised repeats)."""
    offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    for r in records:
        offsets[TopicPartition(r.topic, r.partition)] = OffsetAndMetadata(r.offset + 1, "")
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError, KafkaError) as exc:
        log.warning("kafka.commit_failed", error=repr(exc))
        return False
    return True


Records = list[ConsumerRecord[bytes, bytes]]


def records_of(batch: Mapping[TopicPartition, Records]) -> Records:
    """A fetch's records, each partition's in order. A header Kafka holds without a
    value (null: another client's producer may write one) is left out, as if not given:
    every reader takes a header's value as bytes, and a null one crashed a consumer on
    the same record after each restart."""
    records = [r for part in batch.values() for r in part]
    for n, r in enumerate(records):
        if None in (value for _, value in r.headers):
            headers = tuple((name, value) for name, value in r.headers if value is not None)
            records[n] = dataclasses.replace(r, headers=headers)
    return records


async def consume_overlapped(
    make_consumer: Callable[[], AIOKafkaConsumer],
    what: str,
    start: Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[Awaitable[object]]],
    max_records: int,
    depth: int = 1,
    drain_seconds: float = 8.0,
) -> None:
    """Like :func:`consume`, with batches' waits overlapping the next batches' work.

    ``start(records)`` does a batch's work up to handing its records to a producer and
    returns what finishes it (waiting for the acknowledgements, settling failures).
    While up to ``depth`` batches finish, the next is fetched and started; a batch's
    offsets are committed once it and every batch before it have finished, in order,
    so a crash repeats at most ``depth + 1`` batches. A stop lets the batches in flight
    finish and commits past them, for at most ``drain_seconds``.
    """
    consumer = await start_when_reachable(make_consumer, what)
    pending: collections.deque[tuple[list[ConsumerRecord[bytes, bytes]], asyncio.Task[object]]]
    pending = collections.deque()
    committing: asyncio.Task[bool] | None = None
    try:
        while True:
            # With batches finishing, take only what is already fetched: their commits
            # must not wait a whole poll for records that are not there.
            batch = await consumer.getmany(
                timeout_ms=0 if pending else 1000, max_records=max_records
            )
            records = records_of(batch)
            # A stop (cancellation) waits for what is under way here: a batch half
            # handed to the producer, or cut off before its commit, would be made again
            # by the next owner of its partitions. The finally drains the rest.
            if records:
                starting = asyncio.ensure_future(start(records))
                try:
                    finishing = await asyncio.shield(starting)
                except asyncio.CancelledError:
                    pending.append((records, asyncio.ensure_future(await starting)))
                    raise
                pending.append((records, asyncio.ensure_future(finishing)))
            # Finish the oldest while too many are in flight, those already done, and
            # everything when nothing new came.
            while pending and (len(pending) > depth or not records or pending[0][1].done()):
                committing = await _commit_oldest(consumer, pending, committing)
    finally:
        await _finish_pending(consumer, pending, committing, drain_seconds)
        await consumer.stop()


async def _commit_oldest(
    consumer: AIOKafkaConsumer,
    pending: collections.deque[tuple[list[ConsumerRecord[bytes, bytes]], asyncio.Task[object]]],
    committing: asyncio.Task[bool] | None,
    stopping: bool = False,
) -> asyncio.Task[bool]:
    """Waits for the oldest pending batch and for the commit before it, then starts its
    own commit, which it returns: commits go out in order, one at a time, each without
    holding up the next batch (a broker round trip per batch otherwise). While running,
    a stop (cancellation) waits for neither but cuts neither short, and the batch stays
    pending for the drain; ``stopping`` (the drain itself): both are cut short."""
    done, task = pending[0]
    for waited in (task, committing):
        if waited is not None:
            await (waited if stopping else asyncio.shield(waited))
    pending.popleft()
    return asyncio.ensure_future(commit_after(consumer, done))


async def _finish_pending(
    consumer: AIOKafkaConsumer,
    pending: collections.deque[tuple[list[ConsumerRecord[bytes, bytes]], asyncio.Task[object]]],
    committing: asyncio.Task[bool] | None,
    seconds: float,
) -> None:
    """On the way out: batches already handed to the producer finish and their offsets
    are committed, in order, within ``seconds``; cut off, the next owner of the
    partitions would make their records again. What is left then is cancelled."""
    try:
        async with asyncio.timeout(seconds):
            while pending:
                committing = await _commit_oldest(consumer, pending, committing, stopping=True)
    except Exception as exc:  # too slow, or a batch failed: the rest is repeated later
        log.warning("kafka.stop_unfinished", batches=len(pending), error=repr(exc))
    for _, task in pending:
        task.cancel()
    await asyncio.gather(*(task for _, task in pending), return_exceptions=True)
    if committing is not None:
        await _last_commit(committing)


async def replaced_if_broken(
    producer: AIOKafkaProducer, make: Callable[[], AIOKafkaProducer], what: str
) -> AIOKafkaProducer:
    """``producer``, or a fresh one started in its place if it is broken (see
    :mod:`herald.runtime.kafka_producer`)."""
    reason = broken(producer)
    if reason is None:
        return producer
    log.error("kafka.producer_replaced", client=what, error=repr(reason))
    await abandoned(producer)  # its sender stopped once, not cancelled again by stop()
    with contextlib.suppress(Exception):  # it can deliver nothing: don't wait for long
        await asyncio.wait_for(producer.stop(), STOP_BROKEN_SECONDS)
    return await start_when_reachable(make, what)


class LateProducer:
    """A producer started by a worker once Kafka answers (so the service starts, and
    reports NOT_SERVING, while Kafka is down). :meth:`get` is None until then, and
    while a producer found broken is being replaced."""

    def __init__(self, make: Callable[[], AIOKafkaProducer], what: str) -> None:
        self._make = make
        self._what = what
        self._producer: AIOKafkaProducer | None = None
        self._replacing: asyncio.Task[None] | None = None

    def get(self) -> AIOKafkaProducer | None:
        producer = self._producer
        if producer is not None and broken(producer) is not None:
            self._producer = None
            self._replacing = asyncio.ensure_future(self._replace(producer))
            return None
        return producer

    async def _replace(self, producer: AIOKafkaProducer) -> None:
        self._producer = await replaced_if_broken(producer, self._make, self._what)

    async def start(self) -> None:
        """A worker: returns once the producer has started."""
        self._producer = await start_when_reachable(self._make, self._what)

    async def check(self) -> None:
        """The health check: raises unless the producer is started, not broken, and
        Kafka answers."""
        producer = self.get()
        if producer is None:
            raise ConnectionError("Kafka producer not connected")
        await check(producer)

    async def stop(self) -> None:
        if self._replacing is not None:
            self._replacing.cancel()
            await asyncio.gather(self._replacing, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()


async def consume(
    make_consumer: Callable[[], AIOKafkaConsumer],
    what: str,
    take: Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[object]],
    max_records: int,
    budget: Callable[[], Awaitable[int]] | None = None,
    commit_every: float = 0.0,
    first: TopicFirst | None = None,
) -> None:
    """Consumes until cancelled: each batch goes to ``take``, and the offsets past it
    are committed once ``take`` returns (its effect durable).

    ``budget``, when given, is awaited before each fetch and caps its size: a consumer
    whose downstream is busy leaves the backlog on Kafka rather than taking it in.

    ``commit_every`` (seconds) lets offsets of taken batches wait for one commit: at most
    that often, whenever a poll finds nothing new, and on stop. A consumer taking many
    small batches then makes one commit (a broker round trip and its CPU) instead of
    one per batch; a crash or a rebalance repeats at most that much, which every
    consumer of Herald's makes harmless (deterministic ids, recognised repeats).

    ``first``: a topic whose backlog is read before the others' (runtime.kafka_first).
    """
    if first is not None:
        make_consumer = functools.partial(_attached, first, make_consumer)
    consumer = await start_when_reachable(make_consumer, what)
    owed: dict[tuple[str, int], ConsumerRecord[bytes, bytes]] = {}  # the last taken
    committed_at = asyncio.get_running_loop().time()
    try:
        while True:
            limit = max_records if budget is None else max(1, min(max_records, await budget()))
            # Offsets owed: poll no longer than until they are due.
            wait_ms = min(1000, max(1, int(commit_every * 1000))) if owed else 1000
            if first is not None:
                await first.before_fetch()
            batch = await consumer.getmany(timeout_ms=wait_ms, max_records=limit)
            records = records_of(batch)
            if first is not None:
                first.fetched(len(records))
            if records:
                await take(records)
                for r in records:
                    owed[(r.topic, r.partition)] = r
            now = asyncio.get_running_loop().time()
            if owed and (not records or now - committed_at >= commit_every):
                await commit_after(consumer, list(owed.values()))
                owed.clear()
                committed_at = now
    finally:
        if owed:  # taken, and durable: committed on the way out too
            await _last_commit(commit_after(consumer, list(owed.values())))
        await consumer.stop()


def _attached(first: TopicFirst, make: Callable[[], AIOKafkaConsumer]) -> AIOKafkaConsumer:
    return first.attach(make())


async def _last_commit(commit: Awaitable[bool]) -> None:
    """A stopping consumer's last commit, given COMMIT_WAIT_SECONDS. If it fails, the
    records are consumed again later, which Herald's consumers make harmless."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(commit, COMMIT_WAIT_SECONDS)
