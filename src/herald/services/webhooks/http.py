"""The delivery HTTP client: one pooled ``aiohttp`` session behind an SSRF guard.

Webhook URLs are chosen by tenants, so without a guard they could make Herald POST to
its own loopback services, the cloud metadata endpoint or the private network. The
guard is the session's resolver, the one place every host name passes through on its
way to a connection: it resolves the name itself, refuses unless every address is
public, and hands the connector exactly the addresses it checked, so nothing is
resolved again (DNS rebinding gets nowhere). An IP literal never reaches a resolver;
it is checked before the request (a literal cannot rebind).

Names are resolved by c-ares (``aiodns``) on the event loop, with the system's
``/etc/resolv.conf`` and ``/etc/hosts``, not by the C library in the loop's thread pool:
there a tenant's webhooks on domains whose DNS never answers held a thread each until
the resolver gave up, and every other tenant's lookups queued behind them.

aiohttp rather than httpx: on this machine a bare httpx loop makes about 800 POSTs/s on
one connection and about 220/s with 64 (its pool degrades with concurrency), where
aiohttp makes about 3,900 and 13,000 (measured with ``bench/sink.py``).
"""

from __future__ import annotations

import email.utils
import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

import aiodns
import aiohttp
import certifi
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from herald.runtime.deadlines import Deadlines

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_ULA = ipaddress.IPv6Network("fc00::/7")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix
# Site-local (deprecated, still routed inside some networks) and the documentation prefix
# of RFC 9637, neither of which Python 3.11's ipaddress counts as non-global.
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")
_DOCUMENTATION_V6 = ipaddress.IPv6Network("3fff::/20")
_BODY_BYTES = 4096  # read at most this much of a response from the wire
_BODY_CHARS = 1024  # and keep at most this much of it
_LOCATION_CHARS = 300  # of a 3xx's Location, in the delivery log
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
        if address in _SITE_LOCAL:
            return "site-local"
        if address in _DOCUMENTATION_V6:
            return "documentation"
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


class Lookup(Protocol):
    """Resolves a host name: each address found, as (family, address text)."""

    async def __call__(
        self, host: str, port: int, family: socket.AddressFamily
    ) -> list[tuple[int, str]]: ...

    async def close(self) -> None: ...


class CaresLookup:
    """Host names resolved by c-ares on the event loop (see the module docstring):
    a lookup holds no thread, and one given up on (its attempt timed out) costs nothing
    while c-ares waits out its own timeout. ``nameservers``: instead of resolv.conf's."""

    def __init__(self, nameservers: Sequence[str] | None = None) -> None:
        self._nameservers = nameservers
        self._resolver: aiodns.DNSResolver | None = None

    async def __call__(
        self, host: str, port: int, family: socket.AddressFamily
    ) -> list[tuple[int, str]]:
        if self._resolver is None:  # made on the running loop
            self._resolver = aiodns.DNSResolver(self._nameservers)
        try:
            found = await self._resolver.getaddrinfo(
                host, family=family, port=port, type=socket.SOCK_STREAM
            )
        except aiodns.error.DNSError as exc:
            # An OSError, as the C library's would be: aiohttp reports a connection error.
            message = exc.args[1] if len(exc.args) > 1 else str(exc)
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: {message}") from exc
        return [(node.family, _address_text(node.addr)) for node in found.nodes]

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None


def _address_text(addr: tuple[object, ...]) -> str:
    """A c-ares node's address as text (an IPv6 one with its scope, when it has one)."""
    text = addr[0].decode() if isinstance(addr[0], bytes) else str(addr[0])
    scope = addr[3] if len(addr) > 3 else 0
    return f"{text}%{scope}" if scope else text


class SSRFRefused(Exception):
    """A connection refused by the guard. Not an OSError, so aiohttp lets it through
    unchanged and the client can tell it from ordinary connection failures."""


class SSRFGuard(AbstractResolver):
    """An aiohttp resolver that only yields vetted addresses (see the module docstring)."""

    def __init__(
        self, *, allow_private: bool, allowed: Sequence[str], lookup: Lookup | None = None
    ) -> None:
        self._lookup: Lookup = lookup or CaresLookup()
        self._allow_private = allow_private
        self._allowed = [ipaddress.ip_network(n, strict=False) for n in allowed]
        self._literals_ok: set[str] = set()  # hosts check_literal let through

    def check(self, host: str, address: IPAddress) -> None:
        """Raises SSRFRefused unless ``host``'s resolved ``address`` may be connected to."""
        mapped = getattr(address, "ipv4_mapped", None) or address  # ::ffff:10.0.0.1 is 10.0.0.1
        if self._allow_private or any(address in n or mapped in n for n in self._allowed):
            return
        if (reason := non_public_reason(address)) is not None:
            raise SSRFRefused(f"{host} resolves to {address}, a {reason} address; refused")

    def check_literal(self, host: str) -> None:
        """Checks ``host`` when it is an IP address, in any form the C library accepts
        (``2130706433`` and ``127.1`` are 127.0.0.1 to it). Hosts seen before are
        answered from memory: the verdict on a literal never changes."""
        if host in self._literals_ok:
            return
        self._check_literal(host)
        if len(self._literals_ok) < 100_000:
            self._literals_ok.add(host)

    def _check_literal(self, host: str) -> None:
        try:
            address: IPAddress = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            try:
                address = ipaddress.IPv4Address(socket.inet_aton(host))
            except OSError:
                return  # a name: the resolver checks what it resolves to
        self.check(host, address)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._lookup(host, port, family)
        # An IPv6 address may carry a scope ("fe80::1%2"); ip_address keeps it.
        addresses = [(fam, ipaddress.ip_address(text)) for fam, text in found]
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: no address")
        for _family, address in addresses:  # all of them, before connecting to any
            self.check(host, address)
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        # The checked IP, never the name, is connected to; TLS (SNI, certificate
        # checks) still gets the URL's host name from "hostname".
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=fam,
                proto=socket.IPPROTO_TCP,
                flags=flags,
            )
            for fam, address in addresses
        ]

    async def close(self) -> None:
        await self._lookup.close()


class AttemptResult(NamedTuple):
    """The outcome of one POST; ``error`` is set when there was no usable response (a
    tuple: thousands are made a second)."""

    status_code: int | None  # None when there was no HTTP response
    body: str  # at most 1024 characters of the response body
    retry_after: float | None  # seconds, from a parseable Retry-After header
    elapsed: float  # seconds from sending to the response headers (or the failure)
    error: str | None  # timeout, connection_error, ssrf_refused, invalid_url, tls_error
    # Why, when error is set (never secrets or our header values); for a 3xx, the
    # redirect not followed and where it pointed.
    detail: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _redirect(response: aiohttp.ClientResponse) -> str:
    """For a 3xx, the delivery log's word on it: redirects are not followed (a public URL
    could send the POST to an internal one), so the log says where it pointed."""
    if not 300 <= response.status < 400:
        return ""
    location = response.headers.get("Location")
    where = f" (Location: {storable(location[:_LOCATION_CHARS])})" if location else ""
    return f"redirect not followed{where}: point the webhook's url at the final address"


def storable(text: str) -> str:
    """``text`` as the delivery log can keep it: PostgreSQL's text cannot hold a NUL
    character, so each becomes U+FFFD, as undecodable bytes already do."""
    return text.replace("\x00", "\ufffd")


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


def _classify(exc: BaseException, timeout: float) -> tuple[str, str]:
    """(error, detail) for why an attempt got no response."""
    if isinstance(exc, SSRFRefused):
        return "ssrf_refused", str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout", f"no response within {timeout:g} s"
    cause: BaseException | None = exc
    while cause is not None:  # ClientConnectorCertificateError <- ssl.SSLError
        if isinstance(cause, ssl.SSLError | aiohttp.ClientSSLError):
            return "tls_error", str(cause)
        cause = cause.__cause__ or cause.__context__
    # After TLS: a certificate verification error is a ValueError too.
    if isinstance(exc, aiohttp.InvalidURL | ValueError):
        return "invalid_url", str(exc) or "not a valid URL"
    return "connection_error", f"{type(exc).__name__}: {exc}".removesuffix(": ")


def _target(url: str) -> URL:
    """The URL to POST to; ValueError unless it is an absolute http(s) URL with a host."""
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("not an http(s) URL with a valid host")
    if not 0 < (parsed.port or 80) < 65536:
        raise ValueError(f"port {parsed.port} is out of range")
    return parsed


# Connections the client keeps open at most (in use or idle), at the least.
DEFAULT_CONNECTIONS = 500


class DeliveryClient:
    """POSTs webhook bodies. Never raises for network trouble: failures are results."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        allow_private: bool = False,
        allowed_networks: Sequence[str] = (),
        user_agent: str = "Herald-Webhooks/0.1",
        max_connections: int = DEFAULT_CONNECTIONS,
        ssl_context: ssl.SSLContext | None = None,
        lookup: Lookup | None = None,
    ) -> None:
        """``ssl_context`` replaces the default (certifi) one, e.g. for a private CA;
        ``lookup`` the resolver of host names (default: c-ares, see the module docstring).

        The session is made on first use: aiohttp wants a running event loop.
        """
        self._timeout = timeout
        # One sweep bounds every attempt (a loop timer each cost ~10% of an attempt).
        self._deadlines = Deadlines(timeout, resolution=min(0.1, timeout / 10))
        self._user_agent = user_agent
        self.max_connections = max_connections
        self._ssl = ssl_context or ssl.create_default_context(cafile=certifi.where())
        self.guard = SSRFGuard(allow_private=allow_private, allowed=allowed_networks, lookup=lookup)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                limit_per_host=0,
                keepalive_timeout=4.0,  # below common server idle timeouts (Node.js: 5 s)
                resolver=self.guard,
                ssl=self._ssl,
                family=socket.AF_UNSPEC,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Bounded by post() as a whole; no per-phase timeouts of aiohttp's.
                timeout=aiohttp.ClientTimeout(total=None),
                # No proxies or .netrc from the environment: a proxy would make the
                # connection (and so the guard's check) be about the proxy, not the target.
                trust_env=False,
                # No cookies kept: the session is shared by every tenant's webhooks, so a
                # cookie one receiver set would go with another tenant's POSTs to its host.
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                headers={"User-Agent": self._user_agent, "Accept-Encoding": "identity"},
            )
        return self._session

    @property
    def timeout(self) -> float:
        """Seconds an attempt may take in all."""
        return self._timeout

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        """One attempt, bounded as a whole (connect, send, headers, body) by ``timeout``."""
        started = time.monotonic()
        merged = {k: v for k, v in headers.items() if k.lower() not in _NEVER_FROM_CALLER}
        merged |= {"User-Agent": self._user_agent, "Content-Type": "application/json"}
        response: aiohttp.ClientResponse | None = None
        elapsed = 0.0
        prefix = bytearray()
        try:
            target = _target(url)
            assert target.host is not None
            self.guard.check_literal(target.host)
            with self._deadlines.within():  # one deadline for all of it
                response = await self._client().post(
                    target, data=body, headers=merged, allow_redirects=False
                )
                elapsed = time.monotonic() - started
                content = response.content
                while len(prefix) < _BODY_BYTES and not content.at_eof():
                    chunk = await content.readany()
                    if not chunk:
                        break
                    prefix += chunk
        except (TimeoutError, SSRFRefused, ValueError, aiohttp.ClientError, OSError) as exc:
            if response is None:
                error, detail = _classify(exc, self._timeout)
                elapsed = time.monotonic() - started
                return AttemptResult(None, "", None, elapsed, error, storable(detail))
            # The status is the answer; the body is only for the delivery log, so a
            # slow or broken body keeps what arrived rather than failing the attempt.
        finally:
            if response is not None:
                if response.content.at_eof():
                    response.release()  # the connection goes back to the pool
                else:
                    response.close()  # the rest is not read: the connection is dropped
        assert response is not None
        text = storable(prefix[:_BODY_BYTES].decode("utf-8", errors="replace")[:_BODY_CHARS])
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return AttemptResult(response.status, text, retry_after, elapsed, None, _redirect(response))

    async def aclose(self) -> None:
        await self._deadlines.aclose()
        if self._session is not None:
            await self._session.close()
        await self.guard.close()
