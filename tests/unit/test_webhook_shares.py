"""How many attempts a process makes at once per webhook and per tenant."""

from __future__ import annotations

import uuid

from herald.services.webhooks.shares import Held, Shares

SLOW_A = Held("a", probe=False)
PROBE_A = Held("a", probe=True)


def test_a_tenants_slow_webhooks_share_one_cap_and_fast_ones_are_not_capped() -> None:
    shares = Shares(per_webhook=2, per_tenant=3)
    a1, a2, a3, b1 = (uuid.uuid4() for _ in range(4))
    for hook in (a1, a2):
        shares.learned(hook, "a", fast=False)
    taken = [shares.start(a1, "a"), shares.start(a1, "a"), shares.start(a2, "a")]
    assert taken == [SLOW_A, SLOW_A, SLOW_A]
    assert shares.capped(a1, "a")  # its own share
    assert shares.capped(a2, "a"), "known slow, its tenant's share full"
    assert shares.room(a3, "a") == 1, "untried a3: one probe, not held up by a1 and a2"
    assert not shares.capped(b1, "b"), "another tenant is not held up"
    assert sorted(shares.excluded()) == sorted([a1, a2])
    assert shares.start(a3, "a") == PROBE_A  # the probe counts as slow until it answers
    assert shares.capped(a3, "a"), "one probe at a time"
    assert a3 in shares.excluded()
    shares.learned(a3, "a", fast=True)  # a quick answer: a3 is not capped any more
    shares.finish(a3, PROBE_A)
    assert not shares.capped(a3, "a")
    assert shares.room(a3, "a") is None
    assert shares.start(a3, "a") is None  # a fast webhook's attempt counts as no share
    shares.finish(a2, SLOW_A)
    assert not shares.capped(a2, "a")
    assert shares.room(a2, "a") == 1
    assert shares.excluded() == [a1]


def test_a_webhook_that_turns_slow_is_capped_again() -> None:
    shares = Shares(per_webhook=1, per_tenant=1)
    hook = uuid.uuid4()
    shares.learned(hook, "a", fast=True)
    assert [shares.start(hook, "a"), shares.start(hook, "a")] == [None, None]
    assert not shares.capped(hook, "a")
    shares.learned(hook, "a", fast=False)
    assert shares.capped(hook, "a")
    shares.finish(hook, None)
    shares.finish(hook, None)
    assert not shares.capped(hook, "a")
    assert shares.excluded() == []


def test_a_webhook_another_process_found_slow_gets_no_probe_unless_tried_here() -> None:
    shares = Shares(per_webhook=1, per_tenant=1)
    a1, a2, a3 = (uuid.uuid4() for _ in range(3))
    assert shares.start(a1, "a") == SLOW_A  # the tenant's share is full
    shares.heard_slow(a2, "a")  # stored as slow by another process: no probe
    assert shares.capped(a2, "a")
    assert a2 in shares.excluded(), "claims leave it out"
    assert shares.room(a3, "a") == 1, "untried and not stored as slow: a probe"
    assert shares.learned(a3, "a", fast=True), "a new verdict (untried → fast)"
    assert not shares.learned(a3, "a", fast=True), "the same again: nothing new to store"
    shares.heard_slow(a3, "a")  # what this process measured itself comes first
    assert shares.room(a3, "a") is None
    assert shares.learned(a3, "a", fast=False)
    assert not shares.learned(a3, "a", fast=False)


def test_a_tenants_probes_are_bounded_and_then_only_its_fast_webhooks_are_claimed() -> None:
    """Many new webhooks of one tenant, their endpoints timing out: past the tenant's
    share each got a probe, and together they held every slot."""
    shares = Shares(per_webhook=2, per_tenant=2)
    fast, *new = (uuid.uuid4() for _ in range(6))
    shares.learned(fast, "a", fast=True)
    assert [shares.start(new[0], "a"), shares.start(new[0], "a")] == [SLOW_A, SLOW_A]
    assert shares.tenant_full("a")
    assert shares.excluded_tenants() == ([], []), "untried ones may still probe"
    assert [shares.start(new[1], "a"), shares.start(new[2], "a")] == [PROBE_A, PROBE_A]
    assert shares.probing_full("a")
    assert shares.room(new[3], "a") == 0, "no third probe"
    assert shares.room(uuid.uuid4(), "b") is not None, "another tenant is not held up"
    assert not shares.capped(uuid.uuid4(), "b")
    assert shares.excluded_tenants() == (["a"], [fast]), "claims take a's fast ones only"
    assert shares.room(fast, "a") is None
    shares.finish(new[1], PROBE_A)
    assert not shares.probing_full("a")
    assert shares.room(new[3], "a") == 1, "a probe's turn again"
    assert shares.excluded_tenants() == ([], [])
    shares.finish(new[0], SLOW_A)
    shares.finish(new[0], SLOW_A)
    shares.finish(new[2], PROBE_A)
    assert not shares.tenant_full("a")
    assert shares.room(new[4], "a") == 2


def test_a_forgotten_fast_webhook_is_no_longer_let_through_its_probing_tenant() -> None:
    shares = Shares(per_webhook=1, per_tenant=1)
    fast, slow, probe = (uuid.uuid4() for _ in range(3))
    shares.learned(fast, "a", fast=True)
    shares.start(slow, "a")
    shares.start(probe, "a")
    assert shares.excluded_tenants() == (["a"], [fast])
    shares.forget(fast)  # another URL: untried again
    assert shares.excluded_tenants() == (["a"], [])
    shares.learned(fast, "a", fast=False)
    assert shares.excluded_tenants() == (["a"], [])


def test_a_verdict_holds_for_the_endpoint_it_was_reached_at() -> None:
    """Another replica served the UpdateWebhook: this process learns of the new URL (or
    of the webhook's re-enabling) from the next delivery it claims."""
    shares = Shares(per_webhook=1, per_tenant=1)
    a1, a2 = uuid.uuid4(), uuid.uuid4()
    old, moved, reenabled = ("https://x/old", 1), ("https://x/new", 1), ("https://x/old", 2)
    assert shares.start(a1, "a") == SLOW_A  # the tenant's share is full
    shares.learned(a2, "a", fast=False, endpoint=old)
    shares.at_endpoint(a2, old)
    assert shares.room(a2, "a") == 0, "slow at the endpoint it still has"
    shares.at_endpoint(a2, moved)
    assert shares.room(a2, "a") == 1, "untried at the new URL: a probe"
    shares.learned(a2, "a", fast=False, endpoint=moved)
    shares.at_endpoint(a2, reenabled)
    assert shares.room(a2, "a") == 1, "re-enabled: untried again"
    shares.heard_slow(a2, "a", reenabled)  # stored as slow there by another process
    assert shares.room(a2, "a") == 0
    shares.learned(a2, "a", fast=True, endpoint=reenabled)
    shares.at_endpoint(a2, reenabled)
    assert shares.is_fast(a2)


def test_an_attempt_at_an_endpoint_the_webhook_has_left_says_nothing() -> None:
    """An attempt at the old URL that times out after a claim showed the new one (and
    the new one was found fast) neither makes the webhook slow nor is stored."""
    shares = Shares(per_webhook=1, per_tenant=1)
    a1, a2 = uuid.uuid4(), uuid.uuid4()
    old, new = ("https://x/old", 1), ("https://x/new", 1)
    assert shares.start(a1, "a") == SLOW_A
    shares.at_endpoint(a2, old)
    shares.at_endpoint(a2, new)
    assert shares.learned(a2, "a", fast=True, endpoint=new)
    assert not shares.learned(a2, "a", fast=False, endpoint=old), "stale: nothing to store"
    assert shares.is_fast(a2)


def test_a_verdict_loaded_at_start_goes_when_a_claim_shows_another_endpoint() -> None:
    shares = Shares(per_webhook=1, per_tenant=1)
    a1, a2 = uuid.uuid4(), uuid.uuid4()
    assert shares.start(a1, "a") == SLOW_A
    shares.heard_slow(a2, "a", ("https://x/old", 1))  # stored as slow: loaded at start
    assert shares.room(a2, "a") == 0
    shares.at_endpoint(a2, ("https://x/new", 1))  # moved by another replica meanwhile
    assert shares.room(a2, "a") == 1, "untried at the new URL: a probe"


def test_after_a_move_served_here_an_attempt_in_flight_to_the_old_url_says_nothing() -> None:
    shares = Shares(per_webhook=1, per_tenant=1)
    a1, a2 = uuid.uuid4(), uuid.uuid4()
    old, new = ("https://x/old", 1), ("https://x/new", 1)
    assert shares.start(a1, "a") == SLOW_A
    shares.at_endpoint(a2, old)  # claimed: an attempt to the old URL in flight
    shares.moved(a2)  # UpdateWebhook served by this process
    assert not shares.learned(a2, "a", fast=False, endpoint=old), "the old URL's timeout"
    assert shares.room(a2, "a") == 1, "still untried: a probe at the new URL"
    shares.at_endpoint(a2, new)
    assert shares.learned(a2, "a", fast=True, endpoint=new)
    assert shares.is_fast(a2)
