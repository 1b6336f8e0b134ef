"""Which of a limiting setting's entries hold for a call: one API key's name, or a
client certificate's identities (several subject alternative names)."""

from __future__ import annotations

import pytest

from herald.runtime.auth import CLIENT_NAMES, ClientNameInterceptor, check_method, limits_of
from herald.runtime.errors import PermissionDenied
from herald.services.ingest.publish_limits import PublishLimits

METHODS = {"billing.internal": frozenset({"Publish"}), "ops.internal": frozenset({"Publish", "X"})}


def test_a_certificate_naming_two_limited_identities_gets_both_limits_in_any_order() -> None:
    """The first allowed identity alone decided: [ops, billing] escaped billing's limit
    where [billing, ops] did not."""
    for names in (("ops.internal", "billing.internal"), ("billing.internal", "ops.internal")):
        with pytest.raises(PermissionDenied) as exc:
            check_method(METHODS, names, "/pkg.S/X", "INGEST_API_KEY_METHODS")
        assert exc.value.args[0].startswith("caller 'billing.internal' may not call X")
        check_method(METHODS, names, "/pkg.S/Publish", "INGEST_API_KEY_METHODS")


def test_the_star_entry_holds_only_for_callers_the_setting_does_not_name() -> None:
    lists = {"billing": ("a",), "*": ("b",)}
    assert limits_of(lists, ("billing", "other")) == [("billing", ("a",))]
    assert limits_of(lists, ("other", "more")) == [("other", ("b",))]
    assert limits_of({"billing": ("a",)}, ("other",)) == []
    assert limits_of(lists, ()) == []


def test_publish_limits_hold_for_every_identity_named() -> None:
    limits = PublishLimits(types={"billing.internal": ("billing.*",), "ops.internal": ("*",)})
    names = ("ops.internal", "billing.internal")
    assert limits.refusal(names, "user_registered", "urn:x") == (
        "caller 'billing.internal' may not publish events of type 'user_registered' "
        "(INGEST_API_KEY_EVENT_TYPES lets it publish billing.*)"
    )
    assert limits.refusal(names, "billing.paid", "urn:x") is None
    assert limits.refusal(("ops.internal",), "user_registered", "urn:x") is None
    assert limits.refusal((), "user_registered", "urn:x") is None, "no caller: not limited"


class _Peer:
    """A call's context as the interceptors read it: the certificate's identities."""

    def __init__(self, *identities: str) -> None:
        self._identities = [i.encode() for i in identities]

    def peer_identities(self) -> list[bytes]:
        return self._identities


async def test_the_allow_list_hands_on_every_identity_it_lets_in() -> None:
    seen: list[tuple[str, ...]] = []

    async def inner(request: object, context: object) -> None:
        seen.append(CLIENT_NAMES.get(()))

    guard = ClientNameInterceptor(["billing.internal", "ops.internal"])
    peer = _Peer("ops.internal", "urn:other", "billing.internal")
    await guard.around(inner, None, peer, "/pkg.S/Publish")  # type: ignore[arg-type]
    assert seen == [("ops.internal", "billing.internal")]
    assert CLIENT_NAMES.get(()) == (), "reset after the call"
