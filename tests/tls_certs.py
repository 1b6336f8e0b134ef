"""A throwaway PKI for TLS tests: a CA, a server certificate for 127.0.0.1 and
localhost, and client certificates, as PEM files in a directory."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN client-a
    client_key: Path
    other_client_cert: Path  # CN client-b
    other_client_key: Path
    stranger_cert: Path  # CN stranger, signed by another CA
    stranger_key: Path

    def server_env(self, mutual: bool = False) -> dict[str, str]:
        """A service's TLS settings: its port, and its calls to the others."""
        env = {
            "GRPC_TLS_CERT_FILE": str(self.server_cert),
            "GRPC_TLS_KEY_FILE": str(self.server_key),
            "GRPC_TLS_CA_FILE": str(self.ca),
        }
        if mutual:
            env |= {
                "GRPC_TLS_CLIENT_CA_FILE": str(self.ca),
                "GRPC_TLS_CLIENT_CERT_FILE": str(self.client_cert),
                "GRPC_TLS_CLIENT_KEY_FILE": str(self.client_key),
            }
        return env

    def credentials(
        self, cert: Path | None = None, key: Path | None = None
    ) -> grpc.ChannelCredentials:
        """A client's TLS (trusting the CA), presenting ``cert`` when given."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=key.read_bytes() if key else None,
            certificate_chain=cert.read_bytes() if cert else None,
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class _Ca:
    def __init__(self, common_name: str) -> None:
        self.key: ec.EllipticCurvePrivateKey = _key()
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self, directory: Path, stem: str, common_name: str, server: bool, uri: str = ""
    ) -> tuple[Path, Path]:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        if uri:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return cert_path, key_path


def make_pki(directory: Path, ca_name: str = "herald-test-ca") -> Pki:
    """Writes a fresh CA (named ``ca_name``: a TLS library picks a CA by name, so two
    CAs trusted together need names of their own) and its certificates into
    ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _Ca(ca_name)
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca.key, directory / "ca.key")
    server = ca.issue(directory, "server", "herald-server", server=True)
    client = ca.issue(directory, "client-a", "client-a", server=False)
    other = ca.issue(directory, "client-b", "client-b", server=False)
    stranger = _Ca("another-ca").issue(directory, "stranger", "stranger", server=False)
    return Pki(ca_path, *server, *client, *other, *stranger)


def dated_certificate(
    path: Path, not_before: datetime.datetime, not_after: datetime.datetime
) -> Path:
    """Writes a self-signed certificate valid from ``not_before`` to ``not_after`` (an
    expired one, one not valid yet) to ``path``, and its key next to it (``.key``)."""
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("dated"))
        .issuer_name(_name("dated"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, path.with_suffix(".key"))
    return path


def issue_server_certificate(pki: Pki, stem: str) -> tuple[Path, Path]:
    """Another server certificate (for 127.0.0.1 and localhost) by ``pki``'s CA, as a
    renewal would bring: ``stem``.crt and .key beside the CA."""
    return _loaded_ca(pki).issue(pki.ca.parent, stem, "herald-server", server=True)


def issue_client_certificate(pki: Pki, stem: str, common_name: str, uri: str) -> tuple[Path, Path]:
    """A client certificate by ``pki``'s CA naming ``uri`` as its subject alternative
    name (a SPIFFE id, say) beside ``common_name``."""
    return _loaded_ca(pki).issue(pki.ca.parent, stem, common_name, server=False, uri=uri)


def _loaded_ca(pki: Pki) -> _Ca:
    ca = _Ca.__new__(_Ca)
    ca.cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    loaded = serialization.load_pem_private_key(
        (pki.ca.parent / "ca.key").read_bytes(), password=None
    )
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    ca.key = loaded
    return ca


def replace_file(target: Path, content: Path | bytes) -> None:
    """Puts ``content`` (a file's, or bytes) at ``target`` at once, as a renewal that
    renames its new file into place does: a service reading ``target`` meanwhile sees
    the old file or the new one, never a part (that case is tested on purpose)."""
    data = content.read_bytes() if isinstance(content, Path) else content
    staged = target.with_name(f".{target.name}.new")
    staged.write_bytes(data)
    os.replace(staged, target)


def crl_pem(
    pki: Pki,
    revoked: Sequence[Path],
    next_update: datetime.timedelta = datetime.timedelta(days=1),
    forged: bool = False,
    issued: datetime.datetime | None = None,
    issuer: x509.Name | None = None,
    extend: Callable[[x509.CertificateRevocationListBuilder], x509.CertificateRevocationListBuilder]
    | None = None,
) -> bytes:
    """A PEM CRL by ``pki``'s CA revoking the certificates of the files ``revoked``,
    issued at ``issued`` (5 minutes ago) and next updated ``next_update`` from now
    (negative: stale); ``forged``: signed by another key under the CA's name, as no CRL
    of that CA is; ``issuer``: the CA's name written otherwise; ``extend``: more for
    the builder (extensions)."""
    ca = _loaded_ca(pki)
    key = _key() if forged else ca.key
    now = datetime.datetime.now(datetime.UTC)
    last_update = issued or now - datetime.timedelta(minutes=5) + min(
        next_update, datetime.timedelta()
    )
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer or ca.cert.subject)
        .last_update(last_update)
        .next_update(now + next_update)
    )
    for path in revoked:
        serial = x509.load_pem_x509_certificate(path.read_bytes()).serial_number
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    if extend is not None:
        builder = extend(builder)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def port_files(tmp_path: Path) -> tuple[Pki, Path, Path, Path, Path]:
    """A PKI; the port's certificate and key files (copies, to be replaced); and a
    renewal of them by the same CA."""
    pki = make_pki(tmp_path / "pki")
    cert, key = tmp_path / "port.crt", tmp_path / "port.key"
    replace_file(cert, pki.server_cert)
    replace_file(key, pki.server_key)
    return (pki, cert, key, *issue_server_certificate(pki, "renewed"))
