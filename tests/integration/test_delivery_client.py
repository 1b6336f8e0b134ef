"""The delivery HTTP client against a real receiver on loopback, and its SSRF guard.

Needs no PostgreSQL or Kafka: only sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from herald.services.webhooks.http import CaresLookup, DeliveryClient, SSRFGuard, is_public
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.integration

LOOPBACK = ["127.0.0.0/8", "::1/128"]
BODY = b'{"id": "evt_1", "type": "message.created"}'


class DnsServer(asyncio.DatagramProtocol):
    """A DNS server on loopback (UDP): the names of ``known`` resolve (IPv4), any other
    name is "no such name" (``answer``) or never answered; counts the queries."""

    def __init__(self, answer: bool, known: dict[str, str] | None = None) -> None:
        self.answer = answer
        self.known = known or {}
        self.queries = 0
        self.address = ""
        self._transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> DnsServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        self.address = f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._transport is not None
        self._transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries += 1
        name, end = _question(data)
        qtype = int.from_bytes(data[end - 4 : end - 2], "big")
        address = self.known.get(name)
        if address is None and not self.answer:
            return
        rcode = 0 if address is not None else 3  # NOERROR, NXDOMAIN
        answers = b""
        if address is not None and qtype == 1:  # an A record (AAAA: none, NOERROR)
            rdata = ipaddress.IPv4Address(address).packed
            answers = b"\xc0\x0c" + (1).to_bytes(2, "big") * 2 + (60).to_bytes(4, "big")
            answers += len(rdata).to_bytes(2, "big") + rdata
        header = data[:2] + bytes([0x80 | (data[2] & 0x01), 0x80 | rcode])
        header += (1).to_bytes(2, "big") + (1 if answers else 0).to_bytes(2, "big") + bytes(4)
        assert self._transport is not None
        self._transport.sendto(header + data[12:end] + answers, addr)


def _question(data: bytes) -> tuple[str, int]:
    """A query's name, and where its question ends (after its type and class)."""
    labels, at = [], 12
    while data[at]:
        labels.append(data[at + 1 : at + 1 + data[at]].decode())
        at += 1 + data[at]
    return ".".join(labels).lower(), at + 5


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r


@pytest.fixture
async def client() -> AsyncIterator[DeliveryClient]:
    """A client that may reach loopback (where the receiver is); 1 s timeout."""
    c = DeliveryClient(timeout=1.0, allowed_networks=LOOPBACK)
    yield c
    await c.aclose()


@pytest.fixture
async def guarded() -> AsyncIterator[DeliveryClient]:
    """A client with the default policy: public addresses only."""
    c = DeliveryClient(timeout=1.0)
    yield c
    await c.aclose()


async def test_a_post_arrives_with_its_body_and_headers(
    receiver: Receiver, client: DeliveryClient
) -> None:
    headers = {"X-Herald-Signature": "sha256=ab", "User-Agent": "evil", "content-type": "x/y"}
    result = await client.post(receiver.url(), BODY, headers)
    assert (result.ok, result.status_code, result.error, result.body) == (True, 200, None, "OK")
    assert result.elapsed > 0
    [got] = receiver.received("/hook")
    assert (got.method, got.path, got.body) == ("POST", "/hook", BODY)
    assert got.headers["x-herald-signature"] == "sha256=ab"
    assert got.headers["user-agent"] == "Herald-Webhooks/0.1"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["content-length"] == str(len(BODY))


async def test_connections_are_kept_alive(receiver: Receiver, client: DeliveryClient) -> None:
    for _ in range(3):
        assert (await client.post(receiver.url(), BODY, {})).ok
    await receiver.wait_for(3)
    assert receiver.connections == 1  # one connection served all three


async def test_2xx_is_ok_and_500_keeps_a_truncated_body(
    receiver: Receiver, client: DeliveryClient
) -> None:
    receiver.script("/hook", Reply(204, b""), Reply(500, "ошибка ".encode() * 2000))
    no_content = await client.post(receiver.url(), BODY, {})
    assert (no_content.ok, no_content.status_code, no_content.body) == (True, 204, "")
    failed = await client.post(receiver.url(), BODY, {})
    assert (failed.ok, failed.status_code, failed.error) == (False, 500, None)
    assert len(failed.body) == 1024
    assert failed.body.startswith("ошибка ошибка")


async def test_a_body_with_nul_bytes_is_kept_as_storable_text(
    receiver: Receiver, client: DeliveryClient
) -> None:
    # PostgreSQL's text cannot hold NUL: such a body had failed the outcome's write
    receiver.script("/hook", Reply(500, b"bad\x00body\xff"))
    failed = await client.post(receiver.url(), BODY, {})
    assert (failed.status_code, failed.body) == (500, "bad\ufffdbody\ufffd")


async def test_retry_after_is_parsed(receiver: Receiver, client: DeliveryClient) -> None:
    receiver.script(
        "/hook",
        Reply(429, headers={"Retry-After": "7"}),
        Reply(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        Reply(429, headers={"Retry-After": "soon"}),
    )
    results = [await client.post(receiver.url(), BODY, {}) for _ in range(3)]
    assert [r.status_code for r in results] == [429, 503, 429]
    assert [r.retry_after for r in results] == [7.0, 0.0, None]  # a past date is "now"


async def test_a_slow_receiver_is_a_timeout(receiver: Receiver, client: DeliveryClient) -> None:
    receiver.script("/slow", Reply(delay=3))
    result = await client.post(receiver.url("/slow"), BODY, {})
    assert (result.error, result.status_code, result.ok) == ("timeout", None, False)
    assert 0.9 < result.elapsed < 2.5
    assert len(receiver.received("/slow")) == 1
    assert (await client.post(receiver.url(), BODY, {})).ok  # the client is still fine


async def test_a_closed_port_is_a_connection_error(client: DeliveryClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        result = await client.post(f"http://127.0.0.1:{port}/hook", BODY, {})
    assert (result.error, result.status_code) == ("connection_error", None)
    assert result.detail


async def test_an_unresolvable_host_is_a_connection_error() -> None:
    # Not left to the machine's DNS: without a network it may time out instead. A DNS
    # server of the test's own answers "no such name" (NXDOMAIN) to everything.
    async with DnsServer(answer=True) as dns:
        client = DeliveryClient(timeout=2.0, lookup=CaresLookup([dns.address]))
        try:
            result = await client.post("http://no-such-host.invalid/hook", BODY, {})
        finally:
            await client.aclose()
    assert result.error == "connection_error", result
    assert "no-such-host.invalid" in result.detail
    assert "Domain name not found" in result.detail, result.detail


async def test_names_whose_dns_never_answers_hold_up_no_other_delivery(
    receiver: Receiver,
) -> None:
    """64 webhooks on domains the DNS server never answers for (a tenant's, say), each
    attempt waiting out its timeout: webhooks whose names resolve (from the same DNS
    server, and from /etc/hosts) are delivered at once meanwhile, and the event loop's
    thread pool, which the C library's lookups used to hold a thread each of, stays
    free."""
    async with DnsServer(answer=False, known={"hooks.example.net": "127.0.0.1"}) as dns:
        client = DeliveryClient(
            timeout=3.0, allowed_networks=LOOPBACK, lookup=CaresLookup([dns.address])
        )
        try:
            hung = [
                asyncio.ensure_future(client.post(f"http://h{n}.example.com/hook", BODY, {}))
                for n in range(64)
            ]
            await asyncio.sleep(0.3)  # every lookup is out
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.wait_for(loop.run_in_executor(None, lambda: None), 1)
            result = await client.post(receiver.url(host="hooks.example.net"), BODY, {})
            assert result.ok, result
            assert (await client.post(receiver.url(host="localhost"), BODY, {})).ok
            assert loop.time() - started < 1, "not queued behind the hung lookups"
            assert dns.queries >= 64
            outcomes = await asyncio.gather(*hung)
            assert {r.error for r in outcomes} == {"timeout"}
        finally:
            await client.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "ftp://example.com/x",
        "http:///nohost",
        "http://example.com:99999/",
        "http://[::1/",
        "/hook",
    ],
)
async def test_invalid_urls(guarded: DeliveryClient, url: str) -> None:
    result = await guarded.post(url, BODY, {})
    assert result.error == "invalid_url", result


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_is_refused_by_default_and_nothing_is_sent(
    receiver: Receiver, guarded: DeliveryClient, host: str
) -> None:
    result = await guarded.post(receiver.url(host=host), BODY, {})
    assert (result.error, result.status_code) == ("ssrf_refused", None)
    assert f"{host} resolves to " in result.detail
    assert "a loopback address" in result.detail  # localhost may also resolve to ::1
    await asyncio.sleep(0.05)
    assert receiver.received() == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata: link-local
        "http://100.64.0.1/",  # CGNAT
        "http://10.1.2.3/",
        "http://192.168.0.1:8080/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00::1]/",  # unique local
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://2130706433/",  # 127.0.0.1 as a decimal number
    ],
)
async def test_non_public_addresses_are_refused(guarded: DeliveryClient, url: str) -> None:
    result = await guarded.post(url, BODY, {})
    assert result.error == "ssrf_refused", result


async def test_allowed_networks_and_allow_private(receiver: Receiver) -> None:
    for c in (DeliveryClient(allowed_networks=["127.0.0.0/8"]), DeliveryClient(allow_private=True)):
        try:
            assert (await c.post(receiver.url(), BODY, {})).ok
        finally:
            await c.aclose()
    assert len(receiver.received()) == 2


async def test_a_cookie_a_receiver_sets_is_not_sent_again(
    receiver: Receiver, client: DeliveryClient
) -> None:
    """One client serves every tenant's webhooks: a cookie set in answer to one POST (one
    tenant's receiver session, say) must not ride along with the next POST to that host,
    which may be another tenant's."""
    receiver.script("/a", Reply(200, b"OK", {"Set-Cookie": "session=tenant-a; Path=/"}))
    assert (await client.post(receiver.url("/a", host="localhost"), BODY, {})).ok
    assert (await client.post(receiver.url("/b", host="localhost"), BODY, {})).ok
    [second] = receiver.received("/b")
    assert "cookie" not in second.headers


async def test_redirects_are_not_followed(receiver: Receiver, client: DeliveryClient) -> None:
    receiver.script("/hook", Reply(302, b"", {"Location": receiver.url("/target")}))
    result = await client.post(receiver.url(), BODY, {})
    assert (result.status_code, result.ok, result.error) == (302, False, None)
    assert result.detail == (
        f"redirect not followed (Location: {receiver.url('/target')}): point the webhook's "
        "url at the final address"
    )
    await asyncio.sleep(0.05)
    assert receiver.received("/target") == []
    receiver.script("/hook", Reply(500, b"", {"Location": receiver.url("/target")}))
    assert (await client.post(receiver.url(), BODY, {})).detail == "", "only a 3xx's"


async def test_the_checked_address_is_the_one_connected_to(receiver: Receiver) -> None:
    """Only the guard resolves: a name only it can resolve still reaches the receiver."""
    lookups: list[str] = []

    class OnlyHere:
        async def __call__(
            self, host: str, port: int, family: socket.AddressFamily
        ) -> list[tuple[int, str]]:
            lookups.append(host)
            return [(socket.AF_INET, "127.0.0.1")] if host == "hooks.test" else []

        async def close(self) -> None:
            pass

    client = DeliveryClient(timeout=1.0, allowed_networks=LOOPBACK, lookup=OnlyHere())
    try:
        result = await client.post(receiver.url(host="hooks.test"), BODY, {})
    finally:
        await client.aclose()
    assert result.ok, result
    assert lookups == ["hooks.test"]  # then 127.0.0.1 itself: nothing to resolve
    assert receiver.received()[0].headers["host"] == f"hooks.test:{receiver.port}"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::808:808", True),  # NAT64 of a public address
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("100.127.255.254", False),
        ("0.0.0.0", False),
        ("224.0.0.251", False),
        ("255.255.255.255", False),
        ("240.0.0.1", False),
        ("::", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("fd12:3456::1", False),
        ("fec0::1", False),  # site-local: routed inside some networks still
        ("3fff::1", False),  # documentation (RFC 9637)
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:100.64.0.1", False),
        ("::ffff:169.254.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
    ],
)
def test_is_public(address: str, public: bool) -> None:
    assert is_public(address) is public


def test_the_guard_names_the_reason_and_honours_allowed_networks() -> None:
    guard = SSRFGuard(allow_private=False, allowed=["10.0.0.0/8"])
    guard.check("internal", ipaddress.ip_address("10.1.2.3"))
    guard.check("internal", ipaddress.ip_address("::ffff:10.1.2.3"))
    with pytest.raises(Exception, match=r"resolves to 100\.64\.0\.1, a shared \(CGNAT\) address"):
        guard.check("x", ipaddress.ip_address("100.64.0.1"))
    with pytest.raises(Exception, match="loopback"):
        guard.check("x", ipaddress.ip_address("::ffff:127.0.0.1"))


def tls_files(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for a self-signed certificate valid for "localhost" only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cafile=tmp / "cert.pem")
    return server, client


async def test_tls_uses_the_url_host_name_while_connecting_to_the_checked_ip(
    tmp_path: Path,
) -> None:
    """SNI and certificate verification are about "localhost", not 127.0.0.1."""
    server_ctx, client_ctx = tls_files(tmp_path)
    names: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, name, _ctx: names.append(name)
    client = DeliveryClient(timeout=2.0, allowed_networks=LOOPBACK, ssl_context=client_ctx)
    try:
        async with Receiver(ssl=server_ctx) as r:
            result = await client.post(r.url(host="localhost"), BODY, {})
            assert result.ok, result
            assert names == ["localhost"]
            by_ip = await client.post(r.url(host="127.0.0.1"), BODY, {})
            assert by_ip.error == "tls_error", by_ip  # the certificate does not name the IP
            assert "certificate verify failed" in by_ip.detail
            untrusting = DeliveryClient(timeout=2.0, allowed_networks=LOOPBACK)
            try:
                other = await untrusting.post(r.url(host="localhost"), BODY, {})
                assert other.error == "tls_error", other  # self-signed: not in certifi
            finally:
                await untrusting.aclose()
            assert len(r.received()) == 1
    finally:
        await client.aclose()
