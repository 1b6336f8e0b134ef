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
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import cast

import grpc
import structlog
from prometheus_client import Counter

from herald.runtime.crl import Revocations
from herald.runtime.off_loop import in_daemon_thread
from herald.runtime.refusals import Refusals
from herald.runtime.tls import ServerTls, leaf_fields, read_server_tls

log = structlog.get_logger("herald.tls")

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
        """Reads the files again every ``every_seconds`` until cancelled."""
        files = self._tls.files
        if files is None or not self.reloads:
            return
        while True:
            await asyncio.sleep(files.every_seconds)
            try:
                await in_daemon_thread(self.poll_once, "tls-files")
            except Exception as exc:  # a surprise must not end the port's renewals
                self._refusals.refused(f"{type(exc).__name__}: {exc}")

    def poll_once(self) -> None:
        """Reads the files once; takes them when they changed and are good."""
        files = self._tls.files
        assert files is not None
        try:
            tls = read_server_tls(files)
        except ValueError as exc:
            self._refusals.refused(str(exc))
            return
        self._refusals.cleared()
        tls = replace(tls, client_names=self._tls.client_names)  # from the settings
        if tls != self._tls:
            with self._lock:
                self._pending = _configuration(tls)
            self._tls = tls
            RELOADS.labels("applied").inc()
            crl = tls.revocations.fields() if tls.revocations else {}
            log.info("tls.reloaded", **leaf_fields(tls.cert_chain), **crl)
        self._check_staleness()

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
