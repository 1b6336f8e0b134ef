"""Revoked client certificates (GRPC_TLS_CLIENT_CRL_FILE): refused with UNAUTHENTICATED
by a port with mutual TLS, on open connections too once a new CRL is read, with no
restart. Against ingest started in this process."""

from __future__ import annotations

import datetime
from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs

from tests.conftest import Infra
from tests.integration.test_grpc_tls import (
    code_of,
    event,
    health,
    publish,
    running_ingest,
    tls_files,
)
from tests.log_waits import logged
from tests.tls_certs import crl_pem, make_pki, replace_file

pytestmark = pytest.mark.integration

RELOAD = 0.05


async def refusal(channel: grpc.aio.Channel) -> str:
    """The message of a Publish refused with UNAUTHENTICATED."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await publish(channel, event())
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED, exc.value
    return exc.value.details() or ""


async def test_a_revoked_client_certificate_is_refused_and_a_new_crl_needs_no_restart(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    crl = tmp_path / "crl.pem"
    replace_file(crl, crl_pem(pki, [pki.other_client_cert]))  # client-b revoked
    async with (
        running_ingest(
            infra,
            database_url,
            topic,
            **tls_files(pki, mutual=True),
            grpc_tls_client_crl_file=str(crl),
            grpc_tls_reload_seconds=RELOAD,
        ) as ingest,
        grpc.aio.secure_channel(
            f"localhost:{ingest.port}", pki.credentials(pki.client_cert, pki.client_key)
        ) as client_a,
        grpc.aio.secure_channel(
            f"localhost:{ingest.port}", pki.credentials(pki.other_client_cert, pki.other_client_key)
        ) as client_b,
    ):
        assert await health(client_a) == 1  # SERVING
        assert (await publish(client_a, event())).event_id
        message = await refusal(client_b)
        assert "CN=client-b" in message
        assert "revoked by GRPC_TLS_CLIENT_CRL_FILE" in message
        assert await health(client_b) == 1, "health checks stay open, as with keys"

        # client-a revoked too: its open connection is refused from the next call on.
        with capture_logs() as logs:
            replace_file(crl, crl_pem(pki, [pki.other_client_cert, pki.client_cert]))
            reloaded = await logged(logs, "tls.crl_reloaded")
        assert reloaded["revoked"] == 2
        assert "CN=client-a" in await refusal(client_a)

        # A CRL not signed by the client CA (here: forged under its name) is not taken:
        # both stay refused.
        with capture_logs() as logs:
            replace_file(crl, crl_pem(pki, [], forged=True))
            refused = await logged(logs, "tls.crl_refused")
        assert "is not signed by a certificate of GRPC_TLS_CLIENT_CA_FILE" in str(refused["error"])
        await refusal(client_a)
        await refusal(client_b)

        # A good CRL revoking neither: both are let in again.
        with capture_logs() as logs:
            replace_file(crl, crl_pem(pki, []))
            await logged(logs, "tls.crl_reloaded")
        assert (await publish(client_a, event())).event_id
        assert (await publish(client_b, event())).event_id


async def test_a_stale_crl_is_applied_and_logged(
    infra: Infra, database_url: str, topic: str, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    crl = tmp_path / "crl.pem"
    stale = crl_pem(pki, [pki.other_client_cert], next_update=-datetime.timedelta(hours=1))
    replace_file(crl, stale)
    with capture_logs() as logs:
        async with (
            running_ingest(
                infra,
                database_url,
                topic,
                **tls_files(pki, mutual=True),
                grpc_tls_client_crl_file=str(crl),
                grpc_tls_reload_seconds=0,
            ) as ingest,
            grpc.aio.secure_channel(
                f"localhost:{ingest.port}",
                pki.credentials(pki.other_client_cert, pki.other_client_key),
            ) as client_b,
        ):
            assert await code_of(publish(client_b, event())) == grpc.StatusCode.UNAUTHENTICATED
    [warned] = [e for e in logs if e["event"] == "tls.crl_stale"]
    assert warned["revoked"] == 1
