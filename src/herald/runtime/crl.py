"""Client certificates revoked by a certificate revocation list
(``GRPC_TLS_CLIENT_CRL_FILE``): a port with mutual TLS refuses every call (health and
reflection aside, as with keys and names) whose client certificate a CRL of the file
lists, with UNAUTHENTICATED (``auth.RevocationInterceptor``).

grpc's Python server takes no CRL for its handshake, so the check is made on each call,
against the certificate grpc reports for the connection (its leaf: grpc reports no
chain, so an intermediate CA that is revoked is not seen). A connection opened before
its certificate was revoked is refused from the next call on, not only new ones.

Each CRL of the file must be signed by a certificate of ``GRPC_TLS_CLIENT_CA_FILE``
whose subject is the CRL's issuer, else the file is not taken (at start: the start
stops). A CRL past its next update is still applied (what it revokes stays revoked),
logged ``tls.crl_stale``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

_CRL_BEGIN = b"-----BEGIN X509 CRL-----"
_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----\s.*?-----END X509 CRL-----", re.DOTALL)


@dataclass(frozen=True)
class Revocations:
    """What the CRLs of a file revoke: (issuer name as DER, serial number) pairs."""

    revoked: frozenset[tuple[bytes, int]]
    crls: int
    # The earliest next update of the CRLs (None: none gives one).
    next_update: datetime | None

    def revokes(self, cert: x509.Certificate) -> bool:
        return (cert.issuer.public_bytes(), cert.serial_number) in self.revoked

    def stale(self, now: datetime | None = None) -> bool:
        """Whether a CRL's next update is past: a newer one should have replaced it."""
        return self.next_update is not None and self.next_update < (now or datetime.now(UTC))

    def fields(self) -> dict[str, Any]:
        """What a log line says of them."""
        return {
            "crls": self.crls,
            "revoked": len(self.revoked),
            "crl_next_update": self.next_update.isoformat() if self.next_update else None,
        }


def parse_revocations(data: bytes, path: str, client_ca: bytes) -> Revocations:
    """The CRLs of ``data`` (the PEM of ``path``), each checked to be whole and signed
    by a certificate of ``client_ca``; raises ValueError saying what is wrong."""
    blocks = _CRL_BLOCK.findall(data)
    if not blocks:
        raise ValueError(f"{path}: holds no PEM CRL ({_CRL_BEGIN.decode()})")
    if (begun := data.count(_CRL_BEGIN)) != len(blocks):
        raise ValueError(
            f"{path}: {begun - len(blocks)} of its {begun} CRLs cut short (a file being written?)"
        )
    authorities = x509.load_pem_x509_certificates(client_ca)
    revoked: set[tuple[bytes, int]] = set()
    next_updates: list[datetime] = []
    for number, block in enumerate(blocks, 1):
        try:
            crl = x509.load_pem_x509_crl(block)
        except ValueError:
            raise ValueError(f"{path}: CRL {number} is not a readable PEM CRL") from None
        if not any(_signed_by(crl, ca) for ca in authorities):
            raise ValueError(
                f"{path}: CRL {number} (issuer {crl.issuer.rfc4514_string()}) is not signed "
                "by a certificate of GRPC_TLS_CLIENT_CA_FILE"
            )
        issuer = crl.issuer.public_bytes()
        revoked.update((issuer, entry.serial_number) for entry in crl)
        if crl.next_update_utc is not None:
            next_updates.append(crl.next_update_utc)
    return Revocations(frozenset(revoked), len(blocks), min(next_updates, default=None))


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    if ca.subject != crl.issuer:
        return False
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a key type that signs no CRL
        return False
