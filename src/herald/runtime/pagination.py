"""One pagination helper (AIP-158): page_size, opaque page_token, total_size."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from herald.runtime.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_TOKEN_CHARS = 200  # a token this API issues is about 60 characters
MAX_OFFSET = 2**31 - 1  # beyond any list it pages through


@dataclass(frozen=True, slots=True)
class Page:
    """Where a page starts and how long it is."""

    offset: int
    size: int
    query_hash: str

    def next_token(self, returned: int, total: int) -> str:
        """The token of the following page, or "" on the last page."""
        following = self.offset + returned
        if returned == 0 or following >= total:
            return ""
        raw = json.dumps({"o": following, "q": self.query_hash}).encode()
        return base64.urlsafe_b64encode(raw).decode()


def page_of(page_size: int, page_token: str, *query: object) -> Page:
    """Reads a request's page_size and page_token; ``query`` is the request's filter,
    which must not change between pages."""
    if page_size < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    query_hash = hashlib.sha256(json.dumps(query, default=str).encode()).hexdigest()[:16]
    if not page_token:
        return Page(0, size, query_hash)
    not_ours = InvalidArgument([FieldViolation("page_token", "not a token this API issued")])
    if len(page_token) > MAX_TOKEN_CHARS:
        raise not_ours
    try:
        decoded = json.loads(base64.urlsafe_b64decode(page_token.encode()))
        offset = decoded["o"]
        token_query = decoded["q"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise not_ours from None
    if type(offset) is not int or not 0 <= offset <= MAX_OFFSET or not isinstance(token_query, str):
        raise not_ours
    if token_query != query_hash:
        raise InvalidArgument(
            [FieldViolation("page_token", "belongs to a request with other filters")]
        )
    return Page(offset, size, query_hash)
