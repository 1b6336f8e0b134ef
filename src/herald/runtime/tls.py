"""TLS for every gRPC port and for Herald's own channels, from PEM files.

The files are checked when the settings are read (a missing file, one that holds no
certificate or key, a key that is not the certificate's, a certificate out of its
dates: the start stops naming the variable); ``server_tls()`` and ``client_tls()`` read
them again for the port and the channels, and again every ``GRPC_TLS_RELOAD_SECONDS``
(``tls_rotation.py``, ``renewing_channel.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from herald.runtime.crl import Revocations, parse_revocations

_CERTIFICATE_BEGIN = b"-----BEGIN CERTIFICATE-----"


def read_certificates(path: str) -> bytes:
    """The PEM bytes of ``path``, which must hold one certificate or more, each whole;
    raises ValueError saying why not."""
    data = _read(path)
    try:
        found = len(x509.load_pem_x509_certificates(data))
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{path}: not a PEM certificate") from None
    # A block cut short (a chain or bundle read while being written) is skipped by
    # the parser: the set would pass with a chain missing its intermediate, or a
    # bundle missing the CA being rolled in.
    if (begun := data.count(_CERTIFICATE_BEGIN)) != found:
        raise ValueError(
            f"{path}: {begun - found} of its {begun} certificates cut short or unreadable "
            "(a file being written?)"
        )
    return data


# A certificate issued a moment ago by a CA whose clock is slightly ahead is not refused:
# it becomes valid before long, and a start that stops for it only restarts.
CLOCK_SKEW = timedelta(minutes=5)


def check_dates(data: bytes, path: str, leaf: bool, now: datetime | None = None) -> None:
    """Raises ValueError when the certificates of ``data`` (the PEM of ``path``) cannot
    be valid now: with ``leaf``, its first certificate (a port's or a client's own) has
    expired or is not valid yet (beyond CLOCK_SKEW); else (a CA file) every certificate
    has expired. Every peer would refuse the handshake (UNAVAILABLE, the service itself
    SERVING), so the start stops instead."""
    now = now or datetime.now(UTC)
    certs = x509.load_pem_x509_certificates(data)
    if leaf:
        cert = certs[0]
        if cert.not_valid_after_utc < now:
            expired = _when(cert.not_valid_after_utc)
            raise ValueError(f"{path}: the certificate expired at {expired}")
        if cert.not_valid_before_utc > now + CLOCK_SKEW:
            raise ValueError(
                f"{path}: the certificate is not valid before {_when(cert.not_valid_before_utc)}"
            )
    elif all(cert.not_valid_after_utc < now for cert in certs):
        last = max(cert.not_valid_after_utc for cert in certs)
        raise ValueError(f"{path}: the CA certificate expired at {_when(last)}")


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def read_private_key(path: str) -> bytes:
    """The PEM bytes of ``path``, which must hold an unencrypted private key."""
    data = _read(path)
    _private_key(data, path)
    return data


def check_pair(cert_chain: bytes, private_key: bytes) -> bool:
    """Whether ``private_key`` is the key of the first certificate of ``cert_chain``."""
    cert = x509.load_pem_x509_certificates(cert_chain)[0]
    key = _private_key(private_key, "")
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        public = cert.public_key().public_bytes(der, spki)
    except UnsupportedAlgorithm:  # a certificate for a key type cryptography lacks
        return False
    return bool(public == key.public_key().public_bytes(der, spki))


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None


def _private_key(data: bytes, path: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    # TypeError: encrypted, and no password; UnsupportedAlgorithm: a key type it lacks.
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"{path}: not an unencrypted PEM private key") from None


def _read_leaf(cert: str, key: str) -> tuple[bytes, bytes]:
    """A certificate chain and its private key from their files, checked as at start
    (each readable PEM, the key the certificate's, the certificate within its dates)."""
    chain = read_certificates(cert)
    private_key = read_private_key(key)
    if not check_pair(chain, private_key):
        raise ValueError(f"{key} is not the key of the certificate in {cert}")
    check_dates(chain, cert, leaf=True)
    return chain, private_key


def leaf_fields(chain: bytes) -> dict[str, str]:
    """What a log line says of the first certificate of ``chain``: its subject, serial
    number and expiry."""
    leaf = x509.load_pem_x509_certificates(chain)[0]
    return {
        "subject": leaf.subject.rfc4514_string(),
        "serial": format(leaf.serial_number, "x"),
        "not_after": leaf.not_valid_after_utc.isoformat(),
    }


@dataclass(frozen=True)
class TlsFiles:
    """Where a port's certificate, key and client CA are read from, and how often
    (``tls_rotation.py``)."""

    cert: str
    key: str
    client_ca: str | None = None
    every_seconds: float = 0  # 0: read at start only
    client_crl: str | None = None  # CRLs of client certificates (crl.py)


@dataclass(frozen=True)
class ServerTls:
    """A gRPC port's certificate and key; with ``client_ca``, callers must present a
    certificate it signed (mutual TLS). ``files``: where they were read from."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None
    files: TlsFiles | None = None
    # GRPC_TLS_CLIENT_NAMES: the client certificate identities let in (empty: any the
    # CA signed).
    client_names: tuple[str, ...] = ()
    # GRPC_TLS_CLIENT_CRL_FILE: the client certificates refused (None: no CRL).
    revocations: Revocations | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """For ``server.add_secure_port``."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def read_server_tls(files: TlsFiles) -> ServerTls:
    """The port's TLS from its files, checked as at start (each readable PEM, the key
    the certificate's, the certificate within its dates, the client CA not all
    expired, each CRL signed by the client CA); raises ValueError saying what is
    wrong."""
    tls = read_port_files(files)
    if files.client_crl and tls.client_ca:
        return replace(tls, revocations=read_revocations(files.client_crl, tls.client_ca))
    return tls


def read_port_files(files: TlsFiles) -> ServerTls:
    """The port's certificate, key and client CA (not its CRLs) from their files,
    checked as :func:`read_server_tls` does."""
    chain, key = _read_leaf(files.cert, files.key)
    client_ca = None
    if files.client_ca:
        client_ca = read_certificates(files.client_ca)
        check_dates(client_ca, files.client_ca, leaf=False)
    return ServerTls(chain, key, client_ca, files)


def read_revocations(path: str, client_ca: bytes) -> Revocations:
    """The CRLs of the file ``path``, each signed by a certificate of ``client_ca``;
    raises ValueError saying what is wrong."""
    return parse_revocations(_read(path), path, client_ca)


@dataclass(frozen=True)
class ClientTlsFiles:
    """Where a service's own calls read their TLS from: the CA of the other services'
    certificates and, for mutual TLS, the certificate and key it presents; and how
    often they are read again (``channels.py``)."""

    ca: str
    cert: str | None = None
    key: str | None = None
    every_seconds: float = 0  # 0: read at start only


@dataclass(frozen=True)
class ClientTls:
    """How a Herald service calls another over TLS: the CA that signed the servers'
    certificates, and the client certificate presented to a port that asks for one.
    ``files``: where they were read from."""

    ca: bytes
    cert_chain: bytes | None = None
    private_key: bytes | None = None
    files: ClientTlsFiles | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """For ``grpc.aio.secure_channel``."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca,
            private_key=self.private_key,
            certificate_chain=self.cert_chain,
        )


def read_client_tls(files: ClientTlsFiles) -> ClientTls:
    """The calls' TLS from their files, checked as at start (each readable PEM, the CA
    not all expired, the key the certificate's, the certificate within its dates);
    raises ValueError saying what is wrong."""
    ca = read_certificates(files.ca)
    check_dates(ca, files.ca, leaf=False)
    if not files.cert or not files.key:
        return ClientTls(ca, files=files)
    return ClientTls(ca, *_read_leaf(files.cert, files.key), files)
