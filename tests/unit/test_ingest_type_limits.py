"""Which event types a caller may publish (INGEST_API_KEY_EVENT_TYPES)."""

from __future__ import annotations

import re

import pytest

from herald.services.ingest.type_limits import TypeLimits, parse_type_limits

CALLERS = {"billing", "herald", "ops"}


def test_a_limited_caller_publishes_only_the_types_its_patterns_select() -> None:
    limits = TypeLimits(
        parse_type_limits(
            "billing = billing.* | user_registered, herald=herald.*|integration.conflict.detected",
            CALLERS,
        )
    )
    assert limits.refusal("billing", "billing.invoice.paid") is None
    assert limits.refusal("billing", "user_registered") is None
    assert limits.refusal("herald", "integration.conflict.detected") is None
    assert limits.refusal("ops", "anything.at.all") is None, "a caller not named is not limited"
    assert limits.refusal("", "billing.x") is None, "no key (ingest without keys)"
    assert limits.refusal("billing", "billing") is not None, "billing.* is below billing."
    assert limits.refusal("billing", "user_registered_v2") is not None
    assert limits.refusal("billing", "integration.return.created") == (
        "caller 'billing' may not publish events of type 'integration.return.created' "
        "(INGEST_API_KEY_EVENT_TYPES lets it publish billing.*, user_registered)"
    )
    assert TypeLimits(parse_type_limits("ops=*", CALLERS)).refusal("ops", "x.y") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("billing=Billing.*", "entry 1: 'Billing.*' is not an event type, 'prefix.*' or '*'"),
        ("billing=billing*", "entry 1: 'billing*' is not an event type"),
        ("billing=*.paid", "entry 1: '*.paid' is not an event type"),
        ("billing=", "entry 1: expected NAME=type|prefix.*|…"),
        ("ops=x,nobody=x", "entry 2: no API key is named 'nobody'"),
        ("ops=x,ops=y", "entry 2: caller 'ops' is given twice"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        parse_type_limits(text, CALLERS)


def test_without_keys_the_setting_would_limit_nobody() -> None:
    with pytest.raises(ValueError, match="no API keys"):
        parse_type_limits("ops=x.*", set())
    assert parse_type_limits("", set()) == {}


def test_patterns_that_select_no_known_type_are_named() -> None:
    limits = TypeLimits(
        parse_type_limits("billing=billing.*|user_registred, ops=*, herald=herald.*", CALLERS)
    )
    known = ["user_registered", "billing.invoice.paid", "message.created"]
    assert limits.unmatched(known) == {"billing": ["user_registred"], "herald": ["herald.*"]}
    assert limits.unmatched([*known, "herald.webhook.disabled", "user_registred"]) == {}
