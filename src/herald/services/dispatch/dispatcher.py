"""Sending an event's records to its targets, and telling what failed and why.

Used by the consumer (every target of a fresh event) and by the retrier (the targets an
earlier try still owes). A target's records are all sent or the target failed: either
*for now* (webhooks unknown, a topic not answering: retried later) or *for good* (the
data cannot make the route's jobs: dead-lettered at once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaProducer

from herald.runtime.kafka_batches import BatchSender
from herald.services.dispatch import fanout
from herald.services.dispatch.fanout import ROUTE_PREFIX, WEBHOOKS, Consumed, Outgoing
from herald.services.dispatch.route_table import RouteTable
from herald.services.dispatch.routes import TargetError
from herald.services.dispatch.subscriptions import SubscriptionCache, WebhooksUnavailable

log = structlog.get_logger("herald.dispatch")


@dataclass
class Outcome:
    """What became of one event's targets."""

    sent: dict[str, int] = field(default_factory=dict)  # target → records acknowledged
    failed: dict[str, str] = field(default_factory=dict)  # target → reason (retry)
    dead: dict[str, str] = field(default_factory=dict)  # target → reason (give up)


@dataclass
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
    ) -> None:
        self._producer = producer
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
        planned = [self._plan(consumed, targets) for consumed, targets in events]
        await self._send(planned)
        return [p.outcome for p in planned]

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
            plan.outcome.sent[target] = 0
            plan.sends += [(target, r) for r in records]
        return plan

    def _records(self, consumed: Consumed, target: str) -> list[Outgoing]:
        if target == WEBHOOKS:
            hooks = self._subscriptions.match(consumed.binary.attributes["type"])
            return fanout.deliveries(consumed, hooks, self._deliveries_topic)
        route = self._routes.get(target.removeprefix(ROUTE_PREFIX))
        if route is None or route.route.disabled:
            return []  # deleted or disabled since: nothing is owed any more
        return fanout.notifications(consumed, route)

    async def _send(self, planned: list[_Planned]) -> None:
        """Sends every record, in order, as one batch per partition; a target whose
        records were not all acknowledged (within the send timeout) failed."""
        producer = self._producer()
        owners = [(plan, target) for plan in planned for target, _ in plan.sends]
        records = [record for plan in planned for _, record in plan.sends]
        if producer is None:
            errors: list[BaseException | None] = [ConnectionError("Kafka producer not connected")]
            errors *= len(records)
        else:
            errors = await self._sender.send(producer, records, self._send_timeout)
        for (plan, target), error in zip(owners, errors, strict=True):
            if error is not None:
                plan.outcome.failed.setdefault(target, f"not sent: {_describe(error)}")
            elif target not in plan.outcome.failed:
                plan.outcome.sent[target] += 1
        for plan in planned:
            for target in plan.outcome.failed:
                plan.outcome.sent.pop(target, None)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".removesuffix(": ") if str(exc) else type(exc).__name__
