"""Keys: what a new version of a keys file may bring while limits are in force, and
looking keys up."""

from __future__ import annotations

import pytest

from herald.runtime.auth import ApiKeys
from herald.runtime.errors import Unauthenticated
from herald.runtime.key_check import new_callers_limited

OLD, NEW = "o" * 16, "n" * 16


def test_a_new_caller_must_be_covered_by_every_limit() -> None:
    check = new_callers_limited({"billing", "ops"}, {"A": ["billing"], "B": [], "C": ["*"]})
    assert check({OLD: "billing"}) is None, "a caller revoked: taken"
    assert check({NEW: "billing", OLD: "ops"}) is None, "a known caller's new key: taken"
    assert check({NEW: "bililng"}) == (
        "new caller 'bililng' would not be limited by A (it names billing): a misspelt "
        "name? Name it there (a restart) or give it a '*' entry"
    )
    assert new_callers_limited({"ops"}, {"B": [], "C": ["*"]})({NEW: "anyone"}) is None, (
        "no limit, or a '*' entry: a new caller is as the start would take it"
    )


def test_many_keys_each_open_its_own_tenant_and_a_replaced_set_drops_the_old() -> None:
    keys = {f"key-{n:012d}-abcdefgh": f"t{n}" for n in range(10_000)}
    known = ApiKeys(keys)
    assert known.tenant({"authorization": "Bearer key-000000009999-abcdefgh"}) == "t9999"
    assert known.tenant({"authorization": "bearer  key-000000000000-abcdefgh "}) == "t0"
    known.replace({NEW: "t0"})
    with pytest.raises(Unauthenticated, match="unknown API key"):
        known.tenant({"authorization": "Bearer key-000000000000-abcdefgh"})
    assert known.tenant({"authorization": f"Bearer {NEW}"}) == "t0"
