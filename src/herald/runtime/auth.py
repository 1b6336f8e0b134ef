"""API-key authentication: ``authorization: Bearer <key>`` → the caller's tenant.

The interceptor checks every call except the gRPC infrastructure services (health,
reflection) and puts the tenant in :data:`TENANT` for the handler to read. In webhooks
a key names a tenant; in ingest, dispatch and reconcile (``*_API_KEYS``, optional) a
caller: ingest scopes idempotency keys by it, and ``*_API_KEY_METHODS`` (optional) may
limit a caller to some of its service's methods (else ``PERMISSION_DENIED``). Without
keys, with mutual TLS and ``GRPC_TLS_CLIENT_NAMES``, the callers the limits name are
the client certificates' identities (:data:`CLIENT_NAMES`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar

import grpc
from cryptography import x509
from pydantic import AfterValidator, Field

from herald.runtime.crl import Revocations
from herald.runtime.errors import PermissionDenied, Unauthenticated
from herald.runtime.interceptors import Handler, UnaryInterceptor
from herald.runtime.key_pairs import MIN_KEY_LENGTH, parse_api_keys

TENANT: ContextVar[str] = ContextVar("herald_tenant")
# The identities of the call's client certificate that GRPC_TLS_CLIENT_NAMES let in: the
# caller's names where the service has no API keys (its limits may name them).
CLIENT_NAMES: ContextVar[tuple[str, ...]] = ContextVar("herald_client_names")
# In a setting that limits callers: every caller the setting does not name.
EVERY_OTHER_CALLER = "*"
T = TypeVar("T")
_OPEN = ("/grpc.health.", "/grpc.reflection.")


def parse_key_methods(
    text: str, callers: Collection[str], methods: Collection[str], keys: Collection[str] = ()
) -> dict[str, frozenset[str]]:
    """``"billing=Publish|PublishBatch,ops=CreateEventType"`` → {caller: its methods}: a
    caller named here may call only those methods of the service (``methods``), one not
    named every method. Raises ValueError naming the bad entry (see
    :func:`parse_caller_lists`), or a method the service does not have."""
    known = ", ".join(sorted(methods))
    lists = parse_caller_lists(
        text,
        callers,
        "NAME=Method|Method|…",
        lambda m: None if m in methods else f"no method {m}; the service has {known}",
        keys,
    )
    return {caller: frozenset(names) for caller, names in lists.items()}


def parse_caller_lists(
    text: str,
    callers: Collection[str],
    form: str,
    problem: Callable[[str], str | None],
    keys: Collection[str] = (),
) -> dict[str, tuple[str, ...]]:
    """``"NAME=a|b,NAME2=c"`` → {caller: (items, …)}, as a setting that limits some of a
    service's callers (``callers``: the names of its keys) says. Raises ValueError naming
    the bad entry: not of ``form``, a caller no key has (a misspelt name would limit
    nobody; one of ``keys``, the service's keys, is not echoed), a caller given twice, an
    item ``problem`` finds fault with (its message). An entry is split at its last ``=``
    (a caller's name may hold ``=``, an item not). The caller ``*`` stands for every
    caller not named (one added to a keys file later, say): see :func:`limits_of`."""
    if text.strip() and not callers:
        raise ValueError(
            "is set while the service has no API keys (nor GRPC_TLS_CLIENT_NAMES): it would "
            "limit nobody"
        )
    lists: dict[str, tuple[str, ...]] = {}
    for n, entry in enumerate(e.strip() for e in text.split(",") if e.strip()):
        caller, sep, listed = (part.strip() for part in entry.rpartition("="))
        items = tuple(dict.fromkeys(i.strip() for i in listed.split("|") if i.strip()))
        if not sep or not caller or not items:
            raise ValueError(f"entry {n + 1}: expected {form}")
        if caller not in callers and caller in keys:  # KEY=… for NAME=…: a secret
            raise ValueError(f"entry {n + 1}: names an API key itself, not its NAME (not shown)")
        if caller not in callers and caller != EVERY_OTHER_CALLER:
            if keys:
                raise ValueError(f"entry {n + 1}: no API key is named {caller!r}")
            raise ValueError(
                f"entry {n + 1}: {caller!r} is not a name GRPC_TLS_CLIENT_NAMES lets in "
                "(without API keys, the callers are the client certificates' names)"
            )
        if caller in lists:
            raise ValueError(f"entry {n + 1}: caller {caller!r} is given twice")
        for item in items:
            if (message := problem(item)) is not None:
                raise ValueError(f"entry {n + 1}: {message}")
        lists[caller] = items
    return lists


def limits_of(lists: Mapping[str, T], callers: Sequence[str]) -> list[tuple[str, T]]:
    """What a limiting setting holds for a call by ``callers`` (one API key's name, or
    a client certificate's identities), with the name each is for: the entries of
    those it names, all of which hold (a certificate naming two identities gets the
    limits of both, whatever their order); if it names none, the ``*`` entry (every
    caller not named); else nothing (not limited)."""
    named = [(c, lists[c]) for c in callers if c in lists]
    if named or EVERY_OTHER_CALLER not in lists or not callers:
        return named
    return [(callers[0], lists[EVERY_OTHER_CALLER])]


def api_keys_setting(value: str) -> str:
    """Validates an optional ``*_API_KEYS`` setting of KEY=NAME pairs (empty: the
    service answers anyone)."""
    parse_api_keys(value)
    return value


def internal_key_setting(value: str) -> str:
    """Validates ``WEBHOOKS_INTERNAL_KEY``, the same rule in webhooks, which checks it,
    and dispatch, which sends it, and ``INGEST_CLIENT_KEY``: empty, or 16+ characters
    without spaces around (a presented key is compared stripped)."""
    if value and (len(value) < MIN_KEY_LENGTH or value != value.strip()):
        raise ValueError(f"{MIN_KEY_LENGTH}+ characters, without spaces around")
    return value


class ApiKeys:
    """Known keys, kept as SHA-256 digests (a key itself is not held)."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._tenants = self._digests(keys)

    @staticmethod
    def _digests(keys: Mapping[str, str]) -> dict[bytes, str]:
        return {hashlib.sha256(k.encode()).digest(): t for k, t in keys.items()}

    def replace(self, keys: Mapping[str, str]) -> None:
        """Takes ``keys`` in place of the known ones (a keys file changed), for every
        call checked from now on."""
        self._tenants = self._digests(keys)

    def tenant(self, metadata: Mapping[str, str | bytes]) -> str:
        """The tenant of the call's bearer key; raises Unauthenticated."""
        header = metadata.get("authorization", "")
        scheme, _, key = (header.decode() if isinstance(header, bytes) else header).partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("missing 'authorization: Bearer <api key>' metadata")
        # Found by its digest: one lookup however many keys there are (comparing with
        # each took ~400 µs a call with 10,000 tenants). How long the lookup takes says
        # nothing of a valid key: the caller cannot choose the digest it probes with.
        tenant = self._tenants.get(hashlib.sha256(key.strip().encode()).digest())
        if tenant is None:
            raise Unauthenticated("unknown API key")
        return tenant


def check_method(
    allowed: Mapping[str, frozenset[str]], callers: Sequence[str], method: str, allowed_by: str
) -> None:
    """Raises PermissionDenied when ``allowed`` (the setting ``allowed_by``) keeps
    ``callers`` from calling ``method`` (``/pkg.Service/Name``)."""
    name = method.rpartition("/")[2]
    for caller, methods in limits_of(allowed, callers):
        if name not in methods:
            raise PermissionDenied(
                f"caller {caller!r} may not call {name} ({allowed_by} lets it call "
                f"{', '.join(sorted(methods))})"
            )


class _GuardInterceptor(UnaryInterceptor):
    """An interceptor guarding every call but health checks and reflection."""

    def applies_to(self, method: str) -> bool:
        return not method.startswith(_OPEN)


class BearerAuthInterceptor(_GuardInterceptor):
    """Sets :data:`TENANT` for each authenticated call; raises Unauthenticated
    (mapped to UNAUTHENTICATED by the error interceptor outside it)."""

    def __init__(
        self,
        keys: ApiKeys,
        internal: Mapping[str, ApiKeys] | None = None,
        allowed: Mapping[str, frozenset[str]] | None = None,
        allowed_by: str = "",
    ) -> None:
        """``internal`` maps method prefixes (``/pkg.Service/``) to the keys that, in
        place of ``keys``, open them: services for Herald's own callers. ``allowed``
        limits some of ``keys``' callers to the methods named (the setting
        ``allowed_by`` says so, named in the refusal)."""
        super().__init__()
        self._keys = keys
        self._internal = dict(internal or {})
        self._allowed = dict(allowed or {})
        self._allowed_by = allowed_by

    async def around(
        self,
        inner: Handler,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
    ) -> Any:
        """Calls the handler with the caller's tenant set."""
        keys = next((k for p, k in self._internal.items() if method.startswith(p)), self._keys)
        tenant = keys.tenant(dict(context.invocation_metadata() or ()))
        if keys is self._keys:
            check_method(self._allowed, (tenant,), method, self._allowed_by)
        token = TENANT.set(tenant)
        try:
            return await inner(request, context)
        finally:
            TENANT.reset(token)


# Settings fields validated as their names say: optional KEY=NAME pairs
# (``*_API_KEYS``), and one key a service sends (``WEBHOOKS_INTERNAL_KEY``,
# ``INGEST_CLIENT_KEY``).
ApiKeysSetting = Annotated[str, AfterValidator(api_keys_setting)]
KeySetting = Annotated[str, AfterValidator(internal_key_setting)]


def api_keys_file_field(keys_variable: str) -> Any:
    """The settings field ``*_API_KEYS_FILE``: a file of what ``keys_variable`` holds,
    in its place (the settings read it: ``RuntimeSettings._api_keys_files``)."""
    return Field(
        "",
        description=f"A file of {keys_variable}'s pairs (commas or lines; '#' starts a "
        f"comment at a line's start or after white space), in place of {keys_variable}: "
        "re-read every API_KEYS_FILE_POLL_SECONDS, a changed good file applied with no "
        "restart (a bad one refused, the keys in force kept).",
    )


def methods_of(*services: Any) -> frozenset[str]:
    """The method names of gRPC services (their ``ServiceDescriptor``)."""
    return frozenset(m for service in services for m in service.methods_by_name)


def callers_of(keys: Mapping[str, str], client_names: Collection[str]) -> set[str]:
    """Who a service's limits may name: the names of its API keys; with none, the client
    certificate identities GRPC_TLS_CLIENT_NAMES lets in."""
    return set(keys.values()) if keys else set(client_names)


def callers() -> tuple[str, ...]:
    """The calling caller's names: its API key's, else its client certificate's
    identities that GRPC_TLS_CLIENT_NAMES let in; none when neither is checked."""
    tenant = TENANT.get("")
    return (tenant,) if tenant else CLIENT_NAMES.get(())


def check_key_methods(
    api_keys: str,
    key_methods: str,
    variable: str,
    methods: Collection[str],
    client_names: Collection[str] = (),
) -> None:
    """Raises ValueError naming ``variable`` (``*_API_KEY_METHODS``) if ``key_methods``
    is not a valid setting for a service with ``methods`` and the keys ``api_keys`` (or,
    without keys, the client certificate identities ``client_names``)."""
    try:
        keys = parse_api_keys(api_keys)
        parse_key_methods(key_methods, callers_of(keys, client_names), methods, keys)
    except ValueError as exc:
        raise ValueError(f"{variable}: {exc}") from None


class ClientNameInterceptor(_GuardInterceptor):
    """Mutual TLS with an allow-list (``GRPC_TLS_CLIENT_NAMES``): a caller whose
    certificate names none of ``names`` (its subject alternative names, else its common
    name, as grpc reports them) is refused with PERMISSION_DENIED. Health and
    reflection stay open, as with keys."""

    def __init__(self, names: Collection[str]) -> None:
        super().__init__()
        self._names = frozenset(names)

    async def around(
        self,
        inner: Handler,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
    ) -> Any:
        presented = [i.decode(errors="replace") for i in context.peer_identities() or ()]
        names = tuple(i for i in presented if i in self._names)
        if not names:
            raise PermissionDenied(
                f"the client certificate ({', '.join(presented) or 'no identity'}) is not "
                "one GRPC_TLS_CLIENT_NAMES lets in"
            )
        token = CLIENT_NAMES.set(names)
        try:
            return await inner(request, context)
        finally:
            CLIENT_NAMES.reset(token)


class ClientMethodsInterceptor(_GuardInterceptor):
    """``*_API_KEY_METHODS`` where the service has no API keys: the callers it names
    are client certificate identities (:data:`CLIENT_NAMES`, set by the
    :class:`ClientNameInterceptor` outside this one), each limited to its methods. A
    call without them (no allow-list in front: a server started without its TLS) is
    refused: the limits could not be told apart from none."""

    def __init__(self, allowed: Mapping[str, frozenset[str]], allowed_by: str) -> None:
        super().__init__()
        self._allowed = dict(allowed)
        self._allowed_by = allowed_by

    async def around(
        self,
        inner: Handler,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
    ) -> Any:
        names = CLIENT_NAMES.get(())
        if not names:
            raise PermissionDenied(
                f"{self._allowed_by} limits callers by client certificate, and this call "
                "presented none that GRPC_TLS_CLIENT_NAMES lets in"
            )
        check_method(self._allowed, names, method, self._allowed_by)
        return await inner(request, context)


# Verdicts kept per client certificate seen (its PEM): a certificate is parsed once, not
# on every call. Cleared when full, and whenever the CRLs change.
_VERDICTS_KEPT = 10_000


class RevocationInterceptor(_GuardInterceptor):
    """Refuses a call whose client certificate ``current()`` (the CRLs in force)
    revokes, with UNAUTHENTICATED."""

    def __init__(self, current: Callable[[], Revocations | None]) -> None:
        super().__init__()
        self._current = current
        self._verdicts: dict[bytes, str | None] = {}
        self._verdicts_for: Revocations | None = None

    async def around(
        self,
        inner: Handler,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
    ) -> Any:
        revocations = self._current()
        if revocations is not None:
            presented = context.auth_context().get("x509_pem_cert")
            if not presented:
                raise Unauthenticated(
                    "this port checks client certificates against GRPC_TLS_CLIENT_CRL_FILE, "
                    "and the call presented none"
                )
            if refusal := self._verdict(revocations, next(iter(presented))):
                raise Unauthenticated(refusal)
        return await inner(request, context)

    def _verdict(self, revocations: Revocations, pem: bytes) -> str | None:
        """Why the certificate ``pem`` is refused; None: it is not revoked."""
        if revocations is not self._verdicts_for or len(self._verdicts) >= _VERDICTS_KEPT:
            self._verdicts = {}
            self._verdicts_for = revocations
        if pem in self._verdicts:
            return self._verdicts[pem]
        try:
            verdict = _revocation(revocations, x509.load_pem_x509_certificate(pem))
        except ValueError:  # one the TLS library took and cryptography cannot read
            verdict = (
                "the client certificate cannot be read to check it against "
                "GRPC_TLS_CLIENT_CRL_FILE, so it is not let in"
            )
        self._verdicts[pem] = verdict
        return verdict


def _revocation(revocations: Revocations, cert: x509.Certificate) -> str | None:
    """Why ``cert`` is refused (a CRL lists it); None: it is not. Its names are read
    here, lazily: one cryptography cannot decode raises ValueError."""
    if not revocations.revokes(cert):
        return None
    return (
        f"the client certificate {cert.subject.rfc4514_string()} (serial "
        f"{cert.serial_number:x}, issuer {cert.issuer.rfc4514_string()}) is revoked "
        "by GRPC_TLS_CLIENT_CRL_FILE"
    )
