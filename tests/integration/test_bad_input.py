"""Every unary RPC of the four services, called with nasty values one field at a time
(empty, NUL, control characters, 2 MB strings, 9,000 random characters, extreme numbers,
unknown enum values, malformed ids, URLs, tokens and timestamps; Timestamps and Durations
out of protobuf's own range, with their sibling Timestamps valid; odd FieldMask paths):
none may answer INTERNAL or UNKNOWN, or hang. Bad input is INVALID_ARGUMENT (or
NOT_FOUND, …), never a server error."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf import message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from herald.dispatch.v1 import dispatch_pb2
from herald.ingest.v1 import ingest_pb2
from herald.reconcile.v1 import reconcile_pb2
from herald.webhooks.v1 import webhooks_pb2

from tests.conftest import Infra
from tests.integration.conftest import ACME_KEY
from tests.integration.reconcile_flow import open_flow
from tests.integration.test_dispatch import running_services

STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\n\r\t\x1b",
    "x" * 2_000_000,
    os.urandom(4500).hex(),  # 9,000 characters that do not compress: past an index's limit
    "😀" * 1000,
    "{",
    "null",
    "-1",
    "*",
    "**",
    "a.*.b",
    "%",
    "../../etc/passwd",
    "' OR 1=1 --",
    "AAAA====",
    "eyJ4IjoxfQ==",
    "http://[::1",
    "http://127.0.0.1:1/x",
    "2026-13-45T99:99:99Z",
    "00000000-0000-0000-0000-000000000000",
    "not-a-uuid",
]
INTS = [0, -1, 1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
# Seconds and nanos of a Timestamp or Duration beyond what protobuf converts.
WELL_KNOWN_TIME = {
    "seconds": [-62135596801, 253402300800, 2**62, -(2**62)],
    "nanos": [-1, 2 * 10**9],
}
MASK_PATHS = ["", "nope", "a.b.c", "*", "webhook.url.x"]
VALID_SECONDS = 1_700_000_000
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
T = d.FieldDescriptor


def nasty(field: d.FieldDescriptor) -> list[Any]:
    """The values tried for a scalar field of this type."""
    kind = field.type
    if kind == T.TYPE_STRING:
        return STRINGS
    if kind == T.TYPE_BYTES:
        return [b"", b"\x00", b"\xff\xfe", b"{", b"x" * 2_000_000]
    if kind in (T.TYPE_INT32, T.TYPE_SINT32, T.TYPE_SFIXED32):
        return [v for v in INTS if -(2**31) <= v < 2**31]
    if kind in (T.TYPE_INT64, T.TYPE_SINT64, T.TYPE_SFIXED64):
        return INTS
    if kind in (T.TYPE_UINT32, T.TYPE_FIXED32):
        return [0, 1, 2**32 - 1]
    if kind in (T.TYPE_UINT64, T.TYPE_FIXED64):
        return [0, 2**64 - 1]
    if kind in (T.TYPE_DOUBLE, T.TYPE_FLOAT):
        return [-1.0, float("inf"), float("nan"), 1e308]
    if kind == T.TYPE_BOOL:
        return [True]
    if kind == T.TYPE_ENUM:
        assert field.enum_type is not None
        return [v.number for v in field.enum_type.values] + [999]
    return []


def _is_map(field: d.FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _entry(field: d.FieldDescriptor) -> d.Descriptor:
    """The entry message of a map field."""
    assert field.message_type is not None
    return field.message_type


def cases(
    message: d.Descriptor, path: tuple[d.FieldDescriptor, ...] = (), depth: int = 0
) -> Iterator[tuple[tuple[d.FieldDescriptor, ...], Any]]:
    """(path to a field, a value) for every scalar, map key and nested field (two deep)."""
    for field in message.fields:
        here = (*path, field)
        if _is_map(field):
            yield from ((here, v) for v in nasty(_entry(field).fields_by_name["key"]))
        elif field.message_type is not None:
            nested = field.message_type
            if field.is_repeated:
                continue
            if nested.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
                for name, values in WELL_KNOWN_TIME.items():
                    part = (*here, nested.fields_by_name[name])
                    yield from ((part, v) for v in values)
            elif nested.full_name == "google.protobuf.FieldMask":
                yield from (((*here, nested.fields_by_name["paths"]), v) for v in MASK_PATHS)
            elif depth < 2 and not nested.full_name.startswith("google."):
                yield from cases(nested, here, depth + 1)
        else:
            yield from ((here, v) for v in nasty(field))


def request_with(
    cls: type[Message], path: tuple[d.FieldDescriptor, ...], value: Any
) -> Message | None:
    """A request of ``cls`` with ``value`` at ``path`` (repeated: three times; a map:
    as a key), or None when protobuf itself refuses the value."""
    request = cls()
    target: Any = request
    for field in path[:-1]:
        _valid_sibling_timestamps(target, field)
        target = getattr(target, field.name)
    leaf = path[-1]
    try:
        if _is_map(leaf):
            value_field = _entry(leaf).fields_by_name["value"]
            if value_field.message_type is not None:
                getattr(target, leaf.name)[value].SetInParent()
            else:
                getattr(target, leaf.name)[value] = nasty(value_field)[0]
        elif leaf.is_repeated:
            getattr(target, leaf.name).extend([value] * 3)
        else:
            setattr(target, leaf.name, value)
    except (TypeError, ValueError):
        return None
    return request


def _valid_sibling_timestamps(parent: Any, chosen: d.FieldDescriptor) -> None:
    """Sets the other Timestamps of ``parent`` to a valid time, so that a range check
    does not refuse the request before the value under test is read."""
    for field in parent.DESCRIPTOR.fields:
        nested = field.message_type
        if (
            field is not chosen
            and not field.is_repeated
            and nested is not None
            and nested.full_name == "google.protobuf.Timestamp"
        ):
            getattr(parent, field.name).seconds = VALID_SECONDS + field.number


@dataclass
class Target:
    port: int
    service: d.ServiceDescriptor


@pytest.fixture
async def targets(infra: Infra, database_url: str, topic: str) -> AsyncIterator[list[Target]]:
    async with (
        running_services(infra, database_url, topic) as services,
        open_flow(infra, database_url, services.ingest) as reconcile,
    ):
        yield [
            Target(
                services.ingest.running.port,
                ingest_pb2.DESCRIPTOR.services_by_name["IngestService"],
            ),
            Target(
                services.dispatch.port, dispatch_pb2.DESCRIPTOR.services_by_name["DispatchService"]
            ),
            Target(
                services.webhooks.port, webhooks_pb2.DESCRIPTOR.services_by_name["WebhookService"]
            ),
            Target(
                reconcile.running[0].port,
                reconcile_pb2.DESCRIPTOR.services_by_name["ReconcileService"],
            ),
        ]


async def test_no_rpc_answers_nasty_input_with_a_server_error(targets: list[Target]) -> None:
    failures: list[str] = []
    calls = 0
    for target in targets:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{target.port}",
            options=[("grpc.max_send_message_length", 64 << 20)],
        ) as channel:
            for method in target.service.methods:
                if method.client_streaming or method.server_streaming:
                    continue
                cls = message_factory.GetMessageClass(method.input_type)
                call: grpc.aio.UnaryUnaryMultiCallable[Message, bytes] = channel.unary_unary(
                    f"/{target.service.full_name}/{method.name}",
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=lambda b: b,
                )
                tried: list[tuple[str, Message]] = [("(empty)", cls())]
                for path, value in cases(method.input_type):
                    request = request_with(cls, path, value)
                    if request is not None:
                        name = ".".join(f.name for f in path)
                        tried.append((f"{name}={value!r:.40}", request))
                for what, request in tried:
                    calls += 1
                    try:
                        await call(
                            request,
                            metadata=(("authorization", f"Bearer {ACME_KEY}"),),
                            timeout=20,
                        )
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() in BAD:
                            failures.append(f"{method.name}({what}): {exc.code().name}")
    assert calls > 1000, "every service's RPCs were called"
    assert failures == []


def _undecodable(method: d.MethodDescriptor) -> list[tuple[str, bytes]]:
    """Request bytes that are no message of the method's request type: corrupt wire
    format, and (when it has one) a string field holding bytes that are not UTF-8."""
    out = [("corrupt wire format", b"\xff\xff\xff")]
    for field in method.input_type.fields:
        if field.type == T.TYPE_STRING and not field.is_repeated:
            out.append((f"{field.name} not UTF-8", bytes([field.number << 3 | 2, 1, 0xFF])))
            break
    return out


async def test_request_bytes_that_do_not_decode_are_invalid_argument(
    targets: list[Target],
) -> None:
    wrong: list[str] = []
    calls = 0
    for target in targets:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{target.port}") as channel:
            for method in target.service.methods:
                if method.client_streaming or method.server_streaming:
                    continue
                call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                    f"/{target.service.full_name}/{method.name}",
                    request_serializer=lambda b: b,
                    response_deserializer=lambda b: b,
                )
                for what, data in _undecodable(method):
                    calls += 1
                    with pytest.raises(grpc.aio.AioRpcError) as exc:
                        await call(
                            data,
                            metadata=(("authorization", f"Bearer {ACME_KEY}"),),
                            timeout=20,
                        )
                    status = rpc_status.from_call(exc.value)
                    fields = []
                    for detail in status.details if status else ():
                        bad = error_details_pb2.BadRequest()
                        if detail.Unpack(bad):
                            fields += [v.field for v in bad.field_violations]
                    if exc.value.code() != grpc.StatusCode.INVALID_ARGUMENT or fields != [
                        "request"
                    ]:
                        wrong.append(f"{method.name}({what}): {exc.value.code().name} {fields}")
    assert calls > 40, "every service's RPCs were called"
    assert wrong == []


async def test_only_ingest_takes_requests_over_4_mib(targets: list[Target]) -> None:
    """A request is read whole before the API key is checked: dispatch, webhooks and
    reconcile, whose requests are small, refuse one over 4 MiB (RESOURCE_EXHAUSTED, key
    or no key) rather than hold up to 64 MiB per call; ingest takes a PublishBatch of
    that size."""
    answers: dict[str, grpc.StatusCode] = {}
    for target in targets:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{target.port}") as channel:
            method, field = next(
                (m, f)
                for m in target.service.methods
                for f in m.input_type.fields
                if f.type == T.TYPE_STRING and not f.is_repeated
            )
            cls = message_factory.GetMessageClass(method.input_type)
            request = cls(**{field.name: "x" * 5_000_000})
            if target.service.name == "IngestService":
                request = ingest_pb2.PublishBatchRequest(
                    requests=[ingest_pb2.PublishRequest(json="x" * 100_000)] * 50
                )
                method = target.service.methods_by_name["PublishBatch"]
            call: grpc.aio.UnaryUnaryMultiCallable[Message, bytes] = channel.unary_unary(
                f"/{target.service.full_name}/{method.name}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=lambda b: b,
            )
            try:
                await call(request, timeout=20)
                answers[target.service.name] = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                answers[target.service.name] = exc.code()
    assert answers == {
        "IngestService": grpc.StatusCode.OK,  # each item refused on its own
        "DispatchService": grpc.StatusCode.RESOURCE_EXHAUSTED,
        "WebhookService": grpc.StatusCode.RESOURCE_EXHAUSTED,
        "ReconcileService": grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
