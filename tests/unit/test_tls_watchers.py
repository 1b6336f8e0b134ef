"""The workers that read TLS files again (the port's, and the calls' between services)
outlive an unexpected error while reading them: it is logged as a refusal, and the next
good version is still taken."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from structlog.testing import capture_logs

from herald.runtime import renewing_channel, tls_rotation
from herald.runtime.renewing_channel import RenewingChannel
from herald.runtime.tls import (
    ClientTlsFiles,
    TlsFiles,
    read_client_tls,
    read_port_files,
    read_server_tls,
)
from herald.runtime.tls_rotation import CertificateRotation
from tests.log_waits import Entry, logged
from tests.tls_certs import (
    Pki,
    crl_pem,
    issue_client_certificate,
    issue_server_certificate,
    make_pki,
    port_files,
    replace_file,
)

EVERY = 0.02


def failing_once(real: Any) -> Any:
    """``real``, except that its first call raises an error no check expects."""
    calls = 0

    def read(files: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk on fire")
        return real(files)

    return read


async def test_the_port_s_watcher_survives_an_unexpected_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pki, cert, key, renewed_cert, renewed_key = port_files(tmp_path)
    rotation = CertificateRotation(read_server_tls(TlsFiles(str(cert), str(key), None, EVERY)))
    monkeypatch.setattr(tls_rotation, "read_port_files", failing_once(read_port_files))
    with capture_logs() as logs:
        worker = asyncio.create_task(rotation.run())
        try:
            refused = await logged(logs, "tls.refused")
            assert refused["error"] == "RuntimeError: disk on fire"
            replace_file(key, renewed_key)
            replace_file(cert, renewed_cert)
            await logged(logs, "tls.reloaded")
            assert not worker.done()
        finally:
            worker.cancel()


async def test_the_calls_watcher_survives_an_unexpected_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = make_pki(tmp_path / "pki")
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    replace_file(cert, pki.client_cert)
    replace_file(key, pki.client_key)
    tls = read_client_tls(ClientTlsFiles(str(pki.ca), str(cert), str(key), EVERY))
    monkeypatch.setattr(renewing_channel, "read_client_tls", failing_once(read_client_tls))
    with capture_logs() as logs:
        channel = RenewingChannel("127.0.0.1:9", tls, [], None)
        try:
            refused = await logged(logs, "tls.client_refused")
            assert refused["error"] == "RuntimeError: disk on fire"
            renewed_cert, renewed_key = issue_client_certificate(
                pki, "renewed", "client-a", "spiffe://herald/renewed"
            )
            replace_file(key, renewed_key)
            replace_file(cert, renewed_cert)
            await logged(logs, "tls.client_reloaded")
        finally:
            await channel.close()


def crl_rotation(tmp_path: Path, every: float) -> tuple[Pki, CertificateRotation, Path, Path, Path]:
    """A port with mutual TLS whose CRL revokes client-b; its files (certificate, key,
    CRL: copies, to be replaced)."""
    pki, cert, key, _, _ = port_files(tmp_path)
    crl = tmp_path / "crl.pem"
    replace_file(crl, crl_pem(pki, [pki.other_client_cert]))
    files = TlsFiles(str(cert), str(key), str(pki.ca), every, str(crl))
    return pki, CertificateRotation(read_server_tls(files)), cert, key, crl


def events(logs: list[Entry]) -> list[str]:
    return [entry["event"] for entry in logs]


def revokes(rotation: CertificateRotation, path: Path) -> bool:
    assert rotation.revocations is not None
    return rotation.revocations.revokes(x509.load_pem_x509_certificate(path.read_bytes()))


def test_a_crl_not_taken_holds_back_no_renewal_of_the_certificate(tmp_path: Path) -> None:
    pki, rotation, cert, key, crl = crl_rotation(tmp_path, EVERY)
    renewed_cert, renewed_key = issue_server_certificate(pki, "renewed")
    with capture_logs() as logs:
        replace_file(crl, crl_pem(pki, [], forged=True))
        replace_file(key, renewed_key)
        replace_file(cert, renewed_cert)
        rotation.poll_once()
    assert events(logs) == ["tls.crl_refused", "tls.reloaded"]
    assert "is not signed by a certificate of GRPC_TLS_CLIENT_CA_FILE" in logs[0]["error"]
    serial = x509.load_pem_x509_certificate(renewed_cert.read_bytes()).serial_number
    assert logs[1]["serial"] == format(serial, "x")
    assert revokes(rotation, pki.other_client_cert), "the CRLs in force stay"

    # A good CRL alone: taken, the certificate untouched.
    with capture_logs() as logs:
        replace_file(crl, crl_pem(pki, [pki.client_cert]))
        rotation.poll_once()
    assert events(logs) == ["tls.crl_reloaded"]
    assert revokes(rotation, pki.client_cert)
    assert not revokes(rotation, pki.other_client_cert)

    # A good CRL while the certificate's renewal is not good: the CRL is taken.
    with capture_logs() as logs:
        replace_file(cert, b"not a certificate\n")
        replace_file(crl, crl_pem(pki, [pki.client_cert, pki.other_client_cert]))
        rotation.poll_once()
    assert events(logs) == ["tls.refused", "tls.crl_reloaded"]
    assert revokes(rotation, pki.other_client_cert)


def test_an_older_crl_does_not_replace_the_one_in_force(tmp_path: Path) -> None:
    pki, rotation, _, _, crl = crl_rotation(tmp_path, EVERY)
    issued = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    with capture_logs() as logs:
        replace_file(crl, crl_pem(pki, [], issued=issued))
        rotation.poll_once()
    assert events(logs) == ["tls.crl_refused"]
    assert "an older CRL does not replace a newer one" in logs[0]["error"]
    assert revokes(rotation, pki.other_client_cert)


async def test_crls_read_at_start_only_are_still_watched_going_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = make_pki(tmp_path / "pki")
    crl = tmp_path / "crl.pem"
    replace_file(crl, crl_pem(pki, [pki.client_cert], next_update=datetime.timedelta(seconds=1)))
    files = TlsFiles(str(pki.server_cert), str(pki.server_key), str(pki.ca), 0, str(crl))
    monkeypatch.setattr(tls_rotation, "STALENESS_SECONDS", EVERY)
    with capture_logs() as logs:
        rotation = CertificateRotation(read_server_tls(files))
        assert rotation.watches
        assert not rotation.reloads
        worker = asyncio.create_task(rotation.run())
        try:
            stale = await logged(logs, "tls.crl_stale")
        finally:
            worker.cancel()
    assert stale["revoked"] == 1
    assert events(logs).count("tls.crl_stale") == 1
