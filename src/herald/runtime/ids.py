"""Deterministic ids: ``str(uuid.uuid5(namespace, name))`` without building UUID objects.

Hot paths make one per job (dispatch: every NotificationJob and DeliveryJob); the
standard library's ``uuid5`` plus ``str()`` costs ~3.7 µs here, this ~1.2 µs, with
the same result (RFC 4122 version 5: SHA-1 of namespace + name).
"""

from __future__ import annotations

import hashlib
import os
import uuid


def uuid5_text(namespace: uuid.UUID, name: str) -> str:
    """The same text as ``str(uuid.uuid5(namespace, name))``."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode()).digest()[:16])  # noqa: S324 (RFC 4122 v5)
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def new_request_id() -> str:
    """An X-Request-Id of Herald's own (32 random hex digits), for an event whose call
    sent none: every event Herald publishes or delivers carries one (seed 001)."""
    return os.urandom(16).hex()
