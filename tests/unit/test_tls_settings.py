"""TLS and caller-key settings: a file that cannot serve stops the start naming its
variable; all unset is plaintext and open, as before."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings
from structlog.testing import capture_logs

from herald.runtime.channels import internal_tls
from herald.runtime.settings import RuntimeSettings, load_settings
from herald.services.dispatch.settings import DispatchSettings
from herald.services.ingest.settings import IngestRelaySettings, IngestSettings
from herald.services.reconcile.settings import ReconcileSettings
from herald.services.webhooks.settings import WebhooksSettings
from tests.settings_env import refused, set_required
from tests.tls_certs import Pki, dated_certificate, make_pki

SERVICES: list[type[RuntimeSettings]] = [
    IngestSettings,
    IngestRelaySettings,
    DispatchSettings,
    WebhooksSettings,
    ReconcileSettings,
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def required(monkeypatch: pytest.MonkeyPatch) -> None:
    set_required(monkeypatch)


@pytest.mark.parametrize("cls", SERVICES, ids=lambda cls: cls.__name__)
def test_unset_is_plaintext(cls: type[RuntimeSettings]) -> None:
    settings = load_settings(cls)
    assert settings.server_tls() is None
    assert settings.client_tls() is None


@pytest.mark.parametrize("cls", SERVICES, ids=lambda cls: cls.__name__)
def test_every_service_takes_the_tls_files(
    monkeypatch: pytest.MonkeyPatch, pki: Pki, cls: type[RuntimeSettings]
) -> None:
    for name, value in pki.server_env(mutual=True).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(cls)
    server, client = settings.server_tls(), settings.client_tls()
    assert server is not None
    assert server.cert_chain == pki.server_cert.read_bytes()
    assert server.client_ca == pki.ca.read_bytes()
    assert client is not None
    assert client.cert_chain == pki.client_cert.read_bytes()
    # The calls' files are read again as often as the port's (the channels renew).
    assert client.files is not None
    assert client.files.every_seconds == settings.grpc_tls_reload_seconds == 60
    assert client.files.cert == str(pki.client_cert)
    assert client.files.key == str(pki.client_key)


def test_a_server_certificate_without_client_ca_asks_for_no_client_certificate(
    monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    monkeypatch.setenv("GRPC_TLS_CERT_FILE", str(pki.server_cert))
    monkeypatch.setenv("GRPC_TLS_KEY_FILE", str(pki.server_key))
    server = load_settings(IngestSettings).server_tls()
    assert server is not None
    assert server.client_ca is None


@pytest.mark.parametrize(
    ("variable", "problem"),
    [
        ("GRPC_TLS_CERT_FILE", "missing"),
        ("GRPC_TLS_CERT_FILE", "not pem"),
        ("GRPC_TLS_CERT_FILE", "a key"),
        ("GRPC_TLS_KEY_FILE", "missing"),
        ("GRPC_TLS_KEY_FILE", "a certificate"),
        ("GRPC_TLS_KEY_FILE", "another key"),
        ("GRPC_TLS_CLIENT_CA_FILE", "missing"),
        ("GRPC_TLS_CLIENT_CA_FILE", "a key"),
        ("GRPC_TLS_CA_FILE", "not pem"),
        ("GRPC_TLS_CA_FILE", "cut short"),
        ("GRPC_TLS_CLIENT_CERT_FILE", "missing"),
        ("GRPC_TLS_CLIENT_CERT_FILE", "cut short"),
        ("GRPC_TLS_CLIENT_KEY_FILE", "another key"),
    ],
)
def test_a_bad_tls_file_stops_the_start_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    pki: Pki,
    variable: str,
    problem: str,
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN NOTHING-----\nnope\n")
    # A chain or bundle read while being written: its second certificate cut short.
    cut = tmp_path / "cut.pem"
    second = pki.ca.read_bytes()
    cut.write_bytes(pki.client_cert.read_bytes() + second[: len(second) // 2])
    bad = {
        "missing": str(tmp_path / "nowhere.pem"),
        "not pem": str(junk),
        "a key": str(pki.server_key),
        "a certificate": str(pki.server_cert),
        "another key": str(pki.other_client_key),
        "cut short": str(cut),
    }[problem]
    env = {**pki.server_env(mutual=True), variable: bad}
    err = refused(monkeypatch, capsys, DispatchSettings, **env)
    assert f"  {variable}: " in err, err
    assert len(err.strip().splitlines()) == 2, "one line: the variable and why"
    if problem == "cut short":
        assert f"{cut}: 1 of its 2 certificates cut short or unreadable" in err


@pytest.mark.parametrize(
    ("variable", "when"),
    [
        ("GRPC_TLS_CERT_FILE", "expired"),
        ("GRPC_TLS_CERT_FILE", "not yet valid"),
        ("GRPC_TLS_CLIENT_CERT_FILE", "expired"),
        ("GRPC_TLS_CLIENT_CERT_FILE", "not yet valid"),
        ("GRPC_TLS_CA_FILE", "expired"),
        ("GRPC_TLS_CLIENT_CA_FILE", "expired"),
    ],
)
def test_a_certificate_not_valid_now_stops_the_start_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    pki: Pki,
    variable: str,
    when: str,
) -> None:
    """Every peer would refuse it (UNAVAILABLE on their side) while the service
    reported SERVING."""
    now = datetime.datetime.now(datetime.UTC)
    year = datetime.timedelta(days=365)
    start, end = (now - 2 * year, now - year) if when == "expired" else (now + year, now + 2 * year)
    dated = dated_certificate(tmp_path / "dated.pem", start, end)
    env = {**pki.server_env(mutual=True), variable: str(dated)}
    err = refused(monkeypatch, capsys, DispatchSettings, **env)
    assert f"  {variable}: {dated}: the " in err, err
    assert ("expired at" if when == "expired" else "not valid before") in err
    assert len(err.strip().splitlines()) == 2, "one line: the variable and why"


def test_a_ca_file_with_one_certificate_valid_now_is_taken(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: Pki
) -> None:
    """A bundle may hold expired CAs beside the one in use."""
    now = datetime.datetime.now(datetime.UTC)
    year = datetime.timedelta(days=365)
    old = dated_certificate(tmp_path / "old.pem", now - 2 * year, now - year)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(old.read_bytes() + pki.ca.read_bytes())
    for name, value in {**pki.server_env(mutual=True), "GRPC_TLS_CA_FILE": str(bundle)}.items():
        monkeypatch.setenv(name, value)
    client = load_settings(DispatchSettings).client_tls()
    assert client is not None
    assert client.ca == bundle.read_bytes()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GRPC_TLS_CERT_FILE": "server_cert"}, "GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE"),
        ({"GRPC_TLS_KEY_FILE": "server_key"}, "GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE"),
        ({"GRPC_TLS_CLIENT_CA_FILE": "ca"}, "GRPC_TLS_CLIENT_CA_FILE: needs GRPC_TLS_CERT_FILE"),
        (
            {"GRPC_TLS_CA_FILE": "ca", "GRPC_TLS_CLIENT_CERT_FILE": "client_cert"},
            "GRPC_TLS_CLIENT_CERT_FILE and GRPC_TLS_CLIENT_KEY_FILE",
        ),
        (
            {"GRPC_TLS_CLIENT_CERT_FILE": "client_cert", "GRPC_TLS_CLIENT_KEY_FILE": "client_key"},
            "GRPC_TLS_CLIENT_CERT_FILE: needs GRPC_TLS_CA_FILE",
        ),
    ],
)
def test_tls_files_that_do_not_go_together_stop_the_start(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pki: Pki,
    env: dict[str, str],
    named: str,
) -> None:
    paths = {name: str(getattr(pki, attr)) for name, attr in env.items()}
    assert named in refused(monkeypatch, capsys, IngestSettings, **paths)


@pytest.mark.parametrize(
    ("cls", "variable"),
    [
        (IngestSettings, "INGEST_API_KEYS"),
        (DispatchSettings, "DISPATCH_API_KEYS"),
        (ReconcileSettings, "RECONCILE_API_KEYS"),
    ],
)
def test_api_keys_are_optional_and_checked_when_given(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cls: type[BaseSettings],
    variable: str,
) -> None:
    assert getattr(load_settings(cls), variable.lower()) == ""
    monkeypatch.setenv(variable, f"{'a' * 16}=one,{'b' * 16}=two")
    assert getattr(load_settings(cls), variable.lower())
    err = refused(monkeypatch, capsys, cls, **{variable: "short=one"})
    assert f"  {variable}: entry 1: expected KEY=NAME" in err
    assert "short" not in err, "a key is never echoed"


@pytest.mark.parametrize("cls", [DispatchSettings, WebhooksSettings, ReconcileSettings])
def test_the_ingest_client_key_is_checked_as_an_internal_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cls: type[BaseSettings]
) -> None:
    err = refused(monkeypatch, capsys, cls, INGEST_CLIENT_KEY="too-short")
    assert "  INGEST_CLIENT_KEY: 16+ characters" in err


@pytest.mark.parametrize(
    ("unset", "warned"),
    [
        ((), False),
        (("GRPC_TLS_CLIENT_CERT_FILE", "GRPC_TLS_CLIENT_KEY_FILE"), True),
        (
            (
                "GRPC_TLS_CLIENT_CERT_FILE",
                "GRPC_TLS_CLIENT_KEY_FILE",
                "GRPC_TLS_CLIENT_CA_FILE",
            ),
            False,
        ),
    ],
)
def test_a_service_asking_for_client_certificates_but_presenting_none_warns(
    monkeypatch: pytest.MonkeyPatch, pki: Pki, unset: tuple[str, ...], warned: bool
) -> None:
    """Its own calls to a peer set up alike are closed ("Socket closed"): the start
    says why beforehand."""
    for name, value in pki.server_env(mutual=True).items():
        if name not in unset:
            monkeypatch.setenv(name, value)
    with capture_logs() as logs:
        tls = internal_tls(load_settings(DispatchSettings))
    assert tls is not None
    lines = [e for e in logs if e["event"] == "tls.no_client_certificate"]
    assert bool(lines) == warned
    if warned:
        assert lines[0]["log_level"] == "warning"
        assert "GRPC_TLS_CLIENT_CERT_FILE is not" in lines[0]["detail"]


def test_a_certificate_valid_within_minutes_is_taken(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: Pki
) -> None:
    """Issued a moment ago by a CA whose clock is a little ahead: not refused."""
    now = datetime.datetime.now(datetime.UTC)
    soon = dated_certificate(
        tmp_path / "soon.pem", now + datetime.timedelta(minutes=1), now + datetime.timedelta(days=1)
    )
    for name, value in pki.server_env(mutual=True).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GRPC_TLS_CERT_FILE", str(soon))
    monkeypatch.setenv("GRPC_TLS_KEY_FILE", str(soon.with_suffix(".key")))
    server = load_settings(DispatchSettings).server_tls()
    assert server is not None
    assert server.cert_chain == soon.read_bytes()


def test_client_names_need_mutual_tls_and_are_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    for name, value in pki.server_env().items():
        monkeypatch.setenv(name, value)
    err = refused(monkeypatch, capsys, IngestSettings, GRPC_TLS_CLIENT_NAMES="client-a")
    assert "GRPC_TLS_CLIENT_NAMES: needs GRPC_TLS_CLIENT_CA_FILE" in err
    monkeypatch.setenv("GRPC_TLS_CLIENT_CA_FILE", str(pki.ca))
    err = refused(monkeypatch, capsys, IngestSettings, GRPC_TLS_CLIENT_NAMES="client a,b")
    assert "GRPC_TLS_CLIENT_NAMES: names without white space" in err
    err = refused(monkeypatch, capsys, IngestSettings, GRPC_TLS_CLIENT_NAMES="a,,b")
    assert "GRPC_TLS_CLIENT_NAMES: names without white space" in err
    monkeypatch.setenv("GRPC_TLS_CLIENT_NAMES", " client-a , spiffe://herald/dispatch,client-a")
    tls = load_settings(IngestSettings).server_tls()
    assert tls is not None
    assert tls.client_names == ("client-a", "spiffe://herald/dispatch")


@pytest.mark.parametrize(
    ("cls", "prefix", "method"),
    [
        (IngestSettings, "INGEST", "Publish"),
        (DispatchSettings, "DISPATCH", "ListRoutes"),
        (ReconcileSettings, "RECONCILE", "GetTicket"),
    ],
)
def test_without_keys_the_limits_name_client_certificates(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pki: Pki,
    cls: type[RuntimeSettings],
    prefix: str,
    method: str,
) -> None:
    """Mutual TLS with GRPC_TLS_CLIENT_NAMES and no API keys: the callers the limits
    name are those certificate identities."""
    for name, value in pki.server_env(mutual=True).items():
        monkeypatch.setenv(name, value)
    variable = f"{prefix}_API_KEY_METHODS"
    err = refused(monkeypatch, capsys, cls, **{variable: f"client-a={method}"})
    nobody = "is set while the service has no API keys (nor GRPC_TLS_CLIENT_NAMES)"
    assert f"{variable}: {nobody}" in err
    monkeypatch.setenv("GRPC_TLS_CLIENT_NAMES", "client-a,spiffe://herald/b")
    err = refused(monkeypatch, capsys, cls, **{variable: f"client-z={method}"})
    assert "entry 1: 'client-z' is not a name GRPC_TLS_CLIENT_NAMES lets in" in err
    monkeypatch.setenv(variable, f"client-a={method},spiffe://herald/b={method}")
    assert getattr(load_settings(cls), variable.lower()) == os.environ[variable]
    if cls is IngestSettings:
        monkeypatch.setenv("INGEST_API_KEY_EVENT_TYPES", "client-a=message.*")
        assert load_settings(IngestSettings).callers() == {"client-a", "spiffe://herald/b"}
