"""The catalog in PostgreSQL, cached in memory.

A lookup that misses the cache reads that one type from the database before the
event is refused, so a type created on another replica is usable at once; a create
also notifies every replica (NOTIFY herald_catalog), so that a new data version
becomes everyone's default within milliseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine
from typing import Any

import asyncpg
import structlog

from herald.runtime.db import DATABASE_ERRORS
from herald.runtime.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
)
from herald.runtime.pagination import Listing, Page, SortKey
from herald.services.ingest.builtin import builtin_types
from herald.services.ingest.catalog import DEFAULT_MAX_EVENT_TYPES, Catalog, EventTypeDef
from herald.services.ingest.writer import Q

log = structlog.get_logger("herald.ingest")

# The order of list_types (its ORDER BY).
TYPE_ORDER = SortKey(("name", str), ("data_version", str))
# A ListEventTypes page is cut after this many bytes of schemas and descriptions, so
# that it fits a default client's 4 MiB message (1,000 types of 256 KiB schemas would
# not); the page's token continues after its last type.
MAX_PAGE_BYTES = 3 * 1024 * 1024


def _definition(row: asyncpg.Record) -> EventTypeDef:
    return EventTypeDef(
        name=row["name"],
        data_version=row["data_version"],
        schema_text=row["json_schema"],
        description=row["description"],
        id_must_be_uuid=row["id_must_be_uuid"],
        source_pattern=row["source_pattern"],
        required_attributes=tuple(row["required_attributes"]),
        create_time=row["created_at"],
    )


class CatalogStore:
    """Reads and writes event types; keeps :attr:`catalog` current."""

    def __init__(self, pool: asyncpg.Pool, max_types: int = DEFAULT_MAX_EVENT_TYPES) -> None:
        self._pool = pool
        self._max_types = max_types
        self.catalog = Catalog()
        self._refreshing: set[asyncio.Task[None]] = set()

    async def load(self) -> None:
        """Registers the built-ins that are missing, then loads every type."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                Q.insert_builtin_type,
                [
                    (
                        d.name,
                        d.data_version,
                        d.description,
                        d.schema_text,
                        d.id_must_be_uuid,
                        d.source_pattern,
                        list(d.required_attributes),
                    )
                    for d in builtin_types()
                ],
            )
            rows = await conn.fetch(Q.all_types)
        catalog = Catalog()
        for row in rows:
            self._add(catalog, _definition(row))
        self.catalog = catalog

    async def refresh(self, name: str) -> None:
        """Re-reads every version of ``name`` from the database."""
        for row in await self._pool.fetch(Q.types_named, name):
            self._add(self.catalog, _definition(row))

    @staticmethod
    def _add(catalog: Catalog, definition: EventTypeDef) -> None:
        """Adds ``definition``, logging once that it is unusable when it is. One the
        catalog holds already, unchanged, is left as it is (compiled or not): a refresh
        of a name (a lookup of a version not known here, a NOTIFY) would otherwise
        compile every version of it again and push the validators in use out of the
        compiled budget."""
        known = catalog.get(definition.name, definition.data_version)
        if known is not None and known == definition:
            return
        if definition.unusable and (known is None or not known.unusable):
            log.error(
                "event_type.unusable",
                type=definition.name,
                data_version=definition.data_version,
                error=definition.unusable,
            )
        catalog.add(definition)

    def on_changed(self, name: str) -> None:
        """NOTIFY herald_catalog handler: another replica created a type version."""
        self._in_background(self.refresh(name))

    def on_connected(self) -> None:
        """The LISTEN connection (re)connected: what was created while it was down was
        notified to no one here, so every type is read again."""
        self._in_background(self.refresh_all())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        async def logged() -> None:
            try:
                await work
            except DATABASE_ERRORS as exc:  # read on the next lookup of a version not known
                log.warning("catalog.refresh_failed", error=repr(exc))

        task = asyncio.get_running_loop().create_task(logged())
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def refresh_all(self) -> None:
        """Re-reads every type from the database (versions this process has, unchanged,
        stay as they are)."""
        for row in await self._pool.fetch(Q.all_types):
            self._add(self.catalog, _definition(row))

    async def lookup(self, name: str, data_version: str | None) -> EventTypeDef | None:
        """The definition, reading the database when this process has not seen it."""
        found = self.catalog.get(name, data_version)
        if found is None and name:
            await self.refresh(name)
            found = self.catalog.get(name, data_version)
        return found

    async def create(self, definition: EventTypeDef) -> EventTypeDef:
        """Persists a new (type, version); ALREADY_EXISTS when it is registered,
        RESOURCE_EXHAUSTED when the catalog holds its limit of created versions."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(Q.lock_catalog)  # every replica's creations, one at a time
            inserted = None
            if (held := await conn.fetchval(Q.count_created_types)) < self._max_types:
                try:
                    inserted = await conn.fetchrow(
                        Q.insert_type,
                        definition.name,
                        definition.data_version,
                        definition.description,
                        definition.schema_text,
                        definition.id_must_be_uuid,
                        definition.source_pattern,
                        list(definition.required_attributes),
                    )
                except asyncpg.DataError as exc:
                    # JSON PostgreSQL's jsonb cannot hold (a number such as 1e-20000,
                    # beyond its numeric's range): the caller's schema, not an INTERNAL.
                    raise InvalidArgument(
                        [FieldViolation("event_type.json_schema", f"cannot be stored: {exc}")]
                    ) from None
                if inserted is not None:  # every replica reads it at commit (on_changed)
                    await conn.execute(Q.notify_catalog, definition.name)
            elif not await conn.fetchval(Q.type_exists, definition.name, definition.data_version):
                raise ResourceExhausted(
                    f"the catalog holds {held} event type versions created with "
                    f"CreateEventType; its limit is {self._max_types} (MAX_EVENT_TYPES: "
                    "every version's schema is loaded by every ingest process)"
                )
        if inserted is None:  # registered already (full or not: that is the answer)
            raise AlreadyExists(
                f"event type {definition.name!r} version {definition.data_version!r} exists; "
                "register a new data version to change its schema"
            )
        stored = dataclasses.replace(
            definition,
            schema_text=inserted["json_schema"],  # as stored, as a reload will read it
            create_time=inserted["created_at"],
        )
        self.catalog.add(stored)
        return stored

    async def page(self, prefix: str, page: Page) -> Listing[EventTypeDef]:
        """One page of the types whose name starts with ``prefix``, in TYPE_ORDER."""
        rows = await self._pool.fetch(Q.list_types, prefix, *page.cursor, page.limit)
        fits = _rows_that_fit(rows, MAX_PAGE_BYTES)
        if fits < page.size:
            page = dataclasses.replace(page, size=fits)
            rows = rows[: fits + 1]
        listing = await page.listing(rows, lambda: self._pool.fetchval(Q.count_types, prefix))
        return listing.map(_definition)


def _rows_that_fit(rows: list[asyncpg.Record], budget: int) -> int:
    """How many of ``rows`` fit ``budget`` bytes (at least one: a page is never empty)."""
    used = 0
    for i, row in enumerate(rows):
        used += _json_bytes(row["json_schema"]) + sum(
            len(row[column].encode("utf-8", "surrogatepass"))
            for column in ("name", "data_version", "description", "source_pattern")
        )
        if used > budget:
            return max(i, 1)
    return len(rows)


def _json_bytes(text: str) -> int:
    """Bytes of the schema as answered: json.dumps escapes each non-ASCII character
    (\\uXXXX, two of them beyond the BMP)."""
    if text.isascii():
        return len(text)
    return len(text) + sum(5 if ord(c) < 0x10000 else 11 for c in text if ord(c) > 0x7F)
