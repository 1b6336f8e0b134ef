"""The routes every consumer applies, kept current in memory.

Reloaded whenever a route changes (NOTIFY herald_routes, sent in the changing
transaction) and every ``poll_seconds`` besides, in case a notification was missed
while the listening connection was down.
"""

from __future__ import annotations

import asyncio

import structlog

from herald.runtime.db import DATABASE_ERRORS
from herald.runtime.notify import listen
from herald.runtime.wake import woken
from herald.services.dispatch.routes import CompiledRoute, Event
from herald.services.dispatch.store import RouteStore

log = structlog.get_logger("herald.dispatch.routes")


class RouteTable:
    """See the module docstring; :meth:`run` is a worker of the service."""

    def __init__(self, store: RouteStore, database_url: str, poll_seconds: float = 5.0) -> None:
        self._store = store
        self._dsn = database_url
        self._poll = poll_seconds
        self._routes: dict[str, CompiledRoute] = {}
        self._changed = asyncio.Event()

    async def load(self) -> None:
        self._routes = {r.id: CompiledRoute.of(r) for r in await self._store.all()}

    def matching(self, event: Event) -> list[CompiledRoute]:
        return [r for r in self._routes.values() if r.matches(event)]

    def get(self, route_id: str) -> CompiledRoute | None:
        return self._routes.get(route_id)

    async def run(self) -> None:
        listener = asyncio.create_task(
            listen(
                self._dsn,
                {"herald_routes": lambda _payload: self._changed.set()},
                on_connect=self._changed.set,
            )
        )
        try:
            while True:
                await woken(self._changed, self._poll)
                self._changed.clear()
                try:
                    await self.load()
                except DATABASE_ERRORS as exc:
                    log.warning("routes.reload_failed", error=repr(exc))
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
