"""Webhook bodies and signatures, checked by the verifiers receivers actually run:
the Katya seed's Python function and the ``standardwebhooks`` library. No I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from herald.services.webhooks.secret_box import generate_secret
from herald.services.webhooks.signing import HeaderNames, body_of, signature_headers

# Copied verbatim from the seed (004, "Валидация подписи", the Python example).
# fmt: off

def verify_webhook_signature(payload, signature, secret):  # type: ignore[no-untyped-def]
    expected_signature = hmac.new(
        secret.encode('utf-8'),
        payload.encode('utf-8'),
        hashlib.sha256
    ).hexdigest()

    provided_signature = signature.replace('sha256=', '')

    return hmac.compare_digest(expected_signature, provided_signature)

# fmt: on
# End of the seed's code.

SEED_DATA = {
    "id": "msg_456",
    "roomId": "room_789",
    "senderId": "user_101",
    "content": "Hello, world!",
    "messageType": "text",
    "createdAt": "2024-01-01T12:00:00Z",
    "metadata": {"priority": "normal", "encrypted": True},
}


def seed_handler_accepts(
    body: bytes, headers: dict[str, str], secret: str, name: str = "X-Herald-Signature"
) -> bool:
    """What the seed's Flask handler does: ``json.dumps(request.get_json())``, then verify."""
    payload = json.dumps(json.loads(body))
    signature = headers[name]
    return bool(verify_webhook_signature(payload, signature, secret))  # type: ignore[no-untyped-call]


def signed(body: bytes, secrets: list[str]) -> dict[str, str]:
    return signature_headers(body, "msg_2bX9", int(time.time()), secrets)


def test_the_body_is_the_seed_shape_in_json_dumps_form() -> None:
    body = body_of("evt_123", "message.created", "2024-01-01T12:00:00Z", SEED_DATA)
    assert body.startswith(b'{"id": "evt_123", "type": "message.created", "createdAt": ')
    assert list(json.loads(body)) == ["id", "type", "createdAt", "data"]
    assert body == json.dumps(json.loads(body)).encode()  # what the seed re-serializes


@pytest.mark.parametrize("secret", ["my-webhook-secret", generate_secret()])
def test_the_seed_verifier_accepts_x_herald_signature(secret: str) -> None:
    body = body_of("evt_123", "message.created", "2024-01-01T12:00:00Z", SEED_DATA)
    assert seed_handler_accepts(body, signed(body, [secret]), secret)
    assert not seed_handler_accepts(body, signed(body, ["another-secret"]), secret)


def test_non_ascii_data_round_trips_and_verifies() -> None:
    data = {"content": "Привет, мир! 🎉", "метка": ["ё", "Ж"], "n": 1.5, "none": None}
    body = body_of("evt_1", "message.created", "2024-01-01T12:00:00Z", data)
    assert body.isascii()  # ensure_ascii: \\uXXXX escapes, as json.dumps writes them
    assert json.loads(body)["data"] == data
    secret = "секрет-with-unicode"
    assert seed_handler_accepts(body, signed(body, [secret]), secret)


def test_standard_webhooks_verifies_a_whsec_secret() -> None:
    secret = generate_secret()
    body = body_of("evt_1", "message.created", "2024-01-01T12:00:00Z", SEED_DATA)
    headers = signed(body, [secret])
    assert headers["webhook-id"] == "msg_2bX9"
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]
    assert "X-Herald-Signature-Previous" not in headers
    assert Webhook(secret).verify(body, headers)["data"] == SEED_DATA


def test_during_a_rotation_both_secrets_verify() -> None:
    new, old = generate_secret(), generate_secret()
    body = body_of("evt_1", "message.created", "2024-01-01T12:00:00Z", SEED_DATA)
    headers = signed(body, [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(body, headers)
    Webhook(old).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)
    # The seed-style headers: current secret in the main one, previous in its own.
    assert seed_handler_accepts(body, headers, new)
    previous = {"X-Herald-Signature": headers["X-Herald-Signature-Previous"]}
    assert seed_handler_accepts(body, previous, old)


def test_a_tampered_body_fails_both_schemes() -> None:
    secret = generate_secret()
    body = body_of("evt_1", "message.created", "2024-01-01T12:00:00Z", SEED_DATA)
    headers = signed(body, [secret])
    tampered = body.replace(b"Hello, world!", b"Hello, World!")
    assert not seed_handler_accepts(tampered, headers, secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, headers)


def test_a_plain_secret_signs_standard_webhooks_with_its_utf8_bytes() -> None:
    secret = "plain-секрет"
    body = b'{"id": "evt_1"}'
    headers = signature_headers(body, "msg_1", 1_700_000_000, [secret])
    mac = hmac.new(secret.encode(), b"msg_1.1700000000." + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    assert headers["webhook-timestamp"] == "1700000000"


def test_a_whsec_secret_is_keyed_by_its_base64_bytes() -> None:
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = signature_headers(b"{}", "msg_1", 1_700_000_000, [secret])
    mac = hmac.new(key, b"msg_1.1700000000.{}", hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    seed = hmac.new(secret.encode(), b"{}", hashlib.sha256).hexdigest()
    assert headers["X-Herald-Signature"] == "sha256=" + seed  # the seed keys by the string


@pytest.mark.parametrize("secrets", [[], ["a", "b", "c"], [""]])
def test_one_or_two_non_empty_secrets(secrets: list[str]) -> None:
    with pytest.raises(ValueError, match="secret"):
        signature_headers(b"{}", "msg_1", 1, secrets)


def test_the_seeds_header_names_under_the_x_katya_prefix() -> None:
    names = HeaderNames.under("X-Katya")
    assert (names.event, names.delivery, names.timestamp, names.signature) == (
        "X-Katya-Event",
        "X-Katya-Delivery",
        "X-Katya-Timestamp",
        "X-Katya-Signature",
    )
    assert (names.retry_count, names.retry_reason, names.retry_after) == (
        "X-Katya-Retry-Count",
        "X-Katya-Retry-Reason",
        "X-Katya-Retry-After",
    )
    body = body_of("evt_123", "message.created", "2024-01-01T12:00:00Z", SEED_DATA)
    secret = "my_webhook_secret"
    headers = signature_headers(body, "d-1", int(time.time()), [secret], names)
    assert seed_handler_accepts(body, headers, secret, "X-Katya-Signature")
    assert not [name for name in headers if name.startswith("X-Herald")]
