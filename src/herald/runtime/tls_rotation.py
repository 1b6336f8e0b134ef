"""A gRPC port's certificate renewed without a restart: the port's PEM files
(``GRPC_TLS_CERT_FILE``, ``GRPC_TLS_KEY_FILE``, ``GRPC_TLS_CLIENT_CA_FILE``) are read
again every ``GRPC_TLS_RELOAD_SECONDS``, and a changed set that is good is used for
every connection from then on (grpc's dynamic server credentials: the core asks for
the configuration before each handshake). Connections already open keep theirs.

A changed set that is not good (a file unreadable or not PEM, a key that is not the
certificate's, as when a renewal has written the certificate but not yet its key; a
certificate out of its dates) is not used: the port keeps the one in force, logged
``tls.refused`` once per problem and counted; the next good version is used. So is an
unexpected error while reading them: the worker carries on.

The CRLs (``GRPC_TLS_CLIENT_CRL_FILE``, ``crl.py``) are read as often but taken on
their own (``tls.crl_reloaded``; not good, or older than those in force:
``tls.crl_refused``), and CRLs in force past their next update are logged
``tls.crl_stale`` once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import cast

import grpc
import structlog
from cryptography import x509
from prometheus_client import Counter

from herald.runtime.crl import Revocations
from herald.runtime.off_loop import in_daemon_thread
from herald.runtime.refusals import Refusals
from herald.runtime.tls import ServerTls, leaf_fields, read_port_files, read_revocations

log = structlog.get_logger("herald.tls")

# How often CRLs read at start only (GRPC_TLS_RELOAD_SECONDS=0) are looked at again, to
# log their going stale.
STALENESS_SECONDS = 60.0

RELOADS = Counter(
    "tls_reloads",
    "Changes of a gRPC port's certificate files, by outcome: applied, or refused (the "
    "certificate in force stays).",
    ["outcome"],
)


class CertificateRotation:
    """The port's credentials, and the worker that renews them from the files."""

    def __init__(self, tls: ServerTls) -> None:
        self._tls = tls
        self._lock = threading.Lock()  # the core may ask from a thread of its own
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._refusals = Refusals(
            RELOADS,
            log,
            "tls.refused",
            "the port keeps its certificate until the files are good again",
        )
        self._crl_refusals = Refusals(
            RELOADS,
            log,
            "tls.crl_refused",
            "the port keeps the CRLs in force until the file is good again",
        )
        self._stale_logged: Revocations | None = None
        self._check_staleness()

    @property
    def revocations(self) -> Revocations | None:
        """The CRLs in force (GRPC_TLS_CLIENT_CRL_FILE); None: none."""
        return self._tls.revocations

    @property
    def reloads(self) -> bool:
        """Whether the files are read again (GRPC_TLS_RELOAD_SECONDS not 0)."""
        return self._tls.files is not None and self._tls.files.every_seconds > 0

    @property
    def watches(self) -> bool:
        """Whether :meth:`run` has work: files to read again, or CRLs to watch go
        stale."""
        return self.reloads or self._tls.revocations is not None

    def credentials(self) -> grpc.ServerCredentials:
        """Static credentials, or dynamic ones when the files are to be read again."""
        if not self.reloads:
            return self._tls.credentials()
        return grpc.dynamic_ssl_server_credentials(
            _configuration(self._tls),
            # None means "no change" (grpc's documentation); its type stubs omit it.
            cast("Callable[[], grpc.ServerCertificateConfiguration]", self._fetch),
            require_client_authentication=self._tls.client_ca is not None,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by grpc before each handshake: a new configuration once, else None
        (the one in force stays)."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    async def run(self) -> None:
        """Reads the files again every ``every_seconds`` until cancelled; with reloading
        off, looks every STALENESS_SECONDS whether the CRLs read at start went stale."""
        files = self._tls.files
        if files is None or not self.watches:
            return
        if not self.reloads:
            while True:
                await asyncio.sleep(STALENESS_SECONDS)
                self._check_staleness()
        while True:
            await asyncio.sleep(files.every_seconds)
            try:
                await in_daemon_thread(self.poll_once, "tls-files")
            except Exception as exc:  # a surprise must not end the port's renewals
                self._refusals.refused(f"{type(exc).__name__}: {exc}")

    def poll_once(self) -> None:
        """Reads the files once; takes what changed and is good. The port's certificate,
        key and client CA go together; the CRLs on their own, so a CRL that is not good
        holds back no renewal of the certificate (and a good one is taken while a
        renewal is not)."""
        files = self._tls.files
        assert files is not None
        current = self._tls
        tls = self._read_port() or current
        if files.client_crl and tls.client_ca:
            tls = replace(tls, revocations=self._read_crl(files.client_crl, tls.client_ca))
        if tls != current:
            self._tls = tls
            RELOADS.labels("applied").inc()
            if (tls.cert_chain, tls.private_key, tls.client_ca) != (
                current.cert_chain,
                current.private_key,
                current.client_ca,
            ):
                with self._lock:
                    self._pending = _configuration(tls)
                log.info("tls.reloaded", **leaf_fields(tls.cert_chain))
            if tls.revocations is not current.revocations and tls.revocations is not None:
                log.info("tls.crl_reloaded", **tls.revocations.fields())
        self._check_staleness()

    def _read_port(self) -> ServerTls | None:
        """The port's files, when good; None (refused) else."""
        files = self._tls.files
        assert files is not None
        try:
            tls = read_port_files(files)
        except ValueError as exc:
            self._refusals.refused(str(exc))
            return None
        self._refusals.cleared()
        # The allow-list is the settings'; the CRLs are read on their own.
        return replace(tls, client_names=self._tls.client_names, revocations=self._tls.revocations)

    def _read_crl(self, path: str, client_ca: bytes) -> Revocations | None:
        """The CRLs of ``path`` when good and no older than those in force; else those
        in force (the refusal logged)."""
        current = self._tls.revocations
        try:
            revocations = read_revocations(path, client_ca)
        except ValueError as exc:
            self._crl_refusals.refused(str(exc))
            return current
        trusted = [ca.subject for ca in x509.load_pem_x509_certificates(client_ca)]
        if current is not None and (why := revocations.rolled_back(current, trusted)):
            self._crl_refusals.refused(f"{path}: {why}")
            return current
        self._crl_refusals.cleared()
        return current if revocations == current else revocations

    def _check_staleness(self) -> None:
        """Logs ``tls.crl_stale`` once for CRLs in force past their next update."""
        revocations = self._tls.revocations
        if revocations is None or revocations is self._stale_logged or not revocations.stale():
            return
        self._stale_logged = revocations
        log.warning(
            "tls.crl_stale",
            detail="a CRL of GRPC_TLS_CLIENT_CRL_FILE is past its next update: what it "
            "revokes is still refused, but revocations since are not known",
            **revocations.fields(),
        )


def _configuration(tls: ServerTls) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(tls.private_key, tls.cert_chain)], root_certificates=tls.client_ca
    )
