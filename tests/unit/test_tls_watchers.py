"""The workers that read TLS files again (the port's, and the calls' between services)
outlive an unexpected error while reading them: it is logged as a refusal, and the next
good version is still taken."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from herald.runtime import renewing_channel, tls_rotation
from herald.runtime.renewing_channel import RenewingChannel
from herald.runtime.tls import ClientTlsFiles, TlsFiles, read_client_tls, read_server_tls
from herald.runtime.tls_rotation import CertificateRotation
from tests.log_waits import logged
from tests.tls_certs import (
    issue_client_certificate,
    issue_server_certificate,
    make_pki,
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
    pki = make_pki(tmp_path / "pki")
    cert, key = tmp_path / "port.crt", tmp_path / "port.key"
    replace_file(cert, pki.server_cert)
    replace_file(key, pki.server_key)
    rotation = CertificateRotation(read_server_tls(TlsFiles(str(cert), str(key), None, EVERY)))
    monkeypatch.setattr(tls_rotation, "read_server_tls", failing_once(read_server_tls))
    with capture_logs() as logs:
        worker = asyncio.create_task(rotation.run())
        try:
            refused = await logged(logs, "tls.refused")
            assert refused["error"] == "RuntimeError: disk on fire"
            renewed_cert, renewed_key = issue_server_certificate(pki, "renewed")
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
