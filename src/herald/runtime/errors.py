"""Rich gRPC errors: google.rpc.Status with BadRequest field violations.

One error mapper for every service: domain code raises :class:`InvalidArgument`
(or another :class:`RpcError`), and the servicer interceptor turns it into a status.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

# An error travels in the response's trailers, which a client refuses beyond 8 KiB
# (grpc's default): values echoed from the request are clipped and the violations
# packed while they fit, so a 5,000-character event type cannot turn INVALID_ARGUMENT
# into the client's RESOURCE_EXHAUSTED.
MAX_FIELD_CHARS = 200
MAX_DESCRIPTION_CHARS = 300
MAX_MESSAGE_CHARS = 1000
MAX_DETAILS_BYTES = 3000


def clip(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters (the cut marked with …)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One offending field: a dotted path (``data.items[0].qty``) and what is wrong."""

    field: str
    description: str


def besides(first: list[FieldViolation], more: list[FieldViolation]) -> list[FieldViolation]:
    """``first``, then those of ``more`` on fields ``first`` does not name: a field
    refused while it was read (malformed) is not refused again by later checks, which
    saw it as some other value (absent, null, a number)."""
    if not first:
        return more
    named = {v.field for v in first}
    return first + [v for v in more if v.field not in named]


class RpcError(Exception):
    """A domain error that maps to one gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message

    def to_status(self) -> status_pb2.Status:
        """The google.rpc.Status this error travels as."""
        return status_pb2.Status(code=self.code.value[0], message=self.message)


class InvalidArgument(RpcError):
    """Bad input: INVALID_ARGUMENT carrying a BadRequest with every violation."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Iterable[FieldViolation], message: str = "") -> None:
        self.violations = tuple(
            FieldViolation(
                clip(v.field, MAX_FIELD_CHARS), clip(v.description, MAX_DESCRIPTION_CHARS)
            )
            for v in violations
        )
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations[:5])
        if len(self.violations) > 5:
            summary += f"; and {len(self.violations) - 5} more"
        super().__init__(message or f"invalid request: {summary}")

    def to_status(self) -> status_pb2.Status:
        """Status with a packed google.rpc.BadRequest detail."""
        status = super().to_status()
        request = error_details_pb2.BadRequest()
        for i, v in enumerate(self.violations):
            if request.ByteSize() > MAX_DETAILS_BYTES:
                request.field_violations.add(
                    field="", description=f"{len(self.violations) - i} more not shown"
                )
                break
            request.field_violations.add(field=v.field, description=v.description)
        detail = any_pb2.Any()
        detail.Pack(request)
        status.details.append(detail)
        return status


class NotFound(RpcError):
    """The named resource does not exist (or is not the caller's)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(RpcError):
    """The resource to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(RpcError):
    """The system is not in a state that allows the call."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(RpcError):
    """The caller has used up a quota; it may try again once some is free."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Aborted(RpcError):
    """A concurrent call conflicted with this one; the caller may retry it."""

    code = grpc.StatusCode.ABORTED


class Unavailable(RpcError):
    """A dependency is down; the caller may retry."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(RpcError):
    """No valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(RpcError):
    """Valid credentials that do not open this call."""

    code = grpc.StatusCode.PERMISSION_DENIED


OK_STATUS = status_pb2.Status(code=code_pb2.OK)


def bad_request_of(status: status_pb2.Status) -> list[FieldViolation]:
    """The field violations packed in ``status`` (used by clients and tests)."""
    out: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            out.extend(FieldViolation(v.field, v.description) for v in request.field_violations)
    return out
