"""What a service presents and trusts on its calls to the others, renewed while it runs
(GRPC_TLS_CA_FILE, GRPC_TLS_CLIENT_CERT_FILE, GRPC_TLS_CLIENT_KEY_FILE read again every
GRPC_TLS_RELOAD_SECONDS): its calls present a renewed client certificate, and trust a
new CA, with no restart; a half-written renewal is not taken. Against ingest started
in this process, called through Herald's own channel."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from structlog.testing import capture_logs

from herald.runtime.channels import internal_channel
from herald.runtime.renewing_channel import RenewingChannel
from herald.runtime.server import Running, start
from herald.runtime.tls import ClientTlsFiles, read_client_tls
from herald.services.ingest.app import build as build_ingest
from herald.services.ingest.settings import IngestSettings
from tests.conftest import Infra
from tests.integration.test_grpc_tls import actors, code_of, event, publish, running_ingest
from tests.tls_certs import Pki, make_pki, replace_file

pytestmark = pytest.mark.integration

RELOAD = 0.05


def copies(tmp_path: Path, **files: Path) -> dict[str, Path]:
    """Copies of ``files`` under ``tmp_path`` (the files a renewal replaces), by name."""
    placed = {}
    for name, source in files.items():
        placed[name] = tmp_path / f"{name}.pem"
        replace_file(placed[name], source)
    return placed


def channel_tls(files: dict[str, Path], every_seconds: float = RELOAD) -> Any:
    return read_client_tls(
        ClientTlsFiles(str(files["ca"]), str(files["cert"]), str(files["key"]), every_seconds)
    )


def mutual(pki: Pki, client_ca: Path | None = None) -> dict[str, Any]:
    """Ingest's port: its certificate, and client certificates asked for."""
    return {
        "grpc_tls_cert_file": str(pki.server_cert),
        "grpc_tls_key_file": str(pki.server_key),
        "grpc_tls_client_ca_file": str(client_ca or pki.ca),
    }


async def actor_of(channel: grpc.aio.Channel, database_url: str) -> set[str]:
    """The identity ingest took the call from (its client certificate's), by the
    idempotency key's owner."""
    key = f"k-{uuid.uuid4().hex}"
    await publish(channel, event(), ("idempotency-key", key))
    return await actors(database_url, key)


async def until_actor(channel: grpc.aio.Channel, database_url: str, actor: str) -> None:
    """Waits (at most 5 s) until the channel's calls come from ``actor``."""
    for _ in range(100):
        if await actor_of(channel, database_url) == {actor}:
            return
        await asyncio.sleep(RELOAD)
    raise AssertionError(f"the calls did not present {actor}'s certificate within 5 s")


async def test_calls_present_a_renewed_client_certificate_without_a_restart(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    files = copies(tmp_path, ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    async with (
        running_ingest(infra, database_url, topic, **mutual(pki)) as ingest,
        internal_channel(f"localhost:{ingest.port}", channel_tls(files)) as channel,
    ):
        assert isinstance(channel, RenewingChannel)
        assert await actor_of(channel, database_url) == {"client-a"}
        with capture_logs() as logs:
            # A renewal caught half way (client-b's certificate, client-a's key): not
            # taken, the calls carry on with the certificate in force.
            replace_file(files["cert"], pki.other_client_cert)
            await asyncio.sleep(RELOAD * 6)
            assert await actor_of(channel, database_url) == {"client-a"}
            replace_file(files["key"], pki.other_client_key)
            await until_actor(channel, database_url, "client-b")
        [refused] = [e for e in logs if e["event"] == "tls.client_refused"]
        assert refused["error"] == f"{files['key']} is not the key of the certificate in " + str(
            files["cert"]
        )
        assert refused["target"] == f"localhost:{ingest.port}"
        [reloaded] = [e for e in logs if e["event"] == "tls.client_reloaded"]
        assert reloaded["subject"] == "CN=client-b"
        assert reloaded["ca_changed"] is False
        with capture_logs() as logs:
            replace_file(files["ca"], b"not a certificate\n")
            await asyncio.sleep(RELOAD * 6)
            assert await actor_of(channel, database_url) == {"client-b"}
        errors = [e["error"] for e in logs if e["event"] == "tls.client_refused"]
        assert errors == [f"{files['ca']}: not a PEM certificate"]


@contextlib.asynccontextmanager
async def ingest_at(
    infra: Infra, database_url: str, topic: str, port: int, **tls: Any
) -> AsyncIterator[Running]:
    settings = IngestSettings(
        database_url=database_url,
        events_topic=topic,
        ingest_addr=f"127.0.0.1:{port}",
        events_topic_partitions=1,
        **tls,
    )
    app = await build_ingest(settings, infra.kafka_settings())
    running = await start(app, f"127.0.0.1:{port}", tls=settings.server_tls())
    try:
        yield running
    finally:
        await running.stop(1)


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_calls_trust_a_new_ca_without_a_restart(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    """The CA that signs Herald's certificates is replaced: the calls' CA file first
    holds both CAs, then the services get certificates of the new one. A caller
    that read its files at start only could not reach a service that came back with
    its new certificate."""
    old, new = make_pki(tmp_path / "old", "ca-2025"), make_pki(tmp_path / "new", "ca-2026")
    files = copies(tmp_path, ca=old.ca, cert=old.client_cert, key=old.client_key)
    both = tmp_path / "both-cas.pem"
    both.write_bytes(old.ca.read_bytes() + new.ca.read_bytes())
    port = free_port()
    target = f"localhost:{port}"
    async with internal_channel(target, channel_tls(files)) as channel:
        async with ingest_at(infra, database_url, topic, port, **mutual(old, both)):
            assert await actor_of(channel, database_url) == {"client-a"}
            with capture_logs() as logs:
                replace_file(files["ca"], both)
                replace_file(files["cert"], new.client_cert)
                replace_file(files["key"], new.client_key)
                serial = format(serial_of(new.client_cert), "x")
                # Both seen, in one reload or two: a poll reading the CA file just before
                # it was replaced, and the certificate just after, takes the new
                # certificate with the old CA first (the next poll takes the CA).
                for _ in range(100):
                    reloads = [e for e in logs if e["event"] == "tls.client_reloaded"]
                    if any(e["serial"] == serial for e in reloads) and any(
                        e["ca_changed"] for e in reloads
                    ):
                        break
                    await asyncio.sleep(RELOAD)
            assert any(e["serial"] == serial for e in reloads), "the new certificate taken"
            assert any(e["ca_changed"] for e in reloads)
            assert await actor_of(channel, database_url) == {"client-a"}  # the new CA's
        # The service comes back with the new CA's certificate, and takes only its
        # clients now.
        async with ingest_at(infra, database_url, topic, port, **mutual(new)):
            assert await actor_of(channel, database_url) == {"client-a"}
            async with grpc.aio.secure_channel(
                target, old.credentials(old.client_cert, old.client_key)
            ) as as_at_start:
                unavailable = grpc.StatusCode.UNAVAILABLE
                assert await code_of(publish(as_at_start, event())) == unavailable


async def test_with_reloading_off_a_call_keeps_the_files_read_at_start(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    files = copies(tmp_path, ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    async with (
        running_ingest(infra, database_url, topic, **mutual(pki)) as ingest,
        internal_channel(f"localhost:{ingest.port}", channel_tls(files, 0)) as channel,
    ):
        assert not isinstance(channel, RenewingChannel)
        replace_file(files["cert"], pki.other_client_cert)
        replace_file(files["key"], pki.other_client_key)
        await asyncio.sleep(0.3)
        assert await actor_of(channel, database_url) == {"client-a"}


async def test_a_renewed_channel_keeps_the_callers_key(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    """Ingest with keys and GRPC_TLS_CLIENT_NAMES: a call needs both the key and a
    certificate it lets in; the renewed channel sends the key as the first did."""
    pki = make_pki(tmp_path / "pki")
    files = copies(tmp_path, ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    key = "ingest-key-renewed-0123456789"
    async with (
        running_ingest(
            infra,
            database_url,
            topic,
            ingest_api_keys=f"{key}=billing",
            grpc_tls_client_names="client-b",
            **mutual(pki),
        ) as ingest,
        internal_channel(f"localhost:{ingest.port}", channel_tls(files), key) as channel,
    ):
        assert await code_of(publish(channel, event())) == grpc.StatusCode.PERMISSION_DENIED
        replace_file(files["cert"], pki.other_client_cert)
        replace_file(files["key"], pki.other_client_key)
        codes = []
        for _ in range(100):
            try:
                response = await publish(channel, event())
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
                await asyncio.sleep(RELOAD)
            else:
                assert response.event_id
                break
        else:
            raise AssertionError("the renewed certificate was not presented within 5 s")
        assert set(codes) <= {grpc.StatusCode.PERMISSION_DENIED}, "never UNAUTHENTICATED"
