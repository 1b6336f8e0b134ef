"""One pagination helper (AIP-158): page_size, opaque page_token, total_size.

Pages are keyset pages: a token carries the sort key of the last item it followed, and
the next page is the items after that key in the list's order. An offset would skip
items when earlier ones leave the list between pages (a client deleting or resolving
what it pages through) and repeat items when new ones come before it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from herald.runtime.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# The longest key a token carries is a route name, 200 characters: at most 6 bytes each
# as JSON, 1,600 characters in base64; with its id and the filter hash, under 2,048.
MAX_TOKEN_CHARS = 2048

KeyPart = str | datetime | uuid.UUID
KeyKind = type[str] | type[datetime] | type[uuid.UUID]
T = TypeVar("T")
U = TypeVar("U")


class Row(Protocol):
    """What a page is cut from: a row whose columns are read by name."""

    def __getitem__(self, column: str, /) -> Any: ...


R = TypeVar("R", bound=Row)


class SortKey:
    """A list's order: the columns it is sorted by, the last one unique, with the type
    each holds. The query pages with ``(columns) > (cursor)`` (or ``<`` when every
    column descends), so the columns must all go one way."""

    __slots__ = ("columns", "kinds")

    def __init__(self, *columns: tuple[str, KeyKind]) -> None:
        self.columns = tuple(name for name, _ in columns)
        self.kinds = tuple(kind for _, kind in columns)

    def of(self, row: Row) -> tuple[KeyPart, ...]:
        """The key of ``row``."""
        return tuple(row[column] for column in self.columns)


@dataclass(frozen=True, slots=True)
class Listing(Generic[T]):
    """One page as answered: its items, the size of the whole filtered list, and the
    next page's token ("" on the last page)."""

    items: list[T]
    total_size: int
    next_page_token: str

    def map(self, convert: Callable[[T], U]) -> Listing[U]:
        """The same page with every item converted."""
        return Listing([convert(i) for i in self.items], self.total_size, self.next_page_token)


@dataclass(frozen=True, slots=True)
class Page:
    """Where a page starts (after the key ``after``, or at the start) and how long it is."""

    size: int
    query_hash: str
    key: SortKey
    after: tuple[KeyPart, ...] | None = None

    @property
    def cursor(self) -> tuple[KeyPart | None, ...]:
        """The query's cursor parameters: the key to continue after, NULLs on the first
        page."""
        return self.after if self.after is not None else (None,) * len(self.key.columns)

    @property
    def limit(self) -> int:
        """How many rows to fetch: one more than the page holds tells whether another
        page follows."""
        return self.size + 1

    async def listing(self, rows: Sequence[R], count: Callable[[], Awaitable[Any]]) -> Listing[R]:
        """The page of the rows fetched with :attr:`cursor` and :attr:`limit`. Each row
        carries the filtered list's size in its ``total`` column (counted in the same
        statement, so it agrees with the page). An empty first page means the list is
        empty; an empty later page (its rows gone since) asks ``count``."""
        items = list(rows[: self.size])
        if items:
            total = int(items[0]["total"])
        elif self.after is None:
            total = 0
        else:
            total = int(await count())
        token = self._token_after(self.key.of(items[-1])) if len(rows) > self.size else ""
        return Listing(items, total, token)

    def _token_after(self, last: tuple[KeyPart, ...]) -> str:
        values = [_encoded(part, kind) for part, kind in zip(last, self.key.kinds, strict=True)]
        raw = json.dumps({"k": values, "q": self.query_hash}, ensure_ascii=False)
        return base64.urlsafe_b64encode(raw.encode()).decode()


def page_of(page_size: int, page_token: str, *query: object, key: SortKey) -> Page:
    """Reads a request's page_size and page_token; ``query`` is the request's filter,
    which must not change between pages, and ``key`` the list's order."""
    if page_size < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    # The key is hashed too: a token of one list is refused by another.
    kinds = [kind.__name__ for kind in key.kinds]
    bound = json.dumps([key.columns, kinds, query], default=str)
    query_hash = hashlib.sha256(bound.encode()).hexdigest()[:16]
    if not page_token:
        return Page(size, query_hash, key)
    not_ours = InvalidArgument([FieldViolation("page_token", "not a token this API issued")])
    if len(page_token) > MAX_TOKEN_CHARS:
        raise not_ours
    try:
        decoded = json.loads(base64.urlsafe_b64decode(page_token.encode()))
    except (ValueError, RecursionError):
        raise not_ours from None
    if type(decoded) is not dict or decoded.keys() != {"k", "q"}:
        raise not_ours
    values, token_query = decoded["k"], decoded["q"]
    if type(token_query) is not str or type(values) is not list:
        raise not_ours
    if token_query != query_hash:
        raise InvalidArgument(
            [FieldViolation("page_token", "belongs to a request with other filters")]
        )
    if len(values) != len(key.kinds):
        raise not_ours
    after = []
    for value, kind in zip(values, key.kinds, strict=True):
        part = _decoded(value, kind)
        if part is None:
            raise not_ours
        after.append(part)
    return Page(size, query_hash, key, tuple(after))


def _encoded(part: KeyPart, kind: KeyKind) -> str:
    if kind is datetime:
        assert isinstance(part, datetime)
        # Microseconds, as PostgreSQL stores them: the next page starts exactly after.
        return part.astimezone(UTC).isoformat(timespec="microseconds")
    return str(part)


def _decoded(value: object, kind: KeyKind) -> KeyPart | None:
    """The key part ``value`` stands for, or None when this API would not have written
    it: a value the query would refuse (NUL in text, a year PostgreSQL's driver cannot
    convert) must be INVALID_ARGUMENT here, not INTERNAL there."""
    if type(value) is not str:
        return None
    part: KeyPart
    try:
        if kind is datetime:
            part = datetime.fromisoformat(value)
            if part.tzinfo is None:
                return None
        elif kind is uuid.UUID:
            part = uuid.UUID(value)
        else:
            value.encode()  # a lone surrogate cannot be sent
            if "\x00" in value:
                return None
            part = value
        canonical = _encoded(part, kind) == value
    except (ValueError, OverflowError):
        return None
    return part if canonical else None
