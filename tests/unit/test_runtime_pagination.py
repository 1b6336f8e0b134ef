"""Keyset page tokens: what they carry, what they refuse, and the page they cut."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from herald.runtime.errors import InvalidArgument
from herald.runtime.pagination import MAX_TOKEN_CHARS, Page, SortKey, page_of

NEWEST_FIRST = SortKey(("created_at", datetime), ("id", uuid.UUID))
BY_NAME = SortKey(("name", str), ("id", uuid.UUID))
T0 = datetime(2024, 2, 29, 23, 59, 59, 123457, tzinfo=UTC)


def row(created_at: datetime, total: int = 10, **rest: Any) -> dict[str, Any]:
    return {"created_at": created_at, "id": uuid.uuid4(), "total": total, **rest}


async def never_counted() -> int:
    raise AssertionError("the rows carried the total")


def token(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode()


def refused(page_token: str, *query: object, key: SortKey = NEWEST_FIRST) -> str:
    """The page_token violation's description; any other exception fails the test."""
    with pytest.raises(InvalidArgument) as error:
        page_of(2, page_token, *query, key=key)
    [violation] = error.value.violations
    assert violation.field == "page_token"
    return violation.description


async def test_the_next_page_starts_exactly_after_the_last_row() -> None:
    first = page_of(2, "", "user", key=NEWEST_FIRST)
    assert first.cursor == (None, None)
    assert first.limit == 3
    rows = [row(T0 + timedelta(microseconds=2)), row(T0), row(T0 - timedelta(seconds=1))]
    listing = await first.listing(rows, never_counted)
    assert listing.items == rows[:2]
    assert listing.total_size == 10
    second = page_of(2, listing.next_page_token, "user", key=NEWEST_FIRST)
    # Microseconds and the uuid round-trip, so the query's (created_at, id) < cursor
    # neither repeats nor skips the row with the same timestamp.
    assert second.cursor == (T0, rows[1]["id"])
    assert type(second.cursor[1]) is uuid.UUID
    assert second.size == 2


async def test_a_text_key_round_trips_whatever_its_characters() -> None:
    page = page_of(1, "", key=BY_NAME)
    # The longest key a token carries: a 200-character route name, each character
    # escaped by JSON (control characters) or 4 bytes in UTF-8.
    for name in ("\x01" * 200, "\U0001f600" * 200, 'a "quoted" \\ name'):
        rows = [{"name": name, "id": uuid.uuid4(), "total": 2}] * 2
        listing = await page.listing(rows, never_counted)
        assert len(listing.next_page_token) <= MAX_TOKEN_CHARS
        assert page_of(1, listing.next_page_token, key=BY_NAME).cursor == (name, rows[0]["id"])


async def test_the_last_page_has_no_token() -> None:
    page = page_of(2, "", "user", key=NEWEST_FIRST)
    exactly_full = await page.listing([row(T0, 2), row(T0, 2)], never_counted)
    assert exactly_full.next_page_token == ""
    assert len(exactly_full.items) == 2
    short = await page.listing([row(T0, 1)], never_counted)
    assert (short.next_page_token, short.total_size) == ("", 1)


async def test_an_empty_first_page_means_none_and_an_empty_later_page_counts() -> None:
    first = page_of(2, "", key=NEWEST_FIRST)
    none: list[dict[str, Any]] = []
    assert (await first.listing(none, never_counted)).total_size == 0
    later = Page(2, first.query_hash, NEWEST_FIRST, (T0, uuid.uuid4()))

    async def count() -> int:
        return 7

    listing = await later.listing(none, count)
    assert (listing.items, listing.total_size, listing.next_page_token) == ([], 7, "")


async def test_tokens_are_bound_to_the_filter_and_the_list() -> None:
    first = page_of(1, "", "user", key=NEWEST_FIRST)
    issued = (await first.listing([row(T0), row(T0)], never_counted)).next_page_token
    assert "other filters" in refused(issued, "other-filter")
    # Another list's token, with the same filter: it is refused, not misread.
    for other in (
        SortKey(("detected_at", datetime), ("id", uuid.UUID)),
        SortKey(("created_at", datetime), ("id", str)),
    ):
        assert "other filters" in refused(issued, "user", key=other)
    assert page_of(1, issued, "user", key=NEWEST_FIRST).cursor[0] == T0


def test_page_size() -> None:
    assert page_of(0, "", "x", key=BY_NAME).size == 100
    assert page_of(5000, "", "x", key=BY_NAME).size == 1000
    with pytest.raises(InvalidArgument):
        page_of(-1, "", "x", key=BY_NAME)


def test_a_forged_page_token_is_invalid_argument_never_a_crash() -> None:
    # Tokens are readable base64 JSON: whatever a client makes of one must be refused
    # here, never reach int(), the JSON parser's recursion or PostgreSQL as INTERNAL.
    q = page_of(2, "", "user", key=NEWEST_FIRST).query_hash
    good_id = str(uuid.uuid4())
    good_time = T0.isoformat(timespec="microseconds")

    def keyed(*values: object) -> str:
        return token({"k": list(values), "q": q})

    forged = [
        "garbage!",
        "é" * 10,
        "\ud800",
        token("x" * MAX_TOKEN_CHARS),
        token("[" * 100_000),
        base64.urlsafe_b64encode(b"[" * 1000).decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        token([good_time, good_id]),
        token({"o": 4, "q": q}),  # an offset token of the old scheme
        token({"k": [good_time, good_id]}),
        token({"k": [good_time, good_id], "q": q, "x": 1}),
        token({"k": [good_time, good_id], "q": 5}),
        token({"k": {"created_at": good_time}, "q": q}),
        token({"k": good_time, "q": q}),
        keyed(),
        keyed(good_time),
        keyed(good_time, good_id, good_id),
        keyed([good_time], good_id),
        keyed(None, good_id),
        keyed(10**19, good_id),
        keyed(1.5, good_id),
        keyed(True, good_id),
        keyed({"t": good_time}, good_id),
        keyed("yesterday", good_id),
        keyed("2024-02-29T23:59:59.123457", good_id),  # no time zone
        keyed("2024-03-01T04:59:59.123457+05:00", good_id),  # not as issued
        keyed("2024-02-29 23:59:59.123457+00:00", good_id),
        keyed("0001-01-01T00:00:00.000000+14:00", good_id),  # before year 1 in UTC
        keyed("9999-12-31T23:59:59.999999-14:00", good_id),  # after year 9999 in UTC
        keyed("+infinity", good_id),
        keyed(good_time, "not-a-uuid"),
        keyed(good_time, good_id.upper()),
        keyed(good_time, "{" + good_id + "}"),
        keyed(good_time, 5),
        keyed(good_time, ["x"] * 1000),
    ]
    for page_token in forged:
        assert refused(page_token, "user") == "not a token this API issued", page_token
    assert refused(token({"k": [good_time, good_id], "q": "0" * 16}), "user")


def test_a_forged_text_key_postgresql_would_refuse_is_invalid_argument() -> None:
    q = page_of(2, "", key=BY_NAME).query_hash
    good_id = str(uuid.uuid4())
    for name in ("a\x00b", "\ud800", 7, ""):
        forged = base64.urlsafe_b64encode(
            json.dumps({"k": [name, good_id], "q": q}).encode()
        ).decode()
        if name == "":
            assert page_of(2, forged, key=BY_NAME).cursor == ("", uuid.UUID(good_id))
        else:
            assert refused(forged, key=BY_NAME) == "not a token this API issued"


def test_a_timestamp_in_another_zone_is_issued_in_utc() -> None:
    # asyncpg answers in UTC, but a key read elsewhere could carry another zone: the
    # token holds the same instant.
    page = page_of(1, "", key=NEWEST_FIRST)
    there = T0.astimezone(timezone(timedelta(hours=-7)))
    ident = uuid.uuid4()
    listing_token = page._token_after((there, ident))
    assert page_of(1, listing_token, key=NEWEST_FIRST).cursor == (T0, ident)
