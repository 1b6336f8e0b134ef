"""API-key authentication: ``authorization: Bearer <key>`` → the caller's tenant.

The interceptor checks every call except the gRPC infrastructure services (health,
reflection) and puts the tenant in :data:`TENANT` for the handler to read.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, cast

import grpc

from herald.runtime.errors import Unauthenticated

TENANT: ContextVar[str] = ContextVar("herald_tenant")
_OPEN = ("/grpc.health.", "/grpc.reflection.")

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def parse_api_keys(text: str) -> dict[str, str]:
    """``"key1=tenant-a,key2=tenant-b"`` → {key: tenant}; raises ValueError naming
    the bad entry (the key itself is never echoed)."""
    keys: dict[str, str] = {}
    for n, entry in enumerate(e.strip() for e in text.split(",") if e.strip()):
        key, sep, tenant = entry.partition("=")
        if not sep or len(key.strip()) < 16 or not tenant.strip():
            raise ValueError(f"entry {n + 1}: expected KEY=TENANT with a key of 16+ characters")
        keys[key.strip()] = tenant.strip()
    return keys


class ApiKeys:
    """Known keys, kept as SHA-256 digests and compared in constant time."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._tenants = {hashlib.sha256(k.encode()).digest(): t for k, t in keys.items()}

    def tenant(self, metadata: Mapping[str, str | bytes]) -> str:
        """The tenant of the call's bearer key; raises Unauthenticated."""
        header = metadata.get("authorization", "")
        scheme, _, key = (header.decode() if isinstance(header, bytes) else header).partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("missing 'authorization: Bearer <api key>' metadata")
        digest = hashlib.sha256(key.strip().encode()).digest()
        for known, tenant in self._tenants.items():
            if hmac.compare_digest(known, digest):
                return tenant
        raise Unauthenticated("unknown API key")


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):
    """Sets :data:`TENANT` for each authenticated call; raises Unauthenticated
    (mapped to UNAUTHENTICATED by the error interceptor outside it)."""

    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if (
            handler is None
            or handler.unary_unary is None
            or handler_call_details.method.startswith(_OPEN)
        ):
            return handler
        inner = cast("Handler", handler.unary_unary)
        keys = self._keys

        async def authenticated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            metadata = dict(context.invocation_metadata() or ())
            token = TENANT.set(keys.tenant(metadata))
            try:
                return await inner(request, context)
            finally:
                TENANT.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            authenticated,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
