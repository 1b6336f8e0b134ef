"""Signing secrets: generated per Standard Webhooks, encrypted at rest with AES-GCM."""

from __future__ import annotations

import base64
import os
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE = 12


def generate_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes (the Standard Webhooks form)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class SecretBox:
    """Encrypts secrets with the master key; the webhook id is bound in as AAD, so a
    ciphertext copied onto another row does not decrypt."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key is 32 bytes (AES-256)")
        self._aead = AESGCM(master_key)

    def seal(self, secret: str, webhook_id: str) -> bytes:
        """nonce || ciphertext+tag."""
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, secret.encode(), webhook_id.encode())

    def open(self, sealed: bytes, webhook_id: str) -> str:
        """The secret; raises cryptography's InvalidTag when tampered with."""
        return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], webhook_id.encode()).decode()
