"""Server interceptors: domain errors to rich statuses, in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg
import grpc
import structlog
from google.protobuf.message import DecodeError, Message
from grpc_status import rpc_status

from herald.runtime.db import CONNECTION_LOST
from herald.runtime.errors import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    RpcError,
    Unavailable,
)
from herald.runtime.rpc_types import Continuation, MethodHandler, WrappedHandlers

log = structlog.get_logger("herald.rpc")

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]

# PostgreSQL refuses a NUL character in text: a request's string holding one fails there.
_NUL_REFUSED = (
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
)
# And it indexes at most ~2,700 bytes a row (a third of a page).
_INDEXABLE = 2000


def nul_fields(message: Message) -> list[str]:
    """Paths of the strings in ``message`` (map keys and values, repeated items and
    nested messages included) that hold a NUL character, as ``a.b[2]`` / ``m['k']``."""
    return fields_where(message, lambda text: "\x00" in text)


def long_fields(message: Message) -> list[str]:
    """Paths of the strings in ``message`` longer than PostgreSQL can index."""
    return fields_where(message, lambda text: len(text.encode("utf-8", "replace")) > _INDEXABLE)


def fields_where(message: Message, test: Callable[[str], bool], prefix: str = "") -> list[str]:
    """Paths of the strings in ``message`` for which ``test`` holds (see nul_fields)."""
    found: list[str] = []
    for field, value in message.ListFields():
        path = f"{prefix}.{field.name}" if prefix else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                here = f"{path}[{key!r}]"
                found += _found_in(key, here, test) or _found_in(item, here, test)
        elif field.is_repeated:
            for i, item in enumerate(value):
                found += _found_in(item, f"{path}[{i}]", test)
        else:
            found += _found_in(value, path, test)
    return found


def _found_in(value: object, path: str, test: Callable[[str], bool]) -> list[str]:
    if isinstance(value, str):
        return [path] if test(value) else []
    if isinstance(value, Message):
        return fields_where(value, test, path)
    return []


class UnaryInterceptor(grpc.aio.ServerInterceptor):
    """Runs :meth:`around` around every unary-unary call it :meth:`applies_to`."""

    def __init__(self) -> None:
        self._wrapped = WrappedHandlers()

    def applies_to(self, method: str) -> bool:
        """Whether calls of ``method`` (``/package.Service/Method``) are wrapped."""
        return True

    async def around(
        self,
        inner: Handler,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
    ) -> Any:
        """Calls ``inner`` with what it needs around it."""
        raise NotImplementedError

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> MethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or not self.applies_to(method):
            return handler
        return self._wrapped.wrap(method, handler, lambda: self._wrap(method, handler))

    def _wrap(self, method: str, handler: MethodHandler) -> MethodHandler:
        inner = cast("Handler", handler.unary_unary)

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return await self.around(inner, request, context, method)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class Undecodable:
    """A request whose bytes are not a valid message of the method's request type
    (corrupt wire format, a string field that is not UTF-8)."""

    __slots__ = ("reason", "type_name")

    def __init__(self, type_name: str, reason: str) -> None:
        self.type_name = type_name
        self.reason = reason

    def violation(self) -> InvalidArgument:
        """The INVALID_ARGUMENT it is answered with."""
        what = f"a valid {self.type_name} message" if self.type_name else "a valid message"
        return InvalidArgument([FieldViolation("request", f"not {what}: {self.reason}")])


def lenient(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``deserialize`` that returns :class:`Undecodable` instead of raising: grpc
    answers a request it cannot deserialize with UNKNOWN, no details; the handler
    answers it with INVALID_ARGUMENT instead."""
    owner = getattr(deserialize, "__self__", None)  # FromString of the generated class
    descriptor = getattr(owner, "DESCRIPTOR", None)
    type_name = str(getattr(descriptor, "full_name", ""))

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except (DecodeError, ValueError) as exc:  # ValueError: UnicodeDecodeError too
            return Undecodable(type_name, str(exc) or type(exc).__name__)

    return decode


class ErrorInterceptor(UnaryInterceptor):
    """Maps :class:`RpcError` to its status (BadRequest details included); an
    undecodable request to INVALID_ARGUMENT; an unreachable database to UNAVAILABLE;
    anything else to INTERNAL, logged."""

    def _wrap(self, method: str, handler: MethodHandler) -> MethodHandler:
        wrapped = super()._wrap(method, handler)
        if handler.request_deserializer is None:
            return wrapped
        return grpc.unary_unary_rpc_method_handler(
            cast("Handler", wrapped.unary_unary),
            request_deserializer=lenient(handler.request_deserializer),
            response_serializer=wrapped.response_serializer,
        )

    async def around(
        self,
        inner: Handler,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
    ) -> Any:
        """Calls the handler; turns what it raises into a status."""
        if isinstance(request, Undecodable):
            log.info("rpc.undecodable", method=method, error=request.reason)
            status = request.violation().to_status()
            await context.abort_with_status(rpc_status.to_status(status))
        try:
            return await inner(request, context)
        except grpc.aio.AbortError:
            raise
        except RpcError as exc:
            await context.abort_with_status(rpc_status.to_status(exc.to_status()))
        except (*_NUL_REFUSED, asyncpg.exceptions.ProgramLimitExceededError) as exc:
            # What the database refuses of the request's values; validation is meant
            # to refuse it first, this names the field when it did not.
            nul = isinstance(exc, _NUL_REFUSED)
            find = nul_fields if nul else long_fields
            where = find(request) if isinstance(request, Message) else []
            if not where:
                log.exception("rpc.internal_error", method=method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            why = (
                "contains a NUL character (\\u0000), which cannot be stored"
                if nul
                else f"too long to store (at most {_INDEXABLE} bytes)"
            )
            log.warning("rpc.refused_by_database", method=method, fields=where, error=str(exc))
            refused = InvalidArgument([FieldViolation(f, why) for f in where])
            await context.abort_with_status(rpc_status.to_status(refused.to_status()))
        except asyncpg.TransactionRollbackError as exc:  # a deadlock, a serialization
            log.warning("rpc.aborted", method=method, error=repr(exc))  # failure
            aborted = Aborted(f"a concurrent call conflicted with this one; retry it: {exc}")
            await context.abort_with_status(rpc_status.to_status(aborted.to_status()))
        except CONNECTION_LOST as exc:  # the caller may retry
            log.warning("rpc.unavailable", method=method, error=repr(exc))
            err = Unavailable(f"a dependency is unavailable, retry later: {exc}")
            await context.abort_with_status(rpc_status.to_status(err.to_status()))
        except Exception:
            log.exception("rpc.internal_error", method=method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
