"""PostgreSQL LISTEN/NOTIFY: one connection per process, reconnecting when lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import asyncpg
import structlog

from herald.runtime.db import DATABASE_ERRORS

log = structlog.get_logger("herald.notify")


async def listen(
    dsn: str,
    handlers: Mapping[str, Callable[[str], None]],
    on_connect: Callable[[], None] = lambda: None,
    retry_seconds: float = 1.0,
) -> None:
    """Calls ``handlers[channel](payload)`` for every notification, forever.

    ``on_connect`` runs after every (re)connection: notifications sent while the
    connection was down are lost, so callers catch up there.
    """
    while True:
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(dsn)
            lost = asyncio.Event()
            conn.add_termination_listener(partial(_set, lost))
            for channel, handler in handlers.items():
                await conn.add_listener(channel, _callback(handler))
            on_connect()
            await lost.wait()
            log.warning("notify.connection_lost")
        except DATABASE_ERRORS as exc:
            log.warning("notify.connect_failed", error=repr(exc))
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close()
        await asyncio.sleep(retry_seconds)


def _set(event: asyncio.Event, _conn: object) -> None:
    event.set()


def _callback(handler: Callable[[str], None]) -> Callable[..., None]:
    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        handler(payload)

    return on_notify
