"""Routes, retries and dead letters in PostgreSQL (the SQL is in sql/queries.sql)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from google.protobuf import json_format
from herald.dispatch.v1 import dispatch_pb2

from herald.runtime.db import Queries
from herald.runtime.errors import FieldViolation, InvalidArgument, NotFound
from herald.runtime.pagination import Listing, Page, SortKey
from herald.runtime.timestamps import timestamp
from herald.services.dispatch.routes import check

Q = Queries(Path(__file__).with_name("sql") / "queries.sql")
# The orders of list_routes and list_dead_letters (their ORDER BY).
ROUTE_ORDER = SortKey(("name", str), ("id", uuid.UUID))
DEAD_LETTER_ORDER = SortKey(("created_at", datetime), ("id", uuid.UUID))


def parse_id(text: str, field: str = "id") -> uuid.UUID:
    """A UUID from a request; InvalidArgument naming ``field`` otherwise."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidArgument([FieldViolation(field, "not a UUID")]) from None


def route_of(row: asyncpg.Record) -> dispatch_pb2.Route:
    """The API's Route of a stored row."""
    route = dispatch_pb2.Route(
        id=str(row["id"]),
        name=row["name"],
        description=row["description"],
        disabled=row["disabled"],
        create_time=timestamp(row["created_at"]),
        update_time=timestamp(row["updated_at"]),
    )
    json_format.ParseDict(json.loads(row["filter"]), route.filter)
    json_format.ParseDict(json.loads(row["target"]), route.target)
    return route


def columns_of(route: dispatch_pb2.Route) -> tuple[Any, ...]:
    """(name, description, filter, target, disabled) as the SQL takes them."""
    return (
        route.name.strip(),
        route.description,
        json.dumps(json_format.MessageToDict(route.filter)),
        json.dumps(json_format.MessageToDict(route.target)),
        route.disabled,
    )


class RouteStore:
    """Route CRUD; every change NOTIFYs herald_routes so every replica reloads at once."""

    def __init__(self, pool: asyncpg.Pool, reserved_topics: Collection[str] = ()) -> None:
        self._pool = pool
        self._reserved = reserved_topics  # no route's jobs go there (routes.check)

    async def create(self, route: dispatch_pb2.Route) -> dispatch_pb2.Route:
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(Q.insert_route, uuid.uuid4(), *columns_of(route))
            except asyncpg.UniqueViolationError:
                raise InvalidArgument(
                    [FieldViolation("route.name", f"a route named {route.name!r} exists")]
                ) from None
            await conn.execute(Q.notify_routes)
        assert row is not None
        return route_of(row)

    async def upsert(self, route: dispatch_pb2.Route) -> bool:
        """Stores a configured route by name; True when it changed."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q.upsert_route, uuid.uuid4(), *columns_of(route))
            if row is not None:
                await conn.execute(Q.notify_routes)
        return row is not None

    async def get(self, route_id: str) -> dispatch_pb2.Route:
        row = await self._pool.fetchrow(Q.get_route, parse_id(route_id))
        if row is None:
            raise NotFound(f"route {route_id} not found")
        return route_of(row)

    async def all(self) -> list[dispatch_pb2.Route]:
        return [route_of(r) for r in await self._pool.fetch(Q.all_routes)]

    async def page(self, page: Page) -> Listing[dispatch_pb2.Route]:
        """A page of the routes in ROUTE_ORDER."""
        rows = await self._pool.fetch(Q.list_routes, *page.cursor, page.limit)
        listing = await page.listing(rows, lambda: self._pool.fetchval(Q.count_routes))
        return listing.map(route_of)

    async def update(
        self, route_id: str, change: dispatch_pb2.Route, paths: list[str]
    ) -> dispatch_pb2.Route:
        """Applies ``paths`` of ``change``; ``check`` validates the result first."""
        ident = parse_id(route_id, "route.id")
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q.get_route_for_update, ident)
            if row is None:
                raise NotFound(f"route {route_id} not found")
            merged = route_of(row)
            for path in paths:
                if path in ("filter", "target"):
                    getattr(merged, path).CopyFrom(getattr(change, path))
                else:
                    setattr(merged, path, getattr(change, path))
            # A route stored before its topic was refused can still be disabled (or
            # changed while it stays disabled): its target is judged when an update
            # changes it or leaves the route enabled.
            reserved = self._reserved if "target" in paths or not merged.disabled else ()
            if problems := check(merged, reserved=reserved):
                raise InvalidArgument(problems)
            try:
                updated = await conn.fetchrow(Q.update_route, ident, *columns_of(merged))
            except asyncpg.UniqueViolationError:
                raise InvalidArgument(
                    [FieldViolation("route.name", f"a route named {merged.name!r} exists")]
                ) from None
            await conn.execute(Q.notify_routes)
        assert updated is not None
        return route_of(updated)

    async def delete(self, route_id: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(Q.delete_route, parse_id(route_id)) is None:
                raise NotFound(f"route {route_id} not found")
            await conn.execute(Q.notify_routes)
