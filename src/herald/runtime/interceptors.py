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


class UnaryInterceptor(grpc.aio.ServerInterceptor):
    """Runs :meth:`around` around every unary-unary call it :meth:`applies_to`."""

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
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or not self.applies_to(method):
            return handler
        inner = cast("Handler", handler.unary_unary)

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return await self.around(inner, request, context, method)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class ErrorInterceptor(UnaryInterceptor):
    """Maps :class:`RpcError` to its status (BadRequest details included); an
    unreachable database to UNAVAILABLE; anything else to INTERNAL, logged."""

    async def around(
        self,
        inner: Handler,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
    ) -> Any:
        """Calls the handler; turns what it raises into a status."""
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
