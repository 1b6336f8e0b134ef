"""Types of grpc.aio server interceptors (shared by runtime.interceptors and
runtime.tracing, which must not import each other's dependencies)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

# Strings: grpc's classes are generic only in its type stubs.
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
# What a grpc.aio server interceptor is given: the rest of the chain.
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]]"
