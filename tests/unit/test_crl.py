"""Certificate revocation lists (GRPC_TLS_CLIENT_CRL_FILE): what a file's CRLs revoke,
which files are not taken, and the start that a bad one stops."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from herald.runtime.crl import parse_revocations
from herald.runtime.settings import load_settings
from herald.services.ingest.settings import IngestSettings
from tests.settings_env import refused, set_required
from tests.tls_certs import Pki, crl_pem, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("second"), ca_name="herald-second-ca")


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_a_crl_revokes_the_certificates_it_lists_and_no_other(pki: Pki) -> None:
    revocations = parse_revocations(
        crl_pem(pki, [pki.other_client_cert]), "crl.pem", pki.ca.read_bytes()
    )
    assert revocations.revokes(cert(pki.other_client_cert))
    assert not revocations.revokes(cert(pki.client_cert))
    assert revocations.crls == 1
    assert len(revocations.revoked) == 1
    assert not revocations.stale()


def test_a_serial_is_revoked_only_under_the_issuer_that_lists_it(pki: Pki, second: Pki) -> None:
    # Both CAs trusted; the first revokes client-b. The second CA's client-b has another
    # serial, so give the first CA's CRL the second's serial too: it is not the issuer.
    bundle = pki.ca.read_bytes() + second.ca.read_bytes()
    crl = crl_pem(pki, [pki.other_client_cert, second.client_cert])
    revocations = parse_revocations(crl, "crl.pem", bundle)
    assert revocations.revokes(cert(pki.other_client_cert))
    assert not revocations.revokes(cert(second.client_cert))


def test_a_file_may_hold_the_crls_of_several_cas(pki: Pki, second: Pki) -> None:
    bundle = pki.ca.read_bytes() + second.ca.read_bytes()
    both = crl_pem(pki, [pki.client_cert]) + crl_pem(second, [second.other_client_cert])
    revocations = parse_revocations(both, "crl.pem", bundle)
    assert revocations.crls == 2
    assert revocations.revokes(cert(pki.client_cert))
    assert revocations.revokes(cert(second.other_client_cert))
    assert not revocations.revokes(cert(second.client_cert))


def test_a_stale_crl_is_still_applied_and_said_to_be_stale(pki: Pki) -> None:
    stale = crl_pem(pki, [pki.client_cert], next_update=-datetime.timedelta(hours=1))
    revocations = parse_revocations(stale, "crl.pem", pki.ca.read_bytes())
    assert revocations.stale()
    assert revocations.revokes(cert(pki.client_cert))


@pytest.mark.parametrize("problem", ["forged", "another ca", "cut short", "no crl", "junk"])
def test_a_crl_file_that_cannot_be_trusted_is_not_taken(
    pki: Pki, second: Pki, problem: str
) -> None:
    good = crl_pem(pki, [pki.client_cert])
    data = {
        "forged": crl_pem(pki, [pki.client_cert], forged=True),
        "another ca": crl_pem(second, [second.client_cert]),
        "cut short": good + good[: len(good) // 2],
        "no crl": pki.ca.read_bytes(),
        "junk": b"-----BEGIN X509 CRL-----\nnope\n-----END X509 CRL-----\n",
    }[problem]
    with pytest.raises(ValueError, match=r"^crl\.pem: ") as exc:
        parse_revocations(data, "crl.pem", pki.ca.read_bytes())
    expected = {
        "forged": "CRL 1 (issuer CN=herald-test-ca) is not signed by a certificate of "
        "GRPC_TLS_CLIENT_CA_FILE",
        "another ca": "CRL 1 (issuer CN=herald-second-ca) is not signed",
        "cut short": "1 of its 2 CRLs cut short",
        "no crl": "holds no PEM CRL",
        "junk": "CRL 1 is not a readable PEM CRL",
    }[problem]
    assert expected in str(exc.value)


def test_the_settings_take_a_crl_with_mutual_tls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: Pki
) -> None:
    set_required(monkeypatch)
    crl = tmp_path / "crl.pem"
    crl.write_bytes(crl_pem(pki, [pki.other_client_cert]))
    for name, value in {
        **pki.server_env(mutual=True),
        "GRPC_TLS_CLIENT_CRL_FILE": str(crl),
    }.items():
        monkeypatch.setenv(name, value)
    tls = load_settings(IngestSettings).server_tls()
    assert tls is not None
    assert tls.revocations is not None
    assert tls.revocations.revokes(cert(pki.other_client_cert))


@pytest.mark.parametrize("problem", ["no client ca", "forged", "missing"])
def test_a_crl_file_that_cannot_serve_stops_the_start_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    pki: Pki,
    problem: str,
) -> None:
    set_required(monkeypatch)
    crl = tmp_path / "crl.pem"
    crl.write_bytes(crl_pem(pki, [pki.other_client_cert], forged=problem == "forged"))
    env = {**pki.server_env(mutual=problem != "no client ca"), "GRPC_TLS_CLIENT_CRL_FILE": str(crl)}
    if problem == "missing":
        env["GRPC_TLS_CLIENT_CRL_FILE"] = str(tmp_path / "nowhere.pem")
    err = refused(monkeypatch, capsys, IngestSettings, **env)
    assert "GRPC_TLS_CLIENT_CRL_FILE: " in err, err
    expected = {
        "no client ca": "needs GRPC_TLS_CLIENT_CA_FILE",
        "forged": "is not signed by a certificate of GRPC_TLS_CLIENT_CA_FILE",
        "missing": "cannot read",
    }[problem]
    assert expected in err, err


def test_an_issuer_written_as_another_string_type_still_matches(pki: Pki) -> None:
    # The CA's name as a PrintableString (cryptography writes a UTF8String): the same
    # name to X.509, other bytes. Tools differ in this; the revocation must hold.
    ca_name = cert(pki.ca).subject
    printable = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "herald-test-ca", _type=_ASN1Type.PrintableString)]
    )
    assert printable == ca_name
    assert printable.public_bytes() != ca_name.public_bytes()
    crl = crl_pem(pki, [pki.client_cert], issuer=printable)
    revocations = parse_revocations(crl, "crl.pem", pki.ca.read_bytes())
    assert revocations.revokes(cert(pki.client_cert))


def _delta(builder: x509.CertificateRevocationListBuilder) -> x509.CertificateRevocationListBuilder:
    return builder.add_extension(x509.DeltaCRLIndicator(1), critical=True)


def _unknown_critical(
    builder: x509.CertificateRevocationListBuilder,
) -> x509.CertificateRevocationListBuilder:
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    return builder.add_extension(unknown, critical=True)


def _indirect_entry(
    builder: x509.CertificateRevocationListBuilder,
) -> x509.CertificateRevocationListBuilder:
    other = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another-ca")])
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(12345)
        .revocation_date(datetime.datetime.now(datetime.UTC))
        .add_extension(x509.CertificateIssuer([x509.DirectoryName(other)]), critical=True)
        .build()
    )
    return builder.add_revoked_certificate(entry)


@pytest.mark.parametrize(
    ("extend", "said"),
    [
        (_delta, "is a delta CRL: give the complete CRL"),
        (_unknown_critical, "has a critical extension not known here (1.3.6.1.4.1.55555.1)"),
        (_indirect_entry, "names another issuer for serial 3039: not supported"),
    ],
    ids=["delta", "unknown critical", "indirect entry"],
)
def test_a_crl_that_would_be_read_wrongly_is_not_taken(
    pki: Pki, extend: Callable[..., x509.CertificateRevocationListBuilder], said: str
) -> None:
    crl = crl_pem(pki, [pki.client_cert], extend=extend)
    with pytest.raises(ValueError, match="CRL 1 \\(CN=herald-test-ca\\) ") as exc:
        parse_revocations(crl, "crl.pem", pki.ca.read_bytes())
    assert said in str(exc.value)


def test_an_older_crl_of_an_issuer_does_not_replace_a_newer_one(pki: Pki, second: Pki) -> None:
    now = datetime.datetime.now(datetime.UTC)
    bundle = pki.ca.read_bytes() + second.ca.read_bytes()
    newer = parse_revocations(
        crl_pem(pki, [pki.client_cert], issued=now - datetime.timedelta(minutes=1)), "a", bundle
    )
    older = parse_revocations(
        crl_pem(pki, [], issued=now - datetime.timedelta(hours=2)), "b", bundle
    )
    why = older.rolled_back(newer)
    assert why is not None
    assert "the CRL of CN=herald-test-ca was issued at" in why
    assert newer.rolled_back(older) is None
    assert newer.rolled_back(newer) is None
    # Another issuer's CRL added, or one dropped: no roll-back.
    other = parse_revocations(crl_pem(second, []), "c", bundle)
    assert other.rolled_back(newer) is None


def test_a_crl_of_a_ca_still_trusted_cannot_be_dropped(pki: Pki, second: Pki) -> None:
    # One file with several CAs' CRLs: leaving one out lifted all of its revocations
    bundle = pki.ca.read_bytes() + second.ca.read_bytes()
    both = parse_revocations(
        crl_pem(pki, [pki.client_cert]) + crl_pem(second, [second.client_cert]), "a", bundle
    )
    first_only = parse_revocations(crl_pem(pki, [pki.client_cert]), "b", bundle)
    trusted = [cert(pki.ca).subject, cert(second.ca).subject]
    why = first_only.rolled_back(both, trusted)
    assert why is not None
    assert "the CRL of CN=herald-second-ca is gone while that CA is still trusted" in why
    # The second CA no longer trusted (taken out of the CA file): its CRL may go.
    assert first_only.rolled_back(both, trusted[:1]) is None
