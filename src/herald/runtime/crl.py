"""Client certificates revoked by a certificate revocation list
(``GRPC_TLS_CLIENT_CRL_FILE``): a port with mutual TLS refuses every call (health and
reflection aside, as with keys and names) whose client certificate a CRL of the file
lists, with UNAUTHENTICATED (``auth.RevocationInterceptor``).

grpc's Python server takes no CRL for its handshake, so the check is made on each call,
against the certificate grpc reports for the connection (its leaf: grpc reports no
chain, so an intermediate CA that is revoked is not seen). A connection opened before
its certificate was revoked is refused from the next call on, not only new ones.

Each CRL of the file must be a complete CRL signed by a certificate of
``GRPC_TLS_CLIENT_CA_FILE`` whose subject is the CRL's issuer, else the file is not
taken (at start: the start stops); nor is one bringing an issuer's CRL older than the
one in force. A CRL past its next update is still applied (what it revokes stays
revoked), logged ``tls.crl_stale``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

_CRL_BEGIN = b"-----BEGIN X509 CRL-----"
_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----\s.*?-----END X509 CRL-----", re.DOTALL)


@dataclass(frozen=True)
class Revocations:
    """What the CRLs of a file revoke: (issuer, serial number) pairs. Names compare as
    names (``x509.Name``), not as their encodings: a CRL whose tool wrote its issuer as
    another string type than the certificate's still matches it."""

    revoked: frozenset[tuple[x509.Name, int]]
    crls: int
    # The earliest next update of the CRLs (None: none gives one).
    next_update: datetime | None
    # Each issuer's newest CRL: when it was issued (its last update).
    issued: tuple[tuple[x509.Name, datetime], ...] = ()

    def revokes(self, cert: x509.Certificate) -> bool:
        return (cert.issuer, cert.serial_number) in self.revoked

    def stale(self, now: datetime | None = None) -> bool:
        """Whether a CRL's next update is past: a newer one should have replaced it."""
        return self.next_update is not None and self.next_update < (now or datetime.now(UTC))

    def rolled_back(self, current: Revocations, trusted: Collection[x509.Name] = ()) -> str | None:
        """Why these may not replace ``current``: an issuer's CRL older than the one in
        force, or gone while its CA is still ``trusted`` (one who can write the file
        but not sign would bring back a CRL from before a revocation, or lift them all).
        None: they may."""
        newest = dict(current.issued)
        kept = {issuer for issuer, _ in self.issued}
        for issuer in newest:
            if issuer not in kept and issuer in trusted:
                return (
                    f"the CRL of {issuer.rfc4514_string()} is gone while that CA is still "
                    "trusted (GRPC_TLS_CLIENT_CA_FILE): its revocations would be lifted"
                )
        for issuer, last_update in self.issued:
            if issuer in newest and last_update < newest[issuer]:
                return (
                    f"the CRL of {issuer.rfc4514_string()} was issued at "
                    f"{last_update.isoformat()}, before the one in force "
                    f"({newest[issuer].isoformat()}): an older CRL does not replace a newer one"
                )
        return None

    def fields(self) -> dict[str, Any]:
        """What a log line says of them."""
        return {
            "crls": self.crls,
            "revoked": len(self.revoked),
            "crl_next_update": self.next_update.isoformat() if self.next_update else None,
        }


def parse_revocations(data: bytes, path: str, client_ca: bytes) -> Revocations:
    """The CRLs of ``data`` (the PEM of ``path``), each checked to be whole, complete
    (no delta CRL, no indirect one, no critical extension unknown here) and signed by
    a certificate of ``client_ca``; raises ValueError saying what is wrong."""
    blocks = _CRL_BLOCK.findall(data)
    if not blocks:
        raise ValueError(f"{path}: holds no PEM CRL ({_CRL_BEGIN.decode()})")
    if (begun := data.count(_CRL_BEGIN)) != len(blocks):
        raise ValueError(
            f"{path}: {begun - len(blocks)} of its {begun} CRLs cut short (a file being written?)"
        )
    authorities = x509.load_pem_x509_certificates(client_ca)
    revoked: set[tuple[x509.Name, int]] = set()
    next_updates: list[datetime] = []
    issued: dict[x509.Name, datetime] = {}
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
        if problem := _unsupported(crl):
            raise ValueError(f"{path}: CRL {number} ({crl.issuer.rfc4514_string()}) {problem}")
        revoked.update((crl.issuer, entry.serial_number) for entry in crl)
        if crl.next_update_utc is not None:
            next_updates.append(crl.next_update_utc)
        issued[crl.issuer] = max(crl.last_update_utc, issued.get(crl.issuer, crl.last_update_utc))
    return Revocations(
        frozenset(revoked), len(blocks), min(next_updates, default=None), tuple(issued.items())
    )


# What a complete CRL may mark critical (RFC 5280 5.2): its scope is read below.
_KNOWN_CRITICAL = {ExtensionOID.ISSUING_DISTRIBUTION_POINT}


def _unsupported(crl: x509.CertificateRevocationList) -> str | None:
    """What this CRL holds that would be read wrongly here (its entries taken as
    revoking the CRL issuer's certificates only, in full); None: nothing."""
    for extension in crl.extensions:
        if extension.oid == ExtensionOID.DELTA_CRL_INDICATOR:
            return "is a delta CRL: give the complete CRL"
        if extension.critical and extension.oid not in _KNOWN_CRITICAL:
            return f"has a critical extension not known here ({extension.oid.dotted_string})"
        value = extension.value
        if isinstance(value, x509.IssuingDistributionPoint) and value.indirect_crl:
            return "is an indirect CRL (entries of other issuers): not supported"
    for entry in crl:
        for extension in entry.extensions:
            if extension.oid == CRLEntryExtensionOID.CERTIFICATE_ISSUER:
                return f"names another issuer for serial {entry.serial_number:x}: not supported"
            if extension.critical:
                return (
                    f"has a critical entry extension not known here ({extension.oid.dotted_string})"
                )
    return None


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    if ca.subject != crl.issuer:
        return False
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    # A key type that signs no CRL, or one cryptography lacks.
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return False
