"""IngestService over gRPC: translates proto ↔ domain; errors become statuses."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import asyncpg
import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, status_pb2
from herald.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from herald.runtime import cloudevents_kafka as binding
from herald.runtime import event_spans
from herald.runtime.auth import TENANT, callers
from herald.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from herald.runtime.ids import new_request_id
from herald.runtime.metrics import EVENTS_ACCEPTED, EVENTS_REJECTED
from herald.runtime.pagination import page_of
from herald.runtime.tracing import current_traceparent
from herald.services.ingest import envelope, validation
from herald.services.ingest.catalog import MAX_SCHEMA_BYTES, EventTypeDef, check_definition
from herald.services.ingest.catalog_store import TYPE_ORDER, CatalogStore
from herald.services.ingest.dedup import Accepted, Outcome
from herald.services.ingest.event import Event
from herald.services.ingest.outbox import IdempotencyKey, PendingEvent, make_pending
from herald.services.ingest.publish_limits import PublishLimits
from herald.services.ingest.writer import EventWriter

log = structlog.get_logger("herald.ingest")

# An idempotency key's scope includes the endpoint: a batch item's derived "K:0" is
# not the Publish key "K:0".
PUBLISH_ENDPOINT = "/herald.ingest.v1.IngestService/Publish"
PUBLISH_BATCH_ENDPOINT = "/herald.ingest.v1.IngestService/PublishBatch"
MAX_BATCH = 1000
REQUEST_ID = "x-request-id"
IDEMPOTENCY_HEADER = "idempotency-key"  # the record carries the key the event was stored by
MAX_IDEMPOTENCY_KEY_BYTES = 512  # part of a primary key (PostgreSQL indexes ~2,700 bytes)
NUL_REFUSED = "contains a NUL character (\\u0000), which cannot be stored"


class CallContext:
    """What the call's metadata says: transport headers, idempotency key, identity;
    and the endpoint its idempotency keys are scoped to."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], endpoint: str) -> None:
        self.endpoint = endpoint
        metadata: Mapping[str, str | bytes] = {  # noqa: C416  (typed pairs)
            key: value for key, value in context.invocation_metadata() or ()
        }
        self.idempotency_key = str(metadata.get(IDEMPOTENCY_HEADER, ""))
        self.application_id = str(metadata.get("application-id", ""))
        self.headers: dict[str, str] = {}
        for name in binding.CONTEXT_HEADERS:
            value = metadata.get(name)
            if isinstance(value, str) and value:
                self.headers[name] = value
        # Every event carries an X-Request-Id (seed 001), for its logs and trace to be
        # found by: one of its own for a call that sent none (all of a batch's items
        # share their call's).
        if REQUEST_ID not in self.headers:
            self.headers[REQUEST_ID] = new_request_id()
        # Each event's record carries the traceparent of its own event.publish span, a
        # child of the call's (in the caller's trace, if any; as sent when tracing is off).
        sent = self.headers.pop("traceparent", None)
        self.traceparent = current_traceparent() or sent
        self.spans: dict[int, trace.Span] = {}  # id(pending) → its span, while recorded
        self._started: trace.Span | None = None
        # Who calls: the name of its API key (INGEST_API_KEYS), else its TLS client
        # certificate's identity; "" when neither (the event's source stands in).
        self.identity = TENANT.get("") or _peer_identity(context)

    def publish_span(self, event: Event, topic: str) -> str | None:
        """Starts the event.publish span of ``event``; returns its traceparent."""
        hop = event_spans.start(event_spans.PUBLISH, self.traceparent, SpanKind.PRODUCER)
        if hop.span is not None:
            hop.span.set_attributes(
                {
                    event_spans.MESSAGING_SYSTEM: "kafka",
                    event_spans.OPERATION: "publish",
                    event_spans.DESTINATION: topic,
                    event_spans.MESSAGE_ID: event.id,
                    event_spans.EVENT_ID: event.id,
                    event_spans.EVENT_TYPE: event.type,
                    event_spans.EVENT_SOURCE: event.source,
                    event_spans.REQUEST_ID: self.headers[REQUEST_ID],
                }
            )
            self._started = hop.span
        return hop.traceparent

    def keep_span(self, pending: PendingEvent) -> None:
        """The span just started belongs to ``pending`` (ended by :meth:`end_span`)."""
        if self._started is not None:
            self.spans[id(pending)] = self._started
            self._started = None

    def end_span(self, pending: PendingEvent | None, outcome: str, error: str = "") -> None:
        """Ends the event.publish span of ``pending`` (the one just started when None)."""
        span = self._started if pending is None else self.spans.pop(id(pending), None)
        if pending is None:
            self._started = None
        if span is not None:
            span.set_attribute("herald.outcome", outcome)
            if error:
                span.set_status(Status(StatusCode.ERROR, error))
            span.end()

    def end_spans_left(self) -> None:
        """Ends the spans of events whose outcome is not known (the write failed)."""
        for span in self.spans.values():
            span.set_attribute("herald.outcome", "error")
            span.set_status(Status(StatusCode.ERROR, "not stored"))
            span.end()
        self.spans.clear()


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    """The IngestService RPCs."""

    def __init__(
        self,
        catalog: CatalogStore,
        writer: EventWriter,
        topic: str,
        max_event_bytes: int,
        max_schema_bytes: int = MAX_SCHEMA_BYTES,
        publish_limits: PublishLimits | None = None,
    ) -> None:
        self._catalog = catalog
        self._publish_limits = publish_limits or PublishLimits()
        self._writer = writer
        self._topic = topic
        self._max_event_bytes = max_event_bytes
        self._max_schema_bytes = max_schema_bytes

    async def Publish(
        self, request: ingest_pb2.PublishRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ingest_pb2.PublishResponse:
        """Validates, stores and acknowledges one event."""
        call = CallContext(context, PUBLISH_ENDPOINT)
        pending = await self._prepare(
            request, call, request.idempotency_key or call.idempotency_key
        )
        if isinstance(pending, Accepted):
            return ingest_pb2.PublishResponse(event_id=pending.event_id, duplicate=True)
        try:
            outcome = await self._writer.submit(pending)
            self._log(pending, outcome, call)
        finally:
            call.end_spans_left()
        if isinstance(outcome, InvalidArgument):
            raise outcome
        return ingest_pb2.PublishResponse(event_id=outcome.event_id, duplicate=outcome.duplicate)

    async def PublishBatch(
        self, request: ingest_pb2.PublishBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ingest_pb2.PublishBatchResponse:
        """Up to 1,000 events in one transaction, a result per item."""
        if len(request.requests) > MAX_BATCH:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "requests",
                        f"at most {MAX_BATCH} events per call; got {len(request.requests)}",
                    )
                ]
            )
        call = CallContext(context, PUBLISH_BATCH_ENDPOINT)
        results: list[ingest_pb2.PublishResult | None] = [None] * len(request.requests)
        valid: list[tuple[int, PendingEvent]] = []
        for i, item in enumerate(request.requests):
            key = item.idempotency_key or (
                f"{call.idempotency_key}:{i}" if call.idempotency_key else ""
            )
            try:
                prepared = await self._prepare(item, call, key)
            except (InvalidArgument, FailedPrecondition, PermissionDenied) as exc:
                results[i] = ingest_pb2.PublishResult(status=exc.to_status())
                continue
            if isinstance(prepared, Accepted):
                results[i] = _result(prepared)
            else:
                valid.append((i, prepared))
        try:
            outcomes = await self._writer.write([p for _, p in valid])
            for (i, pending), outcome in zip(valid, outcomes, strict=True):
                self._log(pending, outcome, call)
                results[i] = _result(outcome)
        finally:
            call.end_spans_left()
        return ingest_pb2.PublishBatchResponse(results=[r for r in results if r is not None])

    async def ListEventTypes(
        self, request: ingest_pb2.ListEventTypesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ingest_pb2.ListEventTypesResponse:
        """A page of the catalog."""
        prefix = request.name_prefix
        page = page_of(request.page_size, request.page_token, prefix, key=TYPE_ORDER)
        listing = await self._catalog.page(prefix, page)
        return ingest_pb2.ListEventTypesResponse(
            event_types=[_to_proto(d) for d in listing.items],
            next_page_token=listing.next_page_token,
            total_size=listing.total_size,
        )

    async def GetEventType(
        self, request: ingest_pb2.GetEventTypeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ingest_pb2.GetEventTypeResponse:
        """One type at a version (the latest by default)."""
        if not request.name:
            raise InvalidArgument([FieldViolation("name", "required")])
        await self._catalog.refresh(request.name)  # a read API answers from the database
        found = await self._catalog.lookup(request.name, request.data_version or None)
        if found is None:
            what = f" version {request.data_version!r}" if request.data_version else ""
            raise NotFound(f"event type {request.name!r}{what} is not registered")
        return ingest_pb2.GetEventTypeResponse(event_type=_to_proto(found))

    async def CreateEventType(
        self,
        request: ingest_pb2.CreateEventTypeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ingest_pb2.CreateEventTypeResponse:
        """Registers a type or a new data version of one."""
        proto = request.event_type
        check_definition(
            proto.name,
            proto.data_version,
            proto.json_schema,
            proto.source_pattern,
            proto.required_attributes,
            proto.description,
            self._max_schema_bytes,
        )
        stored = await self._catalog.create(
            EventTypeDef(
                proto.name,
                proto.data_version,
                proto.json_schema,
                proto.description,
                proto.id_must_be_uuid,
                proto.source_pattern,
                tuple(proto.required_attributes),
            )
        )
        log.info("event_type.created", type=stored.name, data_version=stored.data_version)
        return ingest_pb2.CreateEventTypeResponse(event_type=_to_proto(stored))

    async def _prepare(
        self, request: ingest_pb2.PublishRequest, call: CallContext, key: str
    ) -> PendingEvent | Accepted:
        """The event to store, or the earlier outcome a retry of it repeats (when it
        fails validation now; see EventWriter.earlier). Raises InvalidArgument, or
        FailedPrecondition when its type is unusable."""
        event: Event | None = None
        try:
            event, problems = self._parse(request)
            self._check_permitted(event, call, key)
            validation.check_size(event, self._max_event_bytes)
            if _key_too_long(key):
                problems.append(
                    FieldViolation("idempotency-key", f"at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes")
                )
            if "\x00" in key:
                problems.append(FieldViolation("idempotency-key", NUL_REFUSED))
            # A NUL is a problem found already; PostgreSQL would refuse even the lookup.
            if problems and not _storable(event, key):
                raise InvalidArgument(problems)
            definition = await self._catalog.lookup(event.type, event.data_version)
            known = self._catalog.catalog.versions(event.type) if definition is None else []
            validation.validate(event, definition, known, problems)
            assert definition is not None
            pending = self._pending(event, definition, call, key)
            try:
                validation.check_record_size(event, pending.row.size, self._max_event_bytes)
            except InvalidArgument:
                call.end_span(None, "invalid", "too large")
                raise
            call.keep_span(pending)
        except (InvalidArgument, FailedPrecondition) as exc:
            if event is not None and (earlier := await self._earlier(event, call, key)):
                _accepted(event.type, True).inc()  # a type it was accepted under
                log.info(
                    "event.replayed",
                    event_id=earlier.event_id,
                    type=event.type or None,
                    idempotency_key=key or None,
                    request_id=call.headers[REQUEST_ID],
                    outcome="duplicate",
                )
                return earlier
            details: dict[str, object]
            if isinstance(exc, InvalidArgument):
                outcome = "invalid"
                violations = [f"{v.field}: {v.description}" for v in exc.violations[:10]]
                details = {"violations": violations}
            else:
                outcome = "unusable_type"
                details = {"error": exc.message}
            EVENTS_REJECTED.labels(outcome).inc()
            log.info(
                "event.rejected",
                event_id=(event.id or None) if event else None,
                type=(event.type or None) if event else None,
                idempotency_key=key or None,
                request_id=call.headers[REQUEST_ID],
                outcome=outcome,
                **details,
            )
            raise
        return pending

    def _check_permitted(self, event: Event, call: CallContext, key: str) -> None:
        """Raises PermissionDenied when the caller may not publish the event's type
        (INGEST_API_KEY_EVENT_TYPES) or source (INGEST_API_KEY_SOURCES), or under the
        application-id its record would carry (INGEST_API_KEY_APPLICATION_IDS: the
        call's, else the event's source); an event without a type or source is left to
        validation."""
        refusal = self._publish_limits.refusal(
            callers(), event.type, event.source, call.application_id or event.source
        )
        if not refusal:
            return
        EVENTS_REJECTED.labels("forbidden").inc()
        log.info(
            "event.rejected",
            event_id=event.id or None,
            type=event.type,
            idempotency_key=key or None,
            request_id=call.headers[REQUEST_ID],
            outcome="forbidden",
            error=refusal,
        )
        raise PermissionDenied(refusal)

    def _pending(
        self, event: Event, definition: EventTypeDef, call: CallContext, key: str
    ) -> PendingEvent:
        """The outbox row of a valid event."""
        # The request as sent is what a retry repeats: the default data version filled
        # in below changes when a newer version is registered.
        sent = event
        if event.data_version is None:
            event = event.with_attribute("dataversion", definition.data_version)
        if "datacontenttype" not in event.attributes:
            # Implied by the JSON format (and Herald's data is JSON): said on the record,
            # as the spec asks of an event taken into another binding.
            event = event.with_attribute("datacontenttype", "application/json")
        media, sep, parameters = event.attributes["datacontenttype"].partition(";")
        if not media.islower() and media.lower() != media:
            # Media types are case-insensitive, but consumers (the cloudevents SDK among
            # them) compare content-type as written: the record carries it in lower case.
            event = event.with_attribute("datacontenttype", media.lower() + sep + parameters)
        ident = _ident(key, call, event)
        headers = call.headers
        if key != headers.get(IDEMPOTENCY_HEADER, ""):  # a batch item's, or the field's
            headers = {k: v for k, v in headers.items() if k != IDEMPOTENCY_HEADER}
            if key:
                headers[IDEMPOTENCY_HEADER] = key
        return make_pending(
            event,
            self._topic,
            headers,
            ident,
            call.application_id or event.source,
            sent,
            call.publish_span(event, self._topic),
        )

    async def _earlier(self, event: Event, call: CallContext, key: str) -> Accepted | None:
        if not (event.id and event.source) or _key_too_long(key) or not _storable(event, key):
            return None
        try:
            return await self._writer.earlier(event, _ident(key, call, event))
        except (asyncpg.DataError, UnicodeError):  # not storable: never stored before
            return None

    @staticmethod
    def _parse(request: ingest_pb2.PublishRequest) -> envelope.Parsed:
        kind = request.WhichOneof("envelope")
        if kind == "event":
            return envelope.parse_proto(request.event)
        if kind == "json":
            return envelope.parse_json(request.json)
        raise InvalidArgument([FieldViolation("envelope", "give either event or json")])

    @staticmethod
    def _log(pending: PendingEvent, outcome: Outcome, call: CallContext) -> None:
        request_id = call.headers[REQUEST_ID]
        event = pending.event
        key = pending.idempotency.key if pending.idempotency else None
        if isinstance(outcome, Accepted):
            _accepted(event.type, outcome.duplicate).inc()
            log.info(
                "event.accepted",
                event_id=event.id,
                type=event.type,
                idempotency_key=key,
                request_id=request_id,
                outcome="duplicate" if outcome.duplicate else "stored",
            )
            call.end_span(pending, "duplicate" if outcome.duplicate else "stored")
        else:
            log.info(
                "event.refused",
                event_id=event.id,
                type=event.type,
                idempotency_key=key,
                request_id=request_id,
                outcome="conflict",
                error=outcome.message,
            )
            call.end_span(pending, "conflict", outcome.message)


@functools.lru_cache(maxsize=4096)  # the catalog's types, stored or duplicate
def _accepted(event_type: str, duplicate: bool) -> Any:
    """The events_accepted counter of ``event_type`` (a labels() lookup each event
    cost ~1.5 µs)."""
    return EVENTS_ACCEPTED.labels(event_type, str(duplicate).lower())


def _peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    identities = list(context.peer_identities() or ())
    return identities[0].decode() if identities else ""


def _key_too_long(key: str) -> bool:
    return len(key.encode("utf-8", "surrogatepass")) > MAX_IDEMPOTENCY_KEY_BYTES


def _storable(event: Event, key: str) -> bool:
    """Whether PostgreSQL can hold the event's attributes and the key: no NUL."""
    return "\x00" not in key and not any("\x00" in v for v in event.attributes.values())


def _ident(key: str, call: CallContext, event: Event) -> IdempotencyKey | None:
    """The key's scope: the endpoint and the caller (its identity, else the source)."""
    return IdempotencyKey(key, call.endpoint, call.identity or event.source) if key else None


def _result(outcome: Outcome) -> ingest_pb2.PublishResult:
    if isinstance(outcome, Accepted):
        return ingest_pb2.PublishResult(
            event_id=outcome.event_id,
            duplicate=outcome.duplicate,
            status=status_pb2.Status(code=code_pb2.OK),
        )
    return ingest_pb2.PublishResult(status=outcome.to_status())


def _to_proto(definition: EventTypeDef) -> ingest_pb2.EventType:
    create_time = Timestamp()
    if definition.create_time:
        create_time.FromDatetime(definition.create_time)
    return ingest_pb2.EventType(
        name=definition.name,
        data_version=definition.data_version,
        description=definition.description,
        json_schema=json.dumps(definition.json_schema),
        id_must_be_uuid=definition.id_must_be_uuid,
        source_pattern=definition.source_pattern,
        required_attributes=list(definition.required_attributes),
        create_time=create_time,
    )
