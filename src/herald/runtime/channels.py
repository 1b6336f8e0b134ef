"""gRPC channels from one Herald service to another."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog

from herald.runtime.renewing_channel import RenewingChannel
from herald.runtime.settings import RuntimeSettings
from herald.runtime.tls import ClientTls

log = structlog.get_logger("herald.channels")

# gRPC's defaults back off from 1 s by x1.6 up to 120 s between connection attempts, so a
# service that was away for ten seconds was found again only after ~6 s more (dispatch
# parked webhook targets ~12 s after the webhooks service was back). Between services,
# one attempt a second costs nothing. min_reconnect_backoff_ms is how long one attempt may
# take (default 20 s): a peer whose address no longer answers (a replaced pod) is given
# up on after a second too.
RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.min_reconnect_backoff_ms", 1000),
)


# gRPC sends a channel through the proxy that http_proxy / https_proxy / grpc_proxy name
# (set for outbound internet access, say): a plaintext call, WEBHOOKS_INTERNAL_KEY and
# alerts included, went through it, or failed where it cannot reach Herald's addresses.
NO_PROXY_OPTIONS: tuple[tuple[str, int], ...] = (("grpc.enable_http_proxy", 0),)


# What the operator can do about a call to ingest that failed so (its callers' logs).
_INGEST_HINTS = {
    grpc.StatusCode.UNAUTHENTICATED: "ingest has INGEST_API_KEYS: set INGEST_CLIENT_KEY to "
    "one of its keys",
    grpc.StatusCode.UNAVAILABLE: "is ingest up at INGEST_ADDR, and do the GRPC_TLS_* "
    "settings match its port?",
    grpc.StatusCode.PERMISSION_DENIED: "ingest's INGEST_API_KEY_METHODS, "
    "INGEST_API_KEY_EVENT_TYPES or INGEST_API_KEY_SOURCES limits the caller of "
    "INGEST_CLIENT_KEY: Herald's services call Publish (herald.* and integration.* alerts, "
    "from urn:herald:dispatch, urn:herald:webhooks and "
    "urn:mastermobile:integration:herald-reconcile), and webhooks ListEventTypes too",
}


def ingest_call_hint(code: grpc.StatusCode) -> str | None:
    """A hint for the log line of a call to ingest that failed with ``code``."""
    return _INGEST_HINTS.get(code)


def internal_tls(settings: RuntimeSettings) -> ClientTls | None:
    """The TLS of a service's calls to the other Herald services (None: plaintext).
    Warns when its own port asks callers for a certificate (GRPC_TLS_CLIENT_CA_FILE)
    but its calls present none (no GRPC_TLS_CLIENT_CERT_FILE): a peer set up alike
    closes them, which its callers only see as UNAVAILABLE "Socket closed"."""
    tls = settings.client_tls()
    if tls is not None and tls.cert_chain is None and settings.grpc_tls_client_ca_file:
        log.warning(
            "tls.no_client_certificate",
            detail="GRPC_TLS_CLIENT_CA_FILE is set (this port asks callers for a certificate) "
            "but GRPC_TLS_CLIENT_CERT_FILE is not: calls to other Herald services present "
            "none, and a port that asks for one closes them (UNAVAILABLE, 'Socket closed')",
        )
    return tls


def internal_channel(target: str, tls: ClientTls | None = None, key: str = "") -> grpc.aio.Channel:
    """A channel to another Herald service at ``target``, direct (never through a proxy
    from the environment), that tries to reconnect at least once a second while the
    service is away. Over TLS with ``tls`` (else plaintext), renewed as its files
    change when they are to be read again (``renewing_channel.py``); with ``key``,
    every call carries ``authorization: Bearer <key>``."""
    options = RECONNECT_OPTIONS + NO_PROXY_OPTIONS
    interceptors = [BearerKey(key)] if key else None
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    if tls.files is not None and tls.files.every_seconds > 0:
        return RenewingChannel(target, tls, options, interceptors)
    return grpc.aio.secure_channel(
        target, tls.credentials(), options=options, interceptors=interceptors
    )


class BearerKey(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds ``authorization: Bearer <key>`` to every unary call of a channel (Herald's
    services have no other kind), next to the metadata the call has."""

    def __init__(self, key: str) -> None:
        self._header = ("authorization", f"Bearer {key}")

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Calls on with the key among the call's metadata."""
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()), self._header)
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            metadata,
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)
