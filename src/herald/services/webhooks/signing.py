"""The body and signature headers of a webhook delivery. Pure: no I/O, no clock.

Two signature schemes are sent side by side, because receivers come in two kinds:

* receivers written from the Katya seed check ``X-Katya-Signature: sha256=<hex>`` (Herald
  names its headers ``X-Herald-…`` unless ``WEBHOOKS_HEADER_PREFIX`` says otherwise), an
  HMAC-SHA256 of the body keyed by the secret's UTF-8 bytes. The seed's Python example
  does not HMAC the raw body but ``json.dumps(request.get_json())``: the body parsed and
  serialized again. So we serialize the body exactly as ``json.dumps`` does with its
  default arguments; then that re-serialization reproduces our bytes and the check passes.
* everyone else (and the ``standardwebhooks`` libraries) check the Standard Webhooks
  headers ``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature``, whose HMAC also
  covers the message id and timestamp, so a captured request cannot be replayed later.

During a secret rotation both secrets sign, so a receiver may switch to the new secret
at any moment of the grace period.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

# The events seed (000) names the webhook HMAC header X-Signature: the same value as
# the prefixed one (``X-Herald-Signature``), for receivers written from it.
SEED_SIGNATURE = "X-Signature"
WHSEC = "whsec_"
# A prefix of header names: hyphen-separated ASCII letters and digits (``X-Katya``).
HEADER_PREFIX = re.compile(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*")
MAX_HEADER_PREFIX = 32


@dataclass(frozen=True, slots=True)
class HeaderNames:
    """The names of the headers Herald sets on a delivery, under one prefix: the seed's
    ``X-Katya-Event``, ``X-Katya-Signature``, … are ``HeaderNames.under("X-Katya")``."""

    prefix: str
    event: str
    delivery: str
    timestamp: str
    signature: str
    signature_previous: str
    retry_count: str
    retry_reason: str
    retry_after: str

    @classmethod
    def under(cls, prefix: str) -> HeaderNames:
        """The names under ``prefix``; ValueError unless :func:`prefix_problem` is None."""
        if (problem := prefix_problem(prefix)) is not None:
            raise ValueError(problem)
        suffixes = ("Event", "Delivery", "Timestamp", "Signature", "Signature-Previous")
        retries = ("Retry-Count", "Retry-Reason", "Retry-After")
        return cls(prefix, *(f"{prefix}-{suffix}" for suffix in suffixes + retries))


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot name Herald's headers, None when it can."""
    if len(prefix) > MAX_HEADER_PREFIX or not HEADER_PREFIX.fullmatch(prefix):
        return (
            f"{prefix!r} is not a header name prefix: ASCII letters and digits, parts joined "
            f"by '-', at most {MAX_HEADER_PREFIX} characters (e.g. X-Katya)"
        )
    if prefix.lower() == "webhook":  # webhook-timestamp, webhook-signature: Standard Webhooks'
        return f"{prefix!r} would collide with the Standard Webhooks headers (webhook-*)"
    return None


DEFAULT_HEADER_PREFIX = "X-Herald"  # WEBHOOKS_HEADER_PREFIX unless set
HERALD = HeaderNames.under(DEFAULT_HEADER_PREFIX)


def body_of(event_id: str, event_type: str, created_at: str, data: object) -> bytes:
    """The seed's request body ``{"id", "type", "createdAt", "data"}``, in that key order.

    Serialized by ``json.dumps`` with default arguments (separators ``", "`` and
    ``": "``, ``ensure_ascii=True``) because the seed's verifier HMACs
    ``json.dumps(request.get_json())``: parsing keeps key order and ``json.dumps`` of the
    parsed value gives back these same bytes, non-ASCII text included (it travels as
    ``\\uXXXX`` escapes both times). ``ensure_ascii`` makes the result pure ASCII, so
    the UTF-8 encoding is only a formality.
    """
    envelope = {"id": event_id, "type": event_type, "createdAt": created_at, "data": data}
    return json.dumps(envelope).encode("utf-8")


@functools.lru_cache(maxsize=1024)
def standard_key(secret: str) -> bytes:
    """The HMAC key a Standard Webhooks verifier derives from ``secret``.

    A ``whsec_`` secret carries its key in base64 after the prefix (the spec's form, and
    what ``generate_secret`` makes); any other string is used as its UTF-8 bytes, as the
    seed's scheme does, so a secret a customer chose still yields a usable signature.
    """
    if secret.startswith(WHSEC):
        try:
            # "==" as the standardwebhooks library does: tolerate unpadded base64.
            return base64.b64decode(secret[len(WHSEC) :] + "==")
        except binascii.Error:
            pass  # not base64 after all: fall back to the plain bytes below
    return secret.encode("utf-8")


def strict_standard_key(secret: str) -> bytes | None:
    """The key of a ``whsec_`` secret if what follows the prefix is base64 (standard
    alphabet, padding optional) as the Standard Webhooks libraries decode it; else None.

    :func:`standard_key` is lenient (it drops characters outside the alphabet, so
    ``whsec_................`` yields an empty key); this is the check a caller's secret
    must pass, while :func:`standard_key` keeps signing with what is already stored.
    """
    body = secret.removeprefix(WHSEC)
    unpadded = body.rstrip("=")
    if not secret.startswith(WHSEC) or len(body) - len(unpadded) > 2:
        return None
    try:
        return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except binascii.Error:
        return None


def seed_signature(body: bytes, secret: str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the raw body with the secret's UTF-8 bytes."""
    return "sha256=" + hmac.digest(secret.encode("utf-8"), body, "sha256").hex()


def standard_signature(body: bytes, msg_id: str, timestamp: int, secret: str) -> str:
    """``v1,<base64>``: HMAC-SHA256 of ``{msg_id}.{timestamp}.{body}`` (Standard Webhooks)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.digest(standard_key(secret), signed, "sha256")
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(
    body: bytes,
    msg_id: str,
    timestamp: int,
    secrets: Sequence[str],
    names: HeaderNames = HERALD,
) -> dict[str, str]:
    """The signature headers for one delivery attempt of ``body``.

    ``secrets[0]`` is the current secret, ``secrets[1]`` (optional) the previous one
    while a rotation's grace period lasts. ``names.signature`` (``X-Herald-Signature``)
    always uses the current secret (a seed receiver compares one value), and so does
    ``X-Signature`` (the same value, as the events seed names it); the previous
    secret's goes to ``names.signature_previous``. ``webhook-signature`` lists one
    ``v1,<sig>`` per secret separated by a space, which Standard Webhooks verifiers
    accept if any matches. ``timestamp`` is Unix seconds; the caller passes the
    attempt's time so each retry is signed afresh (verifiers reject old timestamps).
    """
    if not 1 <= len(secrets) <= 2:
        raise ValueError(f"one or two secrets (current, previous), not {len(secrets)}")
    if any(not secret for secret in secrets):
        raise ValueError("a signing secret is empty")
    signature = seed_signature(body, secrets[0])
    headers = {names.signature: signature, SEED_SIGNATURE: signature}
    if len(secrets) == 2:
        headers[names.signature_previous] = seed_signature(body, secrets[1])
    headers["webhook-id"] = msg_id
    headers["webhook-timestamp"] = str(timestamp)
    headers["webhook-signature"] = " ".join(
        standard_signature(body, msg_id, timestamp, secret) for secret in secrets
    )
    return headers
