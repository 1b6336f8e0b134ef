"""DispatchService over gRPC: routes and dead letters."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import asyncpg
import grpc
import structlog
from herald.dispatch.v1 import dispatch_pb2, dispatch_pb2_grpc

from herald.runtime.errors import FieldViolation, InvalidArgument
from herald.runtime.pagination import page_of
from herald.runtime.timestamps import timestamp
from herald.services.dispatch.routes import check
from herald.services.dispatch.store import (
    DEAD_LETTER_ORDER,
    ROUTE_ORDER,
    Q,
    RouteStore,
    parse_id,
)

log = structlog.get_logger("herald.dispatch")
Context = grpc.aio.ServicerContext[Any, Any]
UPDATABLE = ("name", "description", "filter", "target", "disabled")


class DispatchServicer(dispatch_pb2_grpc.DispatchServiceServicer):
    """The management RPCs."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        routes: RouteStore,
        on_redrive: Any,
        reserved_topics: Collection[str] = (),
    ) -> None:
        self._pool = pool
        self._routes = routes
        self._on_redrive = on_redrive
        self._reserved = reserved_topics

    async def CreateRoute(
        self, request: dispatch_pb2.CreateRouteRequest, context: Context
    ) -> dispatch_pb2.CreateRouteResponse:
        """Stores a checked route; every field refused is named at once."""
        if problems := check(request.route, reserved=self._reserved):
            raise InvalidArgument(problems)
        route = await self._routes.create(request.route)
        log.info("route.created", route_id=route.id, name=route.name)
        return dispatch_pb2.CreateRouteResponse(route=route)

    async def GetRoute(
        self, request: dispatch_pb2.GetRouteRequest, context: Context
    ) -> dispatch_pb2.GetRouteResponse:
        """A route by its id; NOT_FOUND when there is none."""
        return dispatch_pb2.GetRouteResponse(route=await self._routes.get(request.id))

    async def ListRoutes(
        self, request: dispatch_pb2.ListRoutesRequest, context: Context
    ) -> dispatch_pb2.ListRoutesResponse:
        """A page of the routes."""
        page = page_of(request.page_size, request.page_token, "routes", key=ROUTE_ORDER)
        listing = await self._routes.page(page)
        return dispatch_pb2.ListRoutesResponse(
            routes=listing.items,
            total_size=listing.total_size,
            next_page_token=listing.next_page_token,
        )

    async def UpdateRoute(
        self, request: dispatch_pb2.UpdateRouteRequest, context: Context
    ) -> dispatch_pb2.UpdateRouteResponse:
        """Changes the fields named in update_mask (all updatable ones when it
        is empty)."""
        paths = list(request.update_mask.paths) or list(UPDATABLE)
        bad = [p for p in paths if p not in UPDATABLE]
        if bad:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "update_mask",
                        f"cannot update {', '.join(bad)}; paths are {', '.join(UPDATABLE)}",
                    )
                ]
            )
        route = await self._routes.update(request.route.id, request.route, paths)
        log.info("route.updated", route_id=route.id, paths=paths)
        return dispatch_pb2.UpdateRouteResponse(route=route)

    async def DeleteRoute(
        self, request: dispatch_pb2.DeleteRouteRequest, context: Context
    ) -> dispatch_pb2.DeleteRouteResponse:
        """Deletes a route; NOT_FOUND when there is none."""
        await self._routes.delete(request.id)
        log.info("route.deleted", route_id=request.id)
        return dispatch_pb2.DeleteRouteResponse()

    async def ListDeadLetters(
        self, request: dispatch_pb2.ListDeadLettersRequest, context: Context
    ) -> dispatch_pb2.ListDeadLettersResponse:
        """A page of dispatch's dead letters, filtered by event type and reason."""
        f = request.filter
        query = (f.event_type, f.reason_contains, f.include_redriven)
        page = page_of(request.page_size, request.page_token, *query, key=DEAD_LETTER_ORDER)
        rows = await self._pool.fetch(Q.list_dead_letters, *query, *page.cursor, page.limit)
        # An empty first page means none (a count now could see rows the page did not:
        # total_size would disagree with the page); an empty later page counts.
        listing = await page.listing(
            rows, lambda: self._pool.fetchval(Q.count_dead_letters, *query)
        )
        return dispatch_pb2.ListDeadLettersResponse(
            dead_letters=[_dead_letter(r) for r in listing.items],
            total_size=listing.total_size,
            next_page_token=listing.next_page_token,
        )

    async def RedriveDeadLetters(
        self, request: dispatch_pb2.RedriveDeadLettersRequest, context: Context
    ) -> dispatch_pb2.RedriveDeadLettersResponse:
        """Puts the dead letters chosen by ids or by a filter back in the retries, due
        now, each once; how many."""
        which = request.WhichOneof("selection")
        if which is None:
            raise InvalidArgument([FieldViolation("selection", "give ids or filter")])
        if which == "ids":
            if not request.ids.ids:
                raise InvalidArgument([FieldViolation("ids.ids", "at least one id")])
            ids = [parse_id(i, f"ids.ids[{n}]") for n, i in enumerate(request.ids.ids)]
            rows = await self._pool.fetch(Q.redrive, ids, "", "")
        else:
            f = request.filter
            rows = await self._pool.fetch(Q.redrive, None, f.event_type, f.reason_contains)
        if rows:
            self._on_redrive()
        log.info("dead_letters.redriven", count=len(rows))
        return dispatch_pb2.RedriveDeadLettersResponse(redriven=len(rows))


def _dead_letter(row: asyncpg.Record) -> dispatch_pb2.DeadLetter:
    message = dispatch_pb2.DeadLetter(
        id=str(row["id"]),
        event_id=row["event_id"],
        event_source=row["event_source"],
        event_type=row["event_type"],
        reason=row["reason"],
        targets=row["targets"],
        attempts=row["attempts"],
        topic=row["topic"],
        partition=row["partition"],
        offset=row["offset"],
        create_time=timestamp(row["created_at"]),
    )
    if row["redriven_at"] is not None:
        message.redrive_time.CopyFrom(timestamp(row["redriven_at"]))
    return message
