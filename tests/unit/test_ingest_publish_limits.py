"""What a caller may publish: event types (INGEST_API_KEY_EVENT_TYPES), sources
(INGEST_API_KEY_SOURCES) and application ids (INGEST_API_KEY_APPLICATION_IDS)."""

from __future__ import annotations

import re

import pytest

from herald.services.ingest.publish_limits import (
    PublishLimits,
    parse_application_id_limits,
    parse_source_limits,
    parse_type_limits,
)

CALLERS = {"billing", "herald", "ops"}
KEYS = {f"key-of-{name}-0123456789": name for name in CALLERS}  # the callers' API keys
SRC = "urn:any"


def test_a_limited_caller_publishes_only_the_types_its_patterns_select() -> None:
    limits = PublishLimits(
        parse_type_limits(
            "billing = billing.* | user_registered, herald=herald.*|integration.conflict.detected",
            CALLERS,
        )
    )
    assert limits.refusal("billing", "billing.invoice.paid", SRC) is None
    assert limits.refusal("billing", "user_registered", SRC) is None
    assert limits.refusal("herald", "integration.conflict.detected", SRC) is None
    assert limits.refusal("ops", "anything.at.all", SRC) is None, "not named: not limited"
    assert limits.refusal("", "billing.x", SRC) is None, "no key (ingest without keys)"
    assert limits.refusal("billing", "billing", SRC) is not None, "billing.* is below billing."
    assert limits.refusal("billing", "user_registered_v2", SRC) is not None
    assert limits.refusal("billing", "integration.return.created", SRC) == (
        "caller 'billing' may not publish events of type 'integration.return.created' "
        "(INGEST_API_KEY_EVENT_TYPES lets it publish billing.*, user_registered)"
    )
    assert PublishLimits(parse_type_limits("ops=*", CALLERS)).refusal("ops", "x.y", SRC) is None


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
        parse_type_limits(text, CALLERS, KEYS)


def test_without_keys_the_setting_would_limit_nobody() -> None:
    with pytest.raises(ValueError, match="no API keys"):
        parse_type_limits("ops=x.*", set())
    assert parse_type_limits("", set()) == {}


def test_patterns_that_select_no_known_type_are_named() -> None:
    limits = PublishLimits(
        parse_type_limits("billing=billing.*|user_registred, ops=*, herald=herald.*", CALLERS)
    )
    known = ["user_registered", "billing.invoice.paid", "message.created"]
    assert limits.unmatched(known) == {"billing": ["user_registred"], "herald": ["herald.*"]}
    assert limits.unmatched([*known, "herald.webhook.disabled", "user_registred"]) == {}


def test_a_limited_caller_publishes_only_from_the_sources_its_patterns_select() -> None:
    limits = PublishLimits(
        parse_type_limits("billing=billing.*", CALLERS),
        parse_source_limits("billing = urn:billing:* | /billing, ops=*", CALLERS),
    )
    assert limits.refusal("billing", "billing.paid", "urn:billing:invoices") is None
    assert limits.refusal("billing", "billing.paid", "urn:billing:") is None
    assert limits.refusal("billing", "billing.paid", "/billing") is None
    assert limits.refusal("ops", "x", "anything") is None
    assert limits.refusal("herald", "x", "urn:billing:x") is None, "not named: not limited"
    assert limits.refusal("billing", "billing.paid", "urn:billing") is not None
    assert limits.refusal("billing", "billing.paid", "/billing/x") is not None
    assert limits.refusal("billing", "billing.paid", "urn:herald:dispatch") == (
        "caller 'billing' may not publish events from source 'urn:herald:dispatch' "
        "(INGEST_API_KEY_SOURCES lets it publish from urn:billing:*, /billing)"
    )
    assert limits.refusal("billing", "user_registered", "urn:herald:dispatch") == (
        "caller 'billing' may not publish events of type 'user_registered' "
        "(INGEST_API_KEY_EVENT_TYPES lets it publish billing.*)"
    ), "the type is named first"
    assert limits.refusal("billing", "billing.paid", "") is None, "left to validation"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("billing=urn:a b", "entry 1: 'urn:a b' holds white space"),
        ("billing=urn:*:x", "entry 1: 'urn:*:x': '*' may only end a source pattern"),
        ("billing=**", "entry 1: '**': '*' may only end"),
        ("billing=", "entry 1: expected NAME=source|prefix*|…"),
        ("ops=*,nobody=x", "entry 2: no API key is named 'nobody'"),
    ],
)
def test_a_bad_source_entry_is_refused_naming_it(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        parse_source_limits(text, CALLERS, KEYS)


def test_the_star_entry_limits_every_caller_not_named() -> None:
    """A caller added later (to a keys file, say) is limited by default."""
    limits = PublishLimits(
        parse_type_limits("*=message.*, ops=*", CALLERS),
        parse_source_limits("*=urn:apps:*", CALLERS),
    )
    assert limits.refusal("ops", "user_registered", "urn:apps:x") is None
    assert limits.refusal("newcomer", "message.created", "urn:apps:x") is None
    assert limits.refusal("newcomer", "user_registered", "urn:apps:x") == (
        "caller 'newcomer' may not publish events of type 'user_registered' "
        "(INGEST_API_KEY_EVENT_TYPES lets it publish message.*)"
    )
    assert limits.refusal("ops", "x", "urn:other") is not None, "ops is not named for sources"
    with pytest.raises(ValueError, match="entry 2: caller '\\*' is given twice"):
        parse_type_limits("*=x, *=y", CALLERS)


def test_a_limited_caller_sends_only_the_application_ids_its_patterns_select() -> None:
    limits = PublishLimits(
        application_ids=parse_application_id_limits("billing=billing|billing-*, *=apps-*", CALLERS)
    )
    assert limits.refusal("billing", "t", SRC, "billing") is None
    assert limits.refusal("billing", "t", SRC, "billing-eu") is None
    assert limits.refusal("billing", "t", SRC, "") is None, "none: left to validation"
    assert limits.refusal("billing", "t", SRC, "payments") == (
        "caller 'billing' may not publish as application-id 'payments' "
        "(INGEST_API_KEY_APPLICATION_IDS lets it publish as billing, billing-*)"
    )
    assert limits.refusal("billing", "t", SRC, "billing-") is None, "the prefix is one"
    assert limits.refusal("billin", "t", SRC, "billin") is not None, "* covers it"
    assert limits.refusal("ops", "t", SRC, "apps-ops") is None
    assert limits.refusal("", "t", SRC, "payments") is None, "no key (ingest without keys)"
    assert PublishLimits().refusal("billing", "t", SRC, "payments") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("billing=a b", "entry 1: 'a b' holds white space: not an application id"),
        ("billing=a*b", "entry 1: 'a*b': '*' may only end an application-id pattern"),
        ("billing", "entry 1: expected NAME=id|prefix*|…"),
        ("nobody=x", "entry 1: no API key is named 'nobody'"),
    ],
)
def test_a_bad_application_id_entry_is_refused_naming_it(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_application_id_limits(text, CALLERS, KEYS)


def test_without_api_keys_the_callers_are_client_certificate_names() -> None:
    """A service with mutual TLS and GRPC_TLS_CLIENT_NAMES but no keys: its limits
    name the certificates' identities, and a name it does not let in is refused."""
    names = {"client-a", "spiffe://herald/billing"}
    limits = parse_type_limits("spiffe://herald/billing=billing.*", names)
    assert limits == {"spiffe://herald/billing": ("billing.*",)}
    with pytest.raises(ValueError, match="'client-z' is not a name GRPC_TLS_CLIENT_NAMES lets in"):
        parse_type_limits("client-z=x.*", names)
