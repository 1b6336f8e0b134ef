"""A real HTTP/1.1 webhook receiver on loopback, for tests. Stdlib only.

``async with Receiver() as r:`` listens on 127.0.0.1 on a free port; ``r.script(path,
Reply(...), ...)`` decides the next answers for a path; ``r.received()`` /
``await r.wait_for(n)`` return what arrived. Connections are kept alive as HTTP/1.1
clients (httpx) expect; request bodies are Content-Length ones (no chunked requests).
Pass ``ssl=`` a server context to serve HTTPS instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType


@dataclass
class Received:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float  # time.monotonic() when the request was complete


@dataclass
class Reply:
    """A scripted answer."""

    status: int = 200
    body: bytes = b"OK"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (to provoke client timeouts)
    body_delay: float = 0.0  # seconds between the status and headers and the body


class Receiver:
    """An HTTP receiver on 127.0.0.1 (see the module docstring)."""

    def __init__(self, *, ssl: ssl_module.SSLContext | None = None) -> None:
        self._ssl = ssl
        self._server: asyncio.Server | None = None
        self._port = 0
        self._scripts: defaultdict[str, deque[Reply]] = defaultdict(deque)
        self._received: list[Received] = []
        self._arrived = asyncio.Condition()
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0  # accepted so far: shows whether clients keep connections alive

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            # abort, not close: a TLS close waits (30 s) for the peer's close_notify.
            writer.transport.abort()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        return self._port

    def url(self, path: str = "/hook", *, host: str = "127.0.0.1") -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://{host}:{self._port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        """Queues ``replies`` for ``path``, served in order; then 200 OK again."""
        self._scripts[path].extend(replies)

    def received(self, path: str | None = None) -> list[Received]:
        return [r for r in self._received if path is None or r.path == path]

    async def wait_for(
        self, count: int, path: str | None = None, timeout: float = 10
    ) -> list[Received]:
        """Waits until ``count`` requests (to ``path``, if given) have arrived."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received(path)) >= count)
        return self.received(path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while await self._one_exchange(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away (or failed TLS, or sent garbage): drop it
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Reads one request and answers it; False when the connection should end."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # closed between requests: the normal end of keep-alive
        request_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        method, target, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        path = target.split("?", 1)[0]
        async with self._arrived:
            self._received.append(Received(method, path, headers, body, time.monotonic()))
            self._arrived.notify_all()
        queued = self._scripts.get(path)
        reply = queued.popleft() if queued else Reply()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        keep_alive = headers.get("connection", "").lower() != "close"
        response = _response(reply, keep_alive)
        if reply.body_delay:  # the head at once, the body later
            head_length = len(response) - len(reply.body)
            writer.write(response[:head_length])
            await writer.drain()
            await asyncio.sleep(reply.body_delay)
            response = response[head_length:]
        writer.write(response)
        await writer.drain()
        return keep_alive


def _response(reply: Reply, keep_alive: bool) -> bytes:
    try:
        reason = HTTPStatus(reply.status).phrase
    except ValueError:
        reason = "Status"
    names = {name.lower() for name in reply.headers}
    lines = [f"HTTP/1.1 {reply.status} {reason}"]
    lines += [f"{name}: {value}" for name, value in reply.headers.items()]
    if "content-length" not in names:
        lines.append(f"Content-Length: {len(reply.body)}")
    if "connection" not in names:
        lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body
