"""Keys: what a new version of a keys file may bring while limits are in force, and
looking keys up."""

from __future__ import annotations

from pathlib import Path

import pytest

from herald.runtime.auth import ApiKeys
from herald.runtime.errors import Unauthenticated
from herald.runtime.key_check import new_callers_limited
from herald.runtime.key_pairs import parse_api_keys, read_key_file

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


def test_a_keys_file_takes_comments_at_a_lines_start_and_after_white_space(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# billing\n{OLD}=billing  # rotated 2026-11\n{NEW}=ops#1\n\t# end\n")
    assert parse_api_keys(read_key_file(str(path))) == {OLD: "billing", NEW: "ops#1"}
