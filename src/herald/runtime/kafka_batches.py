"""Sending many records as one Kafka batch per partition.

aiokafka's per-record ``send()`` costs several times the CPU of appending records to a
batch and handing the batch over with ``send_batch()``. Records are placed by the
producer's default partitioner (murmur2, as Java's: same key, same partition) and keep
their order within a partition, so a key's order holds. Used by ingest's relay and by
dispatch.

Kafka judges a batch's size as a whole, so a record too large for the topic gets its
whole batch refused; :meth:`BatchSender.send_finding_refused` tells which records
Kafka refuses for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

from herald.runtime.kafka_producer import abandon
from herald.runtime.murmur2 import partition_of

log = structlog.get_logger("herald.kafka")

# Kafka's answers that no retry changes.
REFUSED_FOR_GOOD = (MessageSizeTooLargeError, RecordTooLargeError)
# How long to wait for a topic's partitions (known topics answer from the producer's
# metadata at once), and for how long a topic that could not be learnt fails its records
# at once: the producer waits up to its request timeout (tens of seconds) for a topic
# that does not exist, and every round of a relay holding one of its records waited
# with it, the records of every other topic too.
METADATA_WAIT_SECONDS = 3.0
UNKNOWN_TOPIC_SECONDS = 10.0


class OutRecord(NamedTuple):
    """One record to send."""

    topic: str
    key: bytes
    value: bytes
    headers: Sequence[tuple[str, bytes]]


class Sending:
    """Records handed to ``producer``; :meth:`wait` tells which Kafka acknowledged."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        errors: list[BaseException | None],
        sends: list[tuple[list[int], asyncio.Future[Any]]],
    ) -> None:
        self._producer = producer
        self._errors = errors
        self._sends = sends

    async def wait(self, ack_timeout: float) -> list[BaseException | None]:
        """For each record, the error if it was not acknowledged within ``ack_timeout``
        seconds (or could not be sent at all), else None. Records not acknowledged in
        time are given up for good: the producer is abandoned (it sends nothing more,
        and its owner replaces it) before this returns, so none of them lands later,
        after what the caller sends again."""
        errors, sends = self._errors, self._sends
        if sends:
            _done, late = await asyncio.wait([f for _, f in sends], timeout=ack_timeout)
            timed_out = TimeoutError(f"not acknowledged within {ack_timeout:g} s")
            if late:
                log.error(
                    "kafka.acks_late",
                    records=sum(len(m) for m, f in sends if f in late),
                    seconds=ack_timeout,
                    detail="the producer is abandoned (it sends nothing more) and replaced; "
                    "the records are sent again",
                )
                await abandon(self._producer, timed_out)
            for members, future in sends:
                error = timed_out if future in late else future.exception()
                if error is not None:
                    for i in members:
                        errors[i] = error
        return errors


class BatchSender:
    """See the module docstring."""

    def __init__(self) -> None:
        self._unknown: dict[str, tuple[BaseException, float]] = {}  # topic → (why, until)

    def unknown_topics(self) -> list[str]:
        """The topics whose records fail at once now (their partitions could not be
        learnt a moment ago): a caller may leave their records out meanwhile."""
        now = asyncio.get_running_loop().time()
        return [topic for topic, (_, until) in self._unknown.items() if now < until]

    async def send(
        self, producer: AIOKafkaProducer, records: Sequence[OutRecord], ack_timeout: float
    ) -> list[BaseException | None]:
        """Sends ``records``; for each, the error if Kafka did not acknowledge it within
        ``ack_timeout`` seconds (or it could not be sent at all), else None."""
        sending = await self.start(producer, records)
        return await sending.wait(ack_timeout)

    async def send_finding_refused(
        self, producer: AIOKafkaProducer, records: Sequence[OutRecord], ack_timeout: float
    ) -> list[BaseException | None]:
        """As :meth:`send`; then, from the first record of a batch refused as too large
        on, every record is sent again alone, in order. That tells which ones Kafka
        refuses for good (an error in REFUSED_FOR_GOOD), and the last copy of each key's
        records stays in order.

        For the relays, whose rows another relay may send once they let them go: a
        caller cancelled while its records are out (a stop cutting its round short,
        Kafka not answering) abandons ``producer`` first (what it holds fails; the
        requests on the wire are waited for, within its request timeout), so its copies
        never land after those (a key's records would go back in time on the topic)."""
        try:
            errors = await self.send(producer, records, ack_timeout)
            refused = [i for i, e in enumerate(errors) if isinstance(e, REFUSED_FOR_GOOD)]
            if refused:
                rest = range(refused[0], len(records))
                await self.send_alone(producer, records, rest, errors, ack_timeout)
        except asyncio.CancelledError:
            log.warning("relay.round_cut_short", records=len(records))
            await abandon(producer, TimeoutError("the relay's round was cut short by a stop"))
            raise
        return errors

    async def send_alone(
        self,
        producer: AIOKafkaProducer,
        records: Sequence[OutRecord],
        which: Iterable[int],
        errors: list[BaseException | None],
        ack_timeout: float,
    ) -> None:
        """Sends ``records[i]`` for each ``i`` of ``which`` again, alone (a batch of its
        own), in that order; ``errors[i]`` becomes its outcome. Kafka judges a batch's
        size as a whole: this tells the record it refuses from its neighbours."""
        for i in which:
            [errors[i]] = await self.send(producer, [records[i]], ack_timeout)

    async def start(self, producer: AIOKafkaProducer, records: Sequence[OutRecord]) -> Sending:
        """Hands ``records`` to the producer (in order) without waiting for Kafka's
        acknowledgements: records started later on the same partition go after them."""
        errors: list[BaseException | None] = [None] * len(records)
        batches = await self._batches(producer, records, errors)
        sends: list[tuple[list[int], asyncio.Future[Any]]] = []
        for (topic, partition), (batch, members) in batches:
            try:
                future = await producer.send_batch(batch, topic, partition=partition)
            except Exception as exc:
                for i in members:
                    errors[i] = exc
            else:
                sends.append((members, future))
        return Sending(producer, errors, sends)

    async def _batches(
        self,
        producer: AIOKafkaProducer,
        records: Sequence[OutRecord],
        errors: list[BaseException | None],
    ) -> list[tuple[tuple[str, int], tuple[Any, list[int]]]]:
        """Records grouped into batches by (topic, partition), in order. A topic whose
        partitions cannot be learnt, or a record too big for a batch, fails alone."""
        partitions: dict[str, list[int] | BaseException] = {}
        open_batches: dict[tuple[str, int], tuple[Any, list[int]]] = {}
        out: list[tuple[tuple[str, int], tuple[Any, list[int]]]] = []
        for i, r in enumerate(records):
            known = partitions.get(r.topic)
            if known is None:
                known = partitions[r.topic] = await self._partitions(producer, r.topic)
            if isinstance(known, BaseException):
                errors[i] = known
                continue
            target = (r.topic, partition_of(r.key, known))
            current = open_batches.get(target)
            if current is not None and _append(current[0], r):
                current[1].append(i)
                continue
            if current is not None:
                out.append((target, open_batches.pop(target)))  # full: close it
            fresh: tuple[Any, list[int]] = (producer.create_batch(), [])
            if not _append(fresh[0], r):
                errors[i] = ValueError(f"a record of {len(r.value)} bytes fits no batch")
                continue
            fresh[1].append(i)
            open_batches[target] = fresh
        out.extend(open_batches.items())
        return out

    async def _partitions(
        self, producer: AIOKafkaProducer, topic: str
    ) -> list[int] | BaseException:
        """The topic's partitions, or why they cannot be learnt (remembered for
        UNKNOWN_TOPIC_SECONDS: meanwhile its records fail at once)."""
        now = asyncio.get_running_loop().time()
        unknown = self._unknown.get(topic)
        if unknown is not None and now < unknown[1]:
            return unknown[0]
        try:
            async with asyncio.timeout(METADATA_WAIT_SECONDS):
                found = sorted(await producer.partitions_for(topic))
        except Exception as exc:
            why = (
                TimeoutError(f"no partitions of topic {topic!r} within {METADATA_WAIT_SECONDS:g} s")
                if isinstance(exc, TimeoutError)
                else exc
            )
            self._unknown[topic] = (why, now + UNKNOWN_TOPIC_SECONDS)
            log.warning(
                "kafka.topic_unknown",
                topic=topic,
                error=repr(why),
                detail=f"its records wait; asked again in {UNKNOWN_TOPIC_SECONDS:g} s",
            )
            return why
        self._unknown.pop(topic, None)
        return found


def _append(batch: Any, r: OutRecord) -> bool:
    return batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers) is not None


def rows_to_mark(keys: Sequence[bytes | str], acked: Sequence[bool]) -> list[int]:
    """Indexes of rows that may be marked sent, given which Kafka acknowledged.

    Rows are in outbox order. Once a row of a key failed, later rows of that key stay
    unmarked even if acknowledged: they are sent again after it, so the last copy on
    Kafka keeps the key's order.
    """
    blocked: set[bytes | str] = set()
    out = []
    for i, (key, ok) in enumerate(zip(keys, acked, strict=True)):
        if not ok:
            blocked.add(key)
        elif key not in blocked:
            out.append(i)
    return out
