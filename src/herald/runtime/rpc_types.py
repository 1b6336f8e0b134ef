"""What grpc.aio server interceptors share (runtime.interceptors and runtime.tracing,
which must not import each other's dependencies): their types, and the memory of the
handlers they wrapped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

# Strings: grpc's classes are generic only in its type stubs.
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
# What a grpc.aio server interceptor is given: the rest of the chain.
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]]"


class WrappedHandlers:
    """The handlers an interceptor made, by method and by the handler under it. That
    handler is the same object call after call (when every interceptor below keeps
    its own), so a method's handler is wrapped once, not per call."""

    MAX = 10_000  # a service has a fixed set of methods

    def __init__(self) -> None:
        self._made: dict[tuple[str, object], MethodHandler] = {}

    def __len__(self) -> int:
        """How many handlers are remembered."""
        return len(self._made)

    def wrap(
        self, method: str, handler: MethodHandler, make: Callable[[], MethodHandler]
    ) -> MethodHandler:
        """The handler ``make`` made for ``method`` over ``handler`` (made now if new)."""
        key = (method, handler)
        made = self._made.get(key)
        if made is None:
            made = make()
            if len(self._made) < self.MAX:
                self._made[key] = made
        return made
