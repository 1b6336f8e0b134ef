"""Two tiny Kafka protocol probes used as readiness checks.

Speaking the wire protocol directly (old, non-flexible request versions that
every broker since 1.0 accepts) keeps the dev environment free of client
library dependencies and proves the broker *answers*, not just that a port
is open.
"""

from __future__ import annotations

import socket
import struct

_METADATA = 3
_SASL_HANDSHAKE = 17
_CLIENT_ID = b"herald-devenv"


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def _roundtrip(
    host: str, port: int, api_key: int, version: int, body: bytes, *, timeout: float
) -> bytes:
    """Send one request (header v1) and return the response after its correlation id."""
    correlation_id = 1
    header = struct.pack(">hhih", api_key, version, correlation_id, len(_CLIENT_ID)) + _CLIENT_ID
    payload = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        response = _recv_exact(sock, size)
    (got,) = struct.unpack_from(">i", response, 0)
    if got != correlation_id:
        raise ConnectionError(f"unexpected correlation id {got}")
    return response[4:]


def metadata_broker_count(host: str, port: int, timeout: float = 2.0) -> int:
    """Return how many live brokers a Metadata v1 request reports."""
    # v1: an empty topic array asks for no topics (null would mean all of them).
    response = _roundtrip(host, port, _METADATA, 1, struct.pack(">i", 0), timeout=timeout)
    (count,) = struct.unpack_from(">i", response, 0)
    return int(count)


def sasl_mechanisms(
    host: str, port: int, mechanism: str, timeout: float = 2.0
) -> tuple[int, list[str]]:
    """Send SaslHandshake v1; return (error code, mechanisms the listener enables)."""
    name = mechanism.encode()
    body = struct.pack(">h", len(name)) + name
    response = _roundtrip(host, port, _SASL_HANDSHAKE, 1, body, timeout=timeout)
    error, count = struct.unpack_from(">hi", response, 0)
    offset = 6
    mechanisms: list[str] = []
    for _ in range(count):
        (length,) = struct.unpack_from(">h", response, offset)
        offset += 2
        mechanisms.append(response[offset : offset + length].decode())
        offset += length
    return int(error), mechanisms
