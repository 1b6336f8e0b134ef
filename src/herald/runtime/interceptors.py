"""Server interceptors: domain errors to rich statuses, in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg
import grpc
import structlog
from grpc_status import rpc_status

from herald.runtime.errors import RpcError, Unavailable

log = structlog.get_logger("herald.rpc")

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]

# Errors that mean "a dependency is unreachable right now": the caller may retry.
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    TimeoutError,
)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps :class:`RpcError` to its status (BadRequest details included); an
    unreachable database to UNAVAILABLE; anything else to INTERNAL, logged."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner = cast("Handler", handler.unary_unary)

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise
            except RpcError as exc:
                await context.abort_with_status(rpc_status.to_status(exc.to_status()))
            except _UNAVAILABLE as exc:
                log.warning("rpc.unavailable", method=method, error=repr(exc))
                err = Unavailable(f"a dependency is unavailable, retry later: {exc}")
                await context.abort_with_status(rpc_status.to_status(err.to_status()))
            except Exception:
                log.exception("rpc.internal_error", method=method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
