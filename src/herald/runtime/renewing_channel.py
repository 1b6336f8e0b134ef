"""A channel to another Herald service whose TLS is renewed without a restart.

grpc's Python channels take their credentials once. So the files of a service's own
calls (``GRPC_TLS_CA_FILE``, ``GRPC_TLS_CLIENT_CERT_FILE``, ``GRPC_TLS_CLIENT_KEY_FILE``)
are read again every ``GRPC_TLS_RELOAD_SECONDS``, and a changed set that is good builds
a new channel: every call from then on goes through it (a new connection, a new
handshake), while the calls in flight on the old one finish there before it closes
(``RETIRE_GRACE_SECONDS`` at most).

A changed set that is not good (a file unreadable or not PEM, a key that is not the
certificate's, as when a renewal has written the certificate but not yet its key; a
certificate out of its dates; a CA file all of whose certificates expired) is not
used: the calls keep the set in force, logged ``tls.client_refused`` once per problem
and counted; the next good version is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
import structlog
from prometheus_client import Counter

from herald.runtime.off_loop import in_daemon_thread
from herald.runtime.refusals import Refusals
from herald.runtime.tls import ClientTls, leaf_fields, read_client_tls

log = structlog.get_logger("herald.tls")

RELOADS = Counter(
    "tls_client_reloads",
    "Changes of the TLS files of a service's calls to the other Herald services, by "
    "outcome: applied, or refused (the calls keep the files in force).",
    ["outcome"],
)

# How long a replaced channel's calls in flight may take before it closes: beyond any
# deadline Herald's calls between services set.
RETIRE_GRACE_SECONDS = 60.0

_Options = Sequence[tuple[str, Any]]
_Key = tuple[str, Any, Any, bool]


class RenewingChannel(grpc.aio.Channel):
    """A secure channel to ``target`` that is built again when its TLS files change.
    Every unary callable made from it (the stubs') calls through the channel in force
    at each call. Streaming callables stay on the channel they were made on (Herald's
    services call one another with unary RPCs only)."""

    def __init__(
        self,
        target: str,
        tls: ClientTls,
        options: _Options,
        interceptors: Sequence[grpc.aio.ClientInterceptor] | None,
    ) -> None:
        if tls.files is None or tls.files.every_seconds <= 0:
            raise ValueError("a RenewingChannel needs TLS files to read again")
        self._target = target
        self._tls = tls
        self._options = options
        self._interceptors = interceptors
        self._channel = self._build(tls)
        self._callables: dict[_Key, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        # Replaced channels, closing once their calls in flight are done.
        self._retiring: dict[grpc.aio.Channel, asyncio.Task[None]] = {}
        self._refusals = Refusals(
            RELOADS,
            log,
            "tls.client_refused",
            "calls keep the TLS files in force until these are good again",
            target=target,
        )
        self._poller = asyncio.get_running_loop().create_task(
            self._poll(tls.files.every_seconds), name=f"tls-files {target}"
        )

    def _build(self, tls: ClientTls) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(
            self._target,
            tls.credentials(),
            options=self._options,
            interceptors=self._interceptors,
        )

    async def _poll(self, every_seconds: float) -> None:
        while True:
            await asyncio.sleep(every_seconds)
            try:
                await self.poll_once()
            except Exception as exc:
                self._refusals.refused(f"{type(exc).__name__}: {exc}")

    async def poll_once(self) -> None:
        """Reads the files once (off the event loop); takes them when they changed and
        are good."""
        files = self._tls.files
        assert files is not None
        try:
            tls = await in_daemon_thread(lambda: read_client_tls(files), "tls-files")
        except ValueError as exc:
            self._refusals.refused(str(exc))
            return
        self._refusals.cleared()
        if tls == self._tls:
            return
        old, self._channel = self._channel, self._build(tls)
        self._callables = {}
        ca_changed = tls.ca != self._tls.ca
        self._tls = tls
        self._retire(old)
        RELOADS.labels("applied").inc()
        leaf = leaf_fields(tls.cert_chain) if tls.cert_chain else {}  # no client certificate
        log.info("tls.client_reloaded", target=self._target, ca_changed=ca_changed, **leaf)

    def _retire(self, channel: grpc.aio.Channel) -> None:
        task = asyncio.get_running_loop().create_task(channel.close(RETIRE_GRACE_SECONDS))
        self._retiring[channel] = task
        task.add_done_callback(lambda _: self._retiring.pop(channel, None))

    def _callable(self, key: _Key) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        found = self._callables.get(key)
        if found is None:
            method, serializer, deserializer, registered = key
            found = self._channel.unary_unary(
                method,
                serializer,
                deserializer,
                _registered_method=registered,  # type: ignore[call-arg]  # stubs lag
            )
            self._callables[key] = found
        return found

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        """A callable that calls through the channel in force at each call."""
        key = (method, request_serializer, response_deserializer, bool(_registered_method))
        return _Current(self, key)

    def unary_stream(
        self, *args: Any, **kwargs: Any
    ) -> grpc.aio.UnaryStreamMultiCallable[Any, Any]:
        return self._channel.unary_stream(*args, **kwargs)

    def stream_unary(
        self, *args: Any, **kwargs: Any
    ) -> grpc.aio.StreamUnaryMultiCallable[Any, Any]:
        return self._channel.stream_unary(*args, **kwargs)

    def stream_stream(
        self, *args: Any, **kwargs: Any
    ) -> grpc.aio.StreamStreamMultiCallable[Any, Any]:
        return self._channel.stream_stream(*args, **kwargs)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    async def close(self, grace: float | None = None) -> None:
        """Stops reading the files and closes the channel in force and any replaced
        one still finishing its calls."""
        self._poller.cancel()
        await asyncio.gather(self._poller, return_exceptions=True)
        retiring = dict(self._retiring)
        for task in retiring.values():
            task.cancel()
        await asyncio.gather(*retiring.values(), return_exceptions=True)
        # A replaced channel closes with the rest, within the same grace.
        await asyncio.gather(self._channel.close(grace), *(old.close(grace) for old in retiring))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.close()


class _Current(grpc.aio.UnaryUnaryMultiCallable[Any, Any]):
    """One RPC of a RenewingChannel, called through its channel in force."""

    def __init__(self, owner: RenewingChannel, key: _Key) -> None:
        self._owner = owner
        self._key = key

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> grpc.aio.UnaryUnaryCall[Any, Any]:
        return self._owner._callable(self._key)(
            request,
            timeout=timeout,
            metadata=metadata,
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )
