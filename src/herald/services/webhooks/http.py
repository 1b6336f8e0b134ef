"""The delivery HTTP client: one pooled ``httpx.AsyncClient`` behind an SSRF guard.

Webhook URLs are chosen by tenants, so without a guard they could make Herald POST to
its own loopback services, the cloud metadata endpoint or the private network. The
guard sits in the network backend, the one place every new connection passes through:
it resolves the host itself, refuses unless every address is public, and connects to
the address it checked. Checking the URL beforehand would not do: a second DNS lookup
at connect time could answer differently (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_ULA = ipaddress.IPv6Network("fc00::/7")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix
_BODY_BYTES = 4096  # read at most this much of a response from the wire
_BODY_CHARS = 1024  # and keep at most this much of it
_NEVER_FROM_CALLER = {"user-agent", "content-type", "content-length", "transfer-encoding", "host"}


def non_public_reason(address: IPAddress) -> str | None:
    """Why ``address`` must not be reached ("loopback", "private", ...), None if public.

    IPv6 forms that embed an IPv4 address (IPv4-mapped, 6to4, NAT64) are judged by that
    address, since that is where the packets end up.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = non_public_reason(embedded)
            return None if reason is None else f"{reason} (embedded in IPv6)"
        if address in _ULA:
            return "unique-local"
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address in _CGNAT, "shared (CGNAT)"),
        (address.is_multicast, "multicast"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "special-purpose"),
    )
    return next((reason for failed, reason in checks if failed), None)


def is_public(address: str | IPAddress) -> bool:
    """True when ``address`` is a public unicast address a webhook may be sent to."""
    return non_public_reason(ipaddress.ip_address(address)) is None


class SSRFRefused(Exception):
    """A connection refused by the guard. Not an httpcore error, so httpx lets it through
    unchanged and the client can tell it from ordinary connection failures."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that only connects to vetted addresses."""

    def __init__(
        self, inner: httpcore.AsyncNetworkBackend, *, allow_private: bool, allowed: Sequence[str]
    ) -> None:
        self._inner = inner
        self._allow_private = allow_private
        self._allowed = [ipaddress.ip_network(n, strict=False) for n in allowed]

    def check(self, host: str, address: IPAddress) -> None:
        """Raises SSRFRefused unless ``host``'s resolved ``address`` may be connected to."""
        mapped = getattr(address, "ipv4_mapped", None) or address  # ::ffff:10.0.0.1 is 10.0.0.1
        if self._allow_private or any(address in n or mapped in n for n in self._allowed):
            return
        if (reason := non_public_reason(address)) is not None:
            raise SSRFRefused(f"{host} resolves to {address}, a {reason} address; refused")

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolve(host.strip("[]"), port)
                for address in addresses:  # all of them, before connecting to any
                    self.check(host, address)
                last: Exception | None = None
                for address in addresses:  # in the resolver's preference order
                    try:
                        # The checked IP, never the name: nothing is resolved again. TLS
                        # still gets the URL's host name: httpcore's connection passes
                        # its origin host as server_hostname to start_tls.
                        return await self._inner.connect_tcp(
                            str(address), port, timeout, local_address, socket_options
                        )
                    except httpcore.ConnectError as exc:
                        last = exc
                raise last or httpcore.ConnectError(f"{host} has no addresses")
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connecting to {host} timed out") from exc

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:  # socket.gaierror
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from exc
        # sockaddr[0] may carry an IPv6 scope ("fe80::1%eth0"); ip_address keeps it.
        return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise SSRFRefused("unix sockets are never a webhook target")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The outcome of one POST; ``error`` is set when there was no usable response."""

    status_code: int | None  # None when there was no HTTP response
    body: str  # at most 1024 characters of the response body
    retry_after: float | None  # seconds, from a parseable Retry-After header
    elapsed: float  # seconds from sending to the response headers (or the failure)
    error: str | None  # timeout, connection_error, ssrf_refused, invalid_url, tls_error
    detail: str  # why, when error is set; never contains secrets or header values

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After value: delta-seconds or an HTTP-date (RFC 9110)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _classify(exc: Exception, timeout: float) -> tuple[str, str]:
    """(error, detail) for why an attempt got no response."""
    if isinstance(exc, SSRFRefused):
        return "ssrf_refused", str(exc)
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return "invalid_url", str(exc)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout", f"no response within {timeout:g} s"
    cause: BaseException | None = exc
    while cause is not None:  # httpx.ConnectError <- httpcore.ConnectError <- ssl.SSLError
        if isinstance(cause, ssl.SSLError):
            return "tls_error", str(cause)
        cause = cause.__cause__ or cause.__context__
    return "connection_error", f"{type(exc).__name__}: {exc}".removesuffix(": ")


class DeliveryClient:
    """POSTs webhook bodies. Never raises for network trouble: failures are results."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        allow_private: bool = False,
        allowed_networks: Sequence[str] = (),
        user_agent: str = "Herald-Webhooks/0.1",
        max_connections: int = 500,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context`` replaces the default (certifi) one, e.g. for a private CA."""
        self._timeout = timeout
        self._user_agent = user_agent
        self.guard = GuardedBackend(
            httpcore.AnyIOBackend(), allow_private=allow_private, allowed=allowed_networks
        )
        # httpx 0.28 takes no network backend, so its transport gets a pool built with
        # ours; the transport keeps doing the request conversion and exception mapping.
        transport = httpx.AsyncHTTPTransport()
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=4.0,  # below common server idle timeouts (Node.js: 5 s)
            network_backend=self.guard,
        )
        self._client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,  # a redirect could lead anywhere; 3xx is a failure
            timeout=httpx.Timeout(timeout),
            # No proxies or .netrc from the environment: a proxy would make the
            # connection (and so the guard's check) be about the proxy, not the target.
            trust_env=False,
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        """One attempt, bounded as a whole (connect, send, headers, body) by ``timeout``."""
        started = time.monotonic()
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._send(url, body, headers)
        except (TimeoutError, SSRFRefused, httpx.InvalidURL, httpx.TransportError) as exc:
            error, detail = _classify(exc, self._timeout)
            return AttemptResult(None, "", None, time.monotonic() - started, error, detail)
        elapsed = time.monotonic() - started
        prefix = bytearray()
        try:
            # The status is the answer; the body is only for the delivery log, so a
            # slow or broken body keeps what arrived rather than failing the attempt.
            async with asyncio.timeout_at(deadline):
                async for chunk in response.aiter_bytes():
                    prefix += chunk
                    if len(prefix) >= _BODY_BYTES:
                        break  # the rest is not read: the connection is dropped, not reused
        except (TimeoutError, httpx.HTTPError):
            pass
        finally:
            await response.aclose()
        text = prefix[:_BODY_BYTES].decode("utf-8", errors="replace")[:_BODY_CHARS]
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return AttemptResult(response.status_code, text, retry_after, elapsed, None, "")

    async def _send(self, url: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """Sends the request; returns the response with its headers read, body streaming."""
        parsed = httpx.URL(url)
        # httpx accepts ports above 65535 and percent-encodes bad host characters.
        if parsed.scheme not in ("http", "https") or not parsed.host or b"%" in parsed.raw_host:
            raise httpx.InvalidURL("not an http(s) URL with a valid host")
        if not 0 < (parsed.port or 80) < 65536:
            raise httpx.InvalidURL(f"port {parsed.port} is out of range")
        merged = {k: v for k, v in headers.items() if k.lower() not in _NEVER_FROM_CALLER}
        merged |= {"User-Agent": self._user_agent, "Content-Type": "application/json"}
        request = self._client.build_request("POST", parsed, content=body, headers=merged)
        return await self._client.send(request, stream=True)

    async def aclose(self) -> None:
        await self._client.aclose()
