"""A gRPC port's certificate renewed while the service runs (GRPC_TLS_RELOAD_SECONDS):
new connections get the new certificate with no restart; a half-written renewal or an
expired certificate is not taken. Against ingest started in this process."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from structlog.testing import capture_logs

from tests.conftest import Infra
from tests.integration.test_grpc_tls import event, health, publish, running_ingest
from tests.tls_certs import dated_certificate, port_files, replace_file

pytestmark = pytest.mark.integration

RELOAD = 0.05


def served_serial(port: int) -> int:
    """The serial number of the certificate the port presents to a new connection."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


async def serves(port: int, serial: int) -> None:
    """Waits (at most 5 s) until new connections get the certificate ``serial``."""
    for _ in range(100):
        if await asyncio.to_thread(served_serial, port) == serial:
            return
        await asyncio.sleep(RELOAD)
    raise AssertionError("the renewed certificate was not served within 5 s")


async def test_a_renewed_certificate_is_served_without_a_restart(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    pki, cert, key, renewed_cert, renewed_key = port_files(tmp_path)
    async with running_ingest(
        infra,
        database_url,
        topic,
        grpc_tls_cert_file=str(cert),
        grpc_tls_key_file=str(key),
        grpc_tls_reload_seconds=RELOAD,
    ) as ingest:
        port = ingest.port
        assert await asyncio.to_thread(served_serial, port) == serial_of(pki.server_cert)
        async with grpc.aio.secure_channel(f"localhost:{port}", pki.credentials()) as before:
            assert await health(before) == 1  # SERVING
            with capture_logs() as logs:
                # A renewal caught half way: the new certificate, the old key.
                replace_file(cert, renewed_cert)
                await asyncio.sleep(RELOAD * 6)
                assert await asyncio.to_thread(served_serial, port) == serial_of(pki.server_cert)
                replace_file(key, renewed_key)
                await serves(port, serial_of(renewed_cert))
            [refused] = [e for e in logs if e["event"] == "tls.refused"]
            assert f"{key} is not the key of the certificate in {cert}" in refused["error"]
            [reloaded] = [e for e in logs if e["event"] == "tls.reloaded"]
            assert reloaded["serial"] == format(serial_of(renewed_cert), "x")
            assert (await publish(before, event())).event_id, "an open connection carries on"
        async with grpc.aio.secure_channel(f"localhost:{port}", pki.credentials()) as after:
            assert (await publish(after, event())).event_id, "a new one trusts the renewal too"
        now = datetime.datetime.now(datetime.UTC)
        expired = dated_certificate(
            tmp_path / "expired.crt", now - datetime.timedelta(days=2), now - datetime.timedelta(1)
        )
        with capture_logs() as logs:
            replace_file(key, expired.with_suffix(".key"))
            replace_file(cert, expired)
            await asyncio.sleep(RELOAD * 6)
        assert await asyncio.to_thread(served_serial, port) == serial_of(renewed_cert)
        errors = [e["error"] for e in logs if e["event"] == "tls.refused"]
        assert any("the certificate expired at" in error for error in errors), errors
        with capture_logs() as logs:
            replace_file(cert, b"not a certificate\n")
            await asyncio.sleep(RELOAD * 6)
        assert await asyncio.to_thread(served_serial, port) == serial_of(renewed_cert)
        errors = [e["error"] for e in logs if e["event"] == "tls.refused"]
        assert errors == [f"{cert}: not a PEM certificate"]


async def test_with_reloading_off_the_certificate_read_at_start_stays(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    pki, cert, key, renewed_cert, renewed_key = port_files(tmp_path)
    async with running_ingest(
        infra,
        database_url,
        topic,
        grpc_tls_cert_file=str(cert),
        grpc_tls_key_file=str(key),
        grpc_tls_reload_seconds=0,
    ) as ingest:
        replace_file(cert, renewed_cert)
        replace_file(key, renewed_key)
        await asyncio.sleep(0.3)
        assert await asyncio.to_thread(served_serial, ingest.port) == serial_of(pki.server_cert)
        async with grpc.aio.secure_channel(f"localhost:{ingest.port}", pki.credentials()) as ch:
            assert (await publish(ch, event())).event_id
