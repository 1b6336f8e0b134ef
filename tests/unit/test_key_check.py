"""What a new version of a keys file may bring while limits are in force."""

from __future__ import annotations

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
