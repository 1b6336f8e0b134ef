"""Subscription rules, pattern matching, secrets and API keys. No I/O."""

from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import InvalidTag
from standardwebhooks.webhooks import Webhook as StandardWebhook

from herald.runtime.auth import ApiKeys
from herald.runtime.errors import Unauthenticated
from herald.runtime.key_pairs import parse_api_keys
from herald.runtime.type_patterns import PatternIndex, matches
from herald.services.webhooks.model import RateLimit, RetryPolicy, WebhookSpec, check
from herald.services.webhooks.secret_box import SecretBox, generate_secret

KNOWN = {"message.created", "message.deleted", "security.alert.created", "user_registered"}


def problems(spec: WebhookSpec) -> dict[str, str]:
    return {v.field: v.description for v in check(spec, KNOWN)}


def test_a_seed_like_subscription_is_valid_with_the_seed_defaults() -> None:
    spec = WebhookSpec(
        "My Webhook", "https://myapp.com/webhooks/katya", ("message.created", "security.*")
    )
    assert check(spec, KNOWN) == []
    assert spec.retry_policy == RetryPolicy(3, 1.0, 2.0, 30.0)


def test_patterns() -> None:
    assert matches("*", "anything.at.all")
    assert matches("message.*", "message.created")
    assert not matches("message.*", "messages.created")
    assert not matches("message.created", "message.deleted")


def test_dispatch_index_answers_as_matches_does() -> None:
    """Dispatch's index of subscriptions selects exactly the webhooks whose patterns
    ``matches`` accepts, each once, for every pattern and type shape."""
    patterns = ["*", "message.*", "message.created", "message.created.*", "m.*", "msg", "a.b.*"]
    types = ["message.created", "message.created.v2", "messages.created", "message", "m.x", "msg"]
    types += ["a.b", "a.b.c", "a.bc", "", "*", "message.*"]
    index: PatternIndex[str] = PatternIndex()
    hooks = {f"hook-{i}": set(ps) for i, ps in enumerate(_subsets(patterns))}
    for hook, ps in hooks.items():
        for p in ps:
            index.add(p, hook)
    for t in types:
        found = index.match(t)
        assert len(found) == len(set(found)), t
        assert set(found) == {h for h, ps in hooks.items() if any(matches(p, t) for p in ps)}, t


def _subsets(items: list[str]) -> list[list[str]]:
    """Every subset of up to two patterns (one webhook each)."""
    return [[a] for a in items] + [[a, b] for i, a in enumerate(items) for b in items[i + 1 :]]


def test_each_bad_field_is_named() -> None:
    spec = WebhookSpec(
        name="x" * 201,
        url="ftp://files.example.com/in",
        event_types=("nope.*", "Bad Type"),
        retry_policy=RetryPolicy(
            max_retries=-1, initial_delay=0.01, backoff_multiplier=0.5, max_delay=0.001
        ),
        rate_limit=RateLimit(per_second=-2),
        headers={"X-Herald-Event": "spoof", "X-Signature": "sha256=0", "X-Ok": "a\nb"},
        metadata={"k" * 65: "v"},
    )
    got = problems(spec)
    assert got["webhook.name"] == "at most 200 characters"
    assert "http:// or https://" in got["webhook.url"]
    assert got["webhook.event_types[0]"] == "'nope.*' matches no registered event type"
    assert "an event type" in got["webhook.event_types[1]"]
    assert got["webhook.retry_policy.max_retries"] == "between 0 and 50"
    assert "webhook.retry_policy.initial_delay" in got
    assert "webhook.retry_policy.backoff_multiplier" in got
    assert "webhook.retry_policy.max_delay" in got
    assert "webhook.rate_limit.per_second" in got
    assert "cannot be overridden" in got["webhook.headers[X-Herald-Event]"]
    assert "cannot be overridden" in got["webhook.headers[X-Signature]"]
    assert "no line breaks" in got["webhook.headers[X-Ok]"]
    assert f"webhook.metadata[{'k' * 65}]" in got


def test_the_events_transport_context_headers_are_herald_s_own() -> None:
    """Herald sends the event's traceparent and x-request-id on every POST, and its
    idempotency-key and x-correlation-id when it has them: a webhook's own header of
    those names was never sent, or sent only with some events."""
    names = ("X-Request-Id", "traceparent", "Tracestate", "Idempotency-Key", "x-correlation-id")
    got = problems(WebhookSpec("n", "https://h/x", ("*",), headers=dict.fromkeys(names, "v")))
    assert got == {f"webhook.headers[{n}]": "set by Herald; cannot be overridden" for n in names}
    assert problems(WebhookSpec("n", "https://h/x", ("*",), headers={"X-Request-Ids": "v"})) == {}


def test_urls() -> None:
    for bad in ("", "not a url", "https://user:pw@host/x", "http://:80/x", "https://h:0/"):
        assert "webhook.url" in problems(WebhookSpec("n", bad, ("*",))), bad
    assert problems(WebhookSpec("n", "http://127.0.0.1:8080/hook?x=1", ("*",))) == {}


def test_generated_secret_is_a_standard_webhooks_secret() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    StandardWebhook(secret)  # the reference library accepts it as a key


def test_secret_box_round_trip_and_binding_to_the_webhook() -> None:
    box = SecretBox(bytes(range(32)))
    sealed = box.seal("whsec_abc", "id-1")
    assert b"whsec_abc" not in sealed
    assert box.open(sealed, "id-1") == "whsec_abc"
    with pytest.raises(InvalidTag):
        box.open(sealed, "id-2")  # copied onto another row: refused
    with pytest.raises(InvalidTag):
        SecretBox(bytes(32)).open(sealed, "id-1")  # another master key


def test_api_keys() -> None:
    keys = ApiKeys(parse_api_keys("hk_test_aaaaaaaaaaaaaaaa=acme, hk_test_bbbbbbbbbbbbbbbb=globex"))
    assert keys.tenant({"authorization": "Bearer hk_test_bbbbbbbbbbbbbbbb"}) == "globex"
    for metadata in (
        {},
        {"authorization": "Basic x"},
        {"authorization": "Bearer hk_test_cccccccccccccccc"},
    ):
        with pytest.raises(Unauthenticated):
            keys.tenant(metadata)
    with pytest.raises(ValueError, match="entry 1"):
        parse_api_keys("short=acme")


@pytest.mark.parametrize("value", ["a\x01b", "a\x00b", "a\x1fb", "a\x7fb", "a\rb", "a\nb", "\x08"])
def test_a_header_value_with_a_control_character_is_refused(value: str) -> None:
    """aiohttp refuses to send such a value: every delivery would fail."""
    got = problems(WebhookSpec("n", "https://h.example/x", ("*",), headers={"X-A": value}))
    assert "control characters" in got["webhook.headers[X-A]"]


def test_a_header_value_may_have_spaces_tabs_and_non_ascii() -> None:
    for value in ("a b", "a\tb", "héllo", "~!#$%&'*+-.^_`|", ""):
        spec = WebhookSpec("n", "https://h.example/x", ("*",), headers={"X-A": value})
        assert problems(spec) == {}, repr(value)


@pytest.mark.parametrize(
    "url",
    [
        "http://exa mple.com/",
        "http://ex\u00a0ample.com/",
        "http://" + "ä" * 70 + ".com/",  # an IDNA label beyond 63 characters
        "http://" + "a" * 64 + ".com/",
        "http://xn--a.com/",  # not punycode: the client cannot decode it
        "http://a..b/",
        "http://a%20b.com/",
        "http://a<b>.com/",
        "http://exa\tmple.com/",  # dropped by the parsers: another host than the one stored
        "http://" + "a." * 127 + "com/",  # beyond 253 characters
    ],
)
def test_a_url_the_client_could_never_reach_is_refused(url: str) -> None:
    assert "webhook.url" in problems(WebhookSpec("n", url, ("*",))), url


def test_host_names_the_client_can_reach_are_accepted() -> None:
    for url in (
        "http://пример.рф/",
        "https://straße.de/hook",
        "http://xn--e1afmkfd.xn--p1ai/",
        "http://a_b.example.com./x",
        "http://[::1]:8080/",
        "http://2130706433/",
        "http://localhost/x y",
        "http://" + "a" * 63 + ".com/",
    ):
        assert problems(WebhookSpec("n", url, ("*",))) == {}, url


@pytest.mark.parametrize("name", ["X-A\n", "X-A\r\n"])
def test_a_header_name_with_a_final_line_break_is_refused(name: str) -> None:
    """`$` matched before a final newline: the name was stored, and every delivery failed."""
    got = problems(WebhookSpec("n", "https://h.example/x", ("*",), headers={name: "v"}))
    assert "letters, digits and '-'" in got[f"webhook.headers[{name}]"]


@pytest.mark.parametrize("pattern", ["message.created\n", "message.*\n", "*\n"])
def test_an_event_type_pattern_with_a_final_newline_is_not_a_pattern(pattern: str) -> None:
    got = problems(WebhookSpec("n", "https://h.example/x", (pattern,)))
    assert got["webhook.event_types[0]"] == "an event type, 'prefix.*' or '*'"
