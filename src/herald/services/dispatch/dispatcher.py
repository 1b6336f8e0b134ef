"""Sending an event's records to its targets, and telling what failed and why.

Used by the consumer (every target of a fresh event) and by the retrier (the targets an
earlier try still owes). A target's records are all sent or the target failed: either
*for now* (webhooks unknown, a topic not answering: retried later) or *for good* (the
data cannot make the route's jobs, or Kafka refuses one of them as larger than its
topic takes: dead-lettered at once, as no retry would change it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from herald.runtime.kafka_batches import REFUSED_FOR_GOOD, BatchSender, Sending
from herald.runtime.publisher import TENANT_ATTRIBUTE
from herald.services.dispatch import fanout
from herald.services.dispatch.fanout import ROUTE_PREFIX, WEBHOOKS, Consumed, Outgoing
from herald.services.dispatch.route_table import RouteTable
from herald.services.dispatch.routes import TargetError, reserved_topic
from herald.services.dispatch.subscriptions import SubscriptionCache, WebhooksUnavailable

log = structlog.get_logger("herald.dispatch")


@dataclass(slots=True)
class Outcome:
    """What became of one event's targets."""

    sent: dict[str, int] = field(default_factory=dict)  # target → records acknowledged
    failed: dict[str, str] = field(default_factory=dict)  # target → reason (retry)
    dead: dict[str, str] = field(default_factory=dict)  # target → reason (give up)


@dataclass(slots=True)
class _Planned:
    consumed: Consumed
    outcome: Outcome
    sends: list[tuple[str, Outgoing]] = field(default_factory=list)


class Dispatcher:
    """See the module docstring."""

    def __init__(
        self,
        producer: Callable[[], AIOKafkaProducer | None],
        routes: RouteTable,
        subscriptions: SubscriptionCache,
        deliveries_topic: str,
        send_timeout: float = 10.0,
        webhooks: bool = True,
        reserved_topics: Collection[str] = (),
    ) -> None:
        self._producer = producer
        self._reserved = reserved_topics
        self._routes = routes
        self._subscriptions = subscriptions
        self._deliveries_topic = deliveries_topic
        self._send_timeout = send_timeout
        self._webhooks = webhooks
        self._sender = BatchSender()

    def targets_of(self, consumed: Consumed) -> list[str]:
        """Every target of a fresh event: webhooks, and each route it matches."""
        matching = [ROUTE_PREFIX + r.id for r in self._routes.matching(consumed.event)]
        return [WEBHOOKS, *matching] if self._webhooks else matching

    async def dispatch(self, events: Sequence[tuple[Consumed, Iterable[str]]]) -> list[Outcome]:
        """Sends the records of every (event, targets), in order; one outcome each."""
        return await (await self.start(events))

    async def start(
        self, events: Sequence[tuple[Consumed, Iterable[str]]]
    ) -> Coroutine[Any, Any, list[Outcome]]:
        """Hands the records of every (event, targets) to the producer, in order, and
        returns what waits for their acknowledgements: one outcome per event. Records
        started later go after these on every partition."""
        planned = [self._plan(consumed, targets) for consumed, targets in events]
        sending = await self._start_send(planned)
        return self._finish(planned, sending)

    def _plan(self, consumed: Consumed, targets: Iterable[str]) -> _Planned:
        plan = _Planned(consumed, Outcome())
        for target in targets:
            try:
                records = self._records(consumed, target)
            except WebhooksUnavailable as exc:
                plan.outcome.failed[target] = str(exc)
                continue
            except TargetError as exc:
                plan.outcome.dead[target] = str(exc)
                continue
            except Exception as exc:  # unforeseen: this event's problem, not the consumer's
                log.exception("dispatch.target_crashed", target=target)
                plan.outcome.dead[target] = f"processing it failed: {type(exc).__name__}: {exc}"
                continue
            plan.outcome.sent[target] = 0
            plan.sends += [(target, r) for r in records]
        return plan

    def _records(self, consumed: Consumed, target: str) -> list[Outgoing]:
        if target == WEBHOOKS:
            attributes = consumed.binary.attributes
            hooks = self._subscriptions.match(attributes["type"], attributes.get(TENANT_ATTRIBUTE))
            return fanout.deliveries(consumed, hooks, self._deliveries_topic)
        route = self._routes.get(target.removeprefix(ROUTE_PREFIX))
        if route is None or route.disabled:
            return []  # deleted or disabled since: nothing is owed any more
        records = fanout.notifications(consumed, route)
        for record in records:  # a channel taken from the event names the topic
            if reason := reserved_topic(record.topic, self._reserved):
                raise TargetError(reason)
        return records

    async def _start_send(self, planned: list[_Planned]) -> Sending | None:
        """Every record, in order, as one batch per partition; None without a producer."""
        producer = self._producer()
        if producer is None:
            return None
        return await self._sender.start(
            producer, [record for plan in planned for _, record in plan.sends]
        )

    async def _finish(self, planned: list[_Planned], sending: Sending | None) -> list[Outcome]:
        """A target whose records were not all acknowledged (within the send timeout)
        failed."""
        owners = [(plan, target) for plan in planned for target, _ in plan.sends]
        if sending is None:
            errors: list[BaseException | None] = [ConnectionError("Kafka producer not connected")]
            errors *= len(owners)
        else:
            errors = await sending.wait(self._send_timeout)
            await self._find_refused([r for plan in planned for _, r in plan.sends], errors)
        for (plan, target), error in zip(owners, errors, strict=True):
            if isinstance(error, REFUSED_FOR_GOOD):
                plan.outcome.dead.setdefault(target, f"refused by Kafka: {_describe(error)}")
            elif error is not None:
                plan.outcome.failed.setdefault(target, f"not sent: {_describe(error)}")
            elif target not in plan.outcome.failed:
                plan.outcome.sent[target] += 1
        for plan in planned:
            for target in plan.outcome.dead:  # sending it again would not help
                plan.outcome.failed.pop(target, None)
            for target in [*plan.outcome.failed, *plan.outcome.dead]:
                plan.outcome.sent.pop(target, None)
            done = plan.outcome
            if plan.consumed.span is not None:
                fanout.end_span(plan.consumed, sum(done.sent.values()), done.failed, done.dead)
        return [p.outcome for p in planned]

    async def _find_refused(
        self, records: list[Outgoing], errors: list[BaseException | None]
    ) -> None:
        """Each record of a batch refused as too large is sent again alone, to tell the
        one Kafka refuses from its neighbours (BatchSender.send_alone)."""
        refused = [i for i, error in enumerate(errors) if isinstance(error, REFUSED_FOR_GOOD)]
        if not refused:
            return
        producer = self._producer()
        if producer is not None:
            await self._sender.send_alone(producer, records, refused, errors, self._send_timeout)
            return
        for i in refused:  # not known which one: all retried later
            errors[i] = ConnectionError("Kafka producer not connected")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".removesuffix(": ") if str(exc) else type(exc).__name__
