"""Binding a service's gRPC address, told apart: a port another process listens on
stops the start at once; a port held only for a while (the local end of a closed
connection in TIME_WAIT) is waited for, quietly."""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable
from typing import Any

import grpc
import structlog

from herald.runtime.settings import StartError

log = structlog.get_logger("herald.server")
BIND_WAIT_SECONDS = 70.0  # longer than TIME_WAIT (60 s on Linux)
_RETRY_SECONDS = 1.0
_SockAddr = tuple[socket.AddressFamily, Any]
_WILDCARDS = frozenset({"0.0.0.0", "::"})  # noqa: S104 (addresses compared, not bound)


# Binding errors no wait mends: the address is not this host's, the port is privileged.
_FATAL = frozenset({errno.EADDRNOTAVAIL, errno.EACCES})


def _bind_error(places: list[_SockAddr]) -> OSError | None:
    """What stops a listener binding ``places`` now, as grpc binds (SO_REUSEADDR, no
    SO_REUSEPORT): one of them in use, or, when none can be bound, an error no wait
    mends (grpc listens where it can: ``localhost`` on a host without IPv6 is 127.0.0.1
    alone); None if nothing does. Probing with a socket of our own keeps grpc's C core
    from logging an error line per try."""
    fatal: OSError | None = None
    bound = False
    for family, sockaddr in places:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return exc
            if exc.errno in _FATAL:
                fatal = fatal or exc
            # Anything else (an address family the kernel lacks, …) is grpc's to skip.
        else:
            bound = True
    return None if bound else fatal


def _listened_on(places: list[_SockAddr]) -> bool:
    """Whether something accepts connections on one of ``places`` (a wildcard
    address is reached through the loopback)."""
    for family, sockaddr in places:
        target = sockaddr
        if sockaddr[0] in _WILDCARDS:
            target = ("127.0.0.1" if family == socket.AF_INET else "::1", *sockaddr[1:])
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                if probe.connect_ex(target) == 0:
                    return True
        except OSError:  # a family the kernel lacks: nothing listens there
            continue
    return False


async def listen(
    server: grpc.aio.Server,
    address: str,
    variable: str,
    credentials: Callable[[], grpc.ServerCredentials] | None = None,
) -> int:
    """Binds ``address`` (the setting ``variable``), TLS only with ``credentials``
    (made afresh for each try: dynamic ones hand their first configuration out once);
    the port bound. A host that does not resolve, an address not on this host, a port
    this user may not bind or one another process listens on stops the start at once
    naming ``variable``. A port taken without a listener is waited for up to
    BIND_WAIT_SECONDS: a fixed port can be the local end of an outgoing connection in
    TIME_WAIT (5005x lies in Linux's ephemeral range), which holds it for up to 60 s."""
    host, _, port_text = address.rpartition(":")
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(host.strip("[]") or None, port_text, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise StartError(f"{variable}: cannot listen on {address}: {exc}") from None
    places: list[_SockAddr] = list(dict.fromkeys((f, a) for f, _, _, _, a in found))
    deadline = time.monotonic() + BIND_WAIT_SECONDS
    said = False
    while True:
        port = 0
        error = await asyncio.to_thread(_bind_error, places)
        if error is not None and error.errno in _FATAL:
            # Waited for 70 s, then called "in use": an address not on this host (a
            # typo, a stale pod IP) or a port below 1024 is no better after a wait.
            raise StartError(f"{variable}: cannot listen on {address}: {error.strerror}")
        if address.endswith(":0") or error is None:
            try:
                port = (
                    server.add_secure_port(address, credentials())
                    if credentials is not None
                    else server.add_insecure_port(address)
                )
            except RuntimeError:
                port = 0
        if port:
            if said:
                log.info("server.address_free", address=address)
            return port
        if address.endswith(":0"):
            raise StartError(f"{variable}: cannot listen on {address}")
        if await asyncio.to_thread(_listened_on, places):
            raise StartError(
                f"{variable}: cannot listen on {address}: the port is in use (another "
                "process listens on it)"
            )
        if time.monotonic() > deadline:
            raise StartError(
                f"{variable}: cannot listen on {address}: the port is in use (waited "
                f"{BIND_WAIT_SECONDS:.0f} s)"
            )
        if not said:
            log.warning(
                "server.address_in_use",
                address=address,
                detail="no process listens on it (a closed connection's TIME_WAIT?): "
                f"waiting up to {BIND_WAIT_SECONDS:.0f} s",
            )
            said = True
        await asyncio.sleep(_RETRY_SECONDS)
