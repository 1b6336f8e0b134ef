"""A webhook subscription and the rules it must satisfy. Pure: no I/O."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from yarl import URL

from herald.runtime.cloudevents_kafka import CONTEXT_HEADERS
from herald.runtime.errors import FieldViolation
from herald.runtime.type_patterns import PATTERN, matches
from herald.services.webhooks.signing import DEFAULT_HEADER_PREFIX, WHSEC, strict_standard_key

# Katya's seed (004): maxRetries 3, retryDelay 1000 ms, backoffMultiplier 2.
DEFAULT_MAX_RETRIES = 3
DEFAULT_INITIAL_DELAY = 1.0
DEFAULT_MULTIPLIER = 2.0
DEFAULT_MAX_DELAY = 30.0
MAX_RETRIES = 50
MIN_DELAY, MAX_DELAY = 0.1, 86_400.0  # seconds: a fixed schedule's bounds (delays)
MAX_RETRY_STATUSES = 50

MIN_SECRET, MAX_SECRET = 16, 256  # a caller-chosen secret's characters (or key bytes)
MAX_NAME = 200
MAX_URL = 2048
MAX_EVENT_TYPES = 100
MAX_HEADERS = 20
MAX_METADATA = 50
MAX_DESCRIPTION = 2000
# Whole-string patterns, for fullmatch: with ``$``, a final line break got through.
EVENT_TYPE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
# What a header value may not contain (RFC 9110 field-value): controls but HTAB, and DEL.
# The delivery client (aiohttp) refuses to send such a value, so every delivery failed.
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A host name as DNS can resolve it, once IDNA-encoded: labels of letters, digits, '-'
# and '_' (in use in real names), at most 63 characters each; a final dot is allowed.
_HOST_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
MAX_HOST = 253
# Headers Herald sets itself: a subscription cannot override them.
_RESERVED_HEADERS = (
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "x-herald-",
    "x-signature",
    "webhook-",
    "transfer-encoding",
    "connection",
)
# The event's transport context (traceparent, x-request-id, …), which Herald sets from the
# delivery job: every event has an x-request-id and a traceparent, so a webhook's own was
# never sent; its idempotency-key or x-correlation-id went only with events lacking one.
_CONTEXT_HEADERS = frozenset(CONTEXT_HEADERS)
UPDATABLE = frozenset(
    {
        "name",
        "url",
        "event_types",
        "active",
        "retry_policy",
        "rate_limit",
        "headers",
        "description",
        "metadata",
    }
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped at ``max_delay`` seconds; or, when
    ``delays`` is given, that fixed schedule (seconds before retry 1, 2, …; e.g.
    Bitrix24's 10 s, 30 s, 2 min, 10 min), one retry per delay."""

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = DEFAULT_INITIAL_DELAY
    backoff_multiplier: float = DEFAULT_MULTIPLIER
    max_delay: float = DEFAULT_MAX_DELAY
    delays: tuple[float, ...] = ()
    retry_statuses: tuple[int, ...] = ()  # empty: every failure is retried


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Deliveries per second and per minute to one webhook; 0 means no limit."""

    per_second: int = 0
    per_minute: int = 0


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """What a tenant says about a subscription (everything but ids and times)."""

    name: str
    url: str
    event_types: tuple[str, ...]
    active: bool = True
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    headers: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    def updated(self, other: WebhookSpec, paths: Iterable[str]) -> WebhookSpec:
        """A copy with the fields named by ``paths`` taken from ``other``."""
        return replace(self, **{p: getattr(other, p) for p in paths})

    def without_own_headers(self, header_prefix: str) -> WebhookSpec:
        """A copy without the headers that became Herald's own after they were stored
        (a new WEBHOOKS_HEADER_PREFIX, a header Herald started to send): never sent."""
        kept = {k: v for k, v in self.headers.items() if not own_header(k, header_prefix)}
        return self if len(kept) == len(self.headers) else replace(self, headers=kept)


def own_header(name: str, header_prefix: str) -> bool:
    """Whether ``name`` is one of the headers Herald sets (``header_prefix``'s among them),
    which a webhook's headers cannot override."""
    lowered = name.lower()
    return (
        lowered.startswith(_RESERVED_HEADERS)
        or lowered in _CONTEXT_HEADERS
        or lowered.startswith(f"{header_prefix.lower()}-")
    )


def check(
    spec: WebhookSpec, known_types: Iterable[str], header_prefix: str = DEFAULT_HEADER_PREFIX
) -> list[FieldViolation]:
    """Every problem with ``spec``, named by its field in the Webhook message;
    ``header_prefix`` is that of Herald's own headers (``WEBHOOKS_HEADER_PREFIX``)."""
    problems = _check_text(spec) + _check_url(spec.url)
    problems += _check_event_types(spec.event_types, set(known_types))
    problems += _check_retry(spec.retry_policy) + _check_rate(spec.rate_limit)
    problems += _check_headers(spec.headers, header_prefix) + _check_metadata(spec.metadata)
    return problems


def check_secret(secret: str, field_name: str) -> list[FieldViolation]:
    """A caller-chosen secret: 16 to 256 printable characters; a ``whsec_`` one is a
    Standard Webhooks secret, so its key (base64 after the prefix) is what must be long
    enough: 16 bytes, like the characters of any other secret."""
    if not MIN_SECRET <= len(secret) <= MAX_SECRET or not secret.isprintable():
        return [FieldViolation(field_name, f"{MIN_SECRET} to {MAX_SECRET} printable characters")]
    if secret.startswith(WHSEC):
        key = strict_standard_key(secret)
        if key is None:
            return [FieldViolation(field_name, f"base64 after {WHSEC!r} (Standard Webhooks)")]
        if len(key) < MIN_SECRET:
            return [
                FieldViolation(
                    field_name,
                    f"a {WHSEC!r} secret's key (base64 after the prefix) is at least "
                    f"{MIN_SECRET} bytes, not {len(key)}",
                )
            ]
    return []


def _check_text(spec: WebhookSpec) -> list[FieldViolation]:
    problems = []
    if not spec.name.strip():
        problems.append(FieldViolation("webhook.name", "required"))
    elif len(spec.name) > MAX_NAME:
        problems.append(FieldViolation("webhook.name", f"at most {MAX_NAME} characters"))
    if len(spec.description) > MAX_DESCRIPTION:
        problems.append(
            FieldViolation("webhook.description", f"at most {MAX_DESCRIPTION} characters")
        )
    return problems


def _check_url(url: str) -> list[FieldViolation]:
    problem = ""
    if not url:
        problem = "required"
    elif len(url) > MAX_URL:
        problem = f"at most {MAX_URL} characters"
    else:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            return [FieldViolation("webhook.url", f"not a valid URL: {exc}")]
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problem = "an absolute http:// or https:// URL"
        elif parts.username or parts.password:
            problem = "credentials in the URL are not allowed; use headers"
        elif port == 0:
            problem = "port 0 is not a valid port"
        else:
            problem = _host_problem(url)
    return [FieldViolation("webhook.url", problem)] if problem else []


def _host_problem(url: str) -> str:
    """Why the delivery client could never reach ``url``'s host ("" when it could). The
    host is read as the client reads it (yarl, which IDNA-encodes a non-ASCII name)."""
    if any(c in url for c in "\t\r\n"):  # dropped by the parsers: not what is sent
        return "no tabs or line breaks"
    try:
        parsed = URL(url)
        # Both forms, as the client needs them: .host decodes (an "xn--" label that is
        # not valid punycode fails), .raw_host encodes (a label too long fails).
        host = parsed.raw_host if parsed.host else None
    except ValueError as exc:  # UnicodeError (IDNA) is one
        return f"not a valid URL: {exc}"
    if not host:
        return "an absolute http:// or https:// URL"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return ""
    labels = host.removesuffix(".").split(".")
    if len(host) > MAX_HOST or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return (
            "not a valid host name: labels of letters, digits, '-' and '_' (at most 63 "
            "characters each, no spaces)"
        )
    return ""


def _check_event_types(patterns: tuple[str, ...], known: set[str]) -> list[FieldViolation]:
    if not patterns:
        return [FieldViolation("webhook.event_types", "at least one event type")]
    if len(patterns) > MAX_EVENT_TYPES:
        return [FieldViolation("webhook.event_types", f"at most {MAX_EVENT_TYPES}")]
    problems = []
    for i, pattern in enumerate(patterns):
        where = f"webhook.event_types[{i}]"
        if not PATTERN.fullmatch(pattern):
            problems.append(FieldViolation(where, "an event type, 'prefix.*' or '*'"))
        elif not any(matches(pattern, t) for t in known):
            problems.append(FieldViolation(where, f"{pattern!r} matches no registered event type"))
    if len(set(patterns)) != len(patterns):
        problems.append(FieldViolation("webhook.event_types", "contains duplicates"))
    return problems


def _check_retry(policy: RetryPolicy) -> list[FieldViolation]:
    where = "webhook.retry_policy"
    problems = []
    if not 0 <= policy.max_retries <= MAX_RETRIES:
        problems.append(FieldViolation(f"{where}.max_retries", f"between 0 and {MAX_RETRIES}"))
    if not 0.1 <= policy.initial_delay <= 3600:
        problems.append(FieldViolation(f"{where}.initial_delay", "between 100 ms and 1 h"))
    if not 1 <= policy.backoff_multiplier <= 10:
        problems.append(FieldViolation(f"{where}.backoff_multiplier", "between 1 and 10"))
    if not policy.initial_delay <= policy.max_delay <= 86_400:
        problems.append(FieldViolation(f"{where}.max_delay", "between initial_delay and 24 h"))
    if len(policy.delays) > MAX_RETRIES:
        problems.append(FieldViolation(f"{where}.delays", f"at most {MAX_RETRIES} delays"))
    for i, delay in enumerate(policy.delays[:MAX_RETRIES]):
        if not MIN_DELAY <= delay <= MAX_DELAY:
            problems.append(FieldViolation(f"{where}.delays[{i}]", "between 100 ms and 24 h"))
    if len(policy.retry_statuses) > MAX_RETRY_STATUSES:
        problems.append(
            FieldViolation(f"{where}.retry_statuses", f"at most {MAX_RETRY_STATUSES} statuses")
        )
    seen: set[int] = set()
    for i, status in enumerate(policy.retry_statuses[:MAX_RETRY_STATUSES]):
        if not 300 <= status <= 599 or status == 410:
            why = "410 always disables the webhook" if status == 410 else "from 300 to 599"
            problems.append(FieldViolation(f"{where}.retry_statuses[{i}]", why))
        elif status in seen:
            problems.append(FieldViolation(f"{where}.retry_statuses[{i}]", "given twice"))
        seen.add(status)
    if policy.delays and policy.max_retries != len(policy.delays):
        problems.append(
            FieldViolation(
                f"{where}.max_retries",
                f"with delays, the number of delays ({len(policy.delays)}) or 0",
            )
        )
    return problems


def _check_rate(limit: RateLimit) -> list[FieldViolation]:
    problems = []
    if not 0 <= limit.per_second <= 10_000:
        problems.append(FieldViolation("webhook.rate_limit.per_second", "between 0 and 10000"))
    if not 0 <= limit.per_minute <= 600_000:
        problems.append(FieldViolation("webhook.rate_limit.per_minute", "between 0 and 600000"))
    return problems


def _check_headers(headers: Mapping[str, str], header_prefix: str) -> list[FieldViolation]:
    if len(headers) > MAX_HEADERS:
        return [FieldViolation("webhook.headers", f"at most {MAX_HEADERS} headers")]
    problems = []
    for name, value in headers.items():
        where = f"webhook.headers[{name}]"
        if not _HEADER_NAME.fullmatch(name):
            problems.append(FieldViolation(where, "letters, digits and '-' (at most 64)"))
        elif own_header(name, header_prefix):
            problems.append(FieldViolation(where, "set by Herald; cannot be overridden"))
        if len(value) > 1024 or _HEADER_VALUE_FORBIDDEN.search(value):
            problems.append(
                FieldViolation(
                    where, "at most 1024 characters, no line breaks or other control characters"
                )
            )
    return problems


def _check_metadata(metadata: Mapping[str, str]) -> list[FieldViolation]:
    if len(metadata) > MAX_METADATA:
        return [FieldViolation("webhook.metadata", f"at most {MAX_METADATA} entries")]
    return [
        FieldViolation(f"webhook.metadata[{k}]", "key 1-64 and value at most 512 characters")
        for k, v in metadata.items()
        if not 1 <= len(k) <= 64 or len(v) > 512
    ]
