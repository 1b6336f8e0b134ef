"""A fast HTTP/1.1 sink in its own process, the receiver of the webhook benchmark (w).

It answers every POST with ``200 OK`` at once and counts requests per path;
``GET /_count/<path>`` returns the count for ``<path>`` as text. One uvloop
``asyncio.Protocol`` with a minimal parser (Content-Length bodies, keep-alive): it serves
tens of thousands of requests per second on one core, so the client being measured, not
the receiver, sets the pace. ``python -m bench.sink`` prints its port and serves until
its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import uvloop

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nOK"
_COUNT = b"/_count"


class _Sink(asyncio.Protocol):
    def __init__(self, counts: Counter[bytes]) -> None:
        self._counts = counts
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's own class

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        replies = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else None])
            total = end + 4 + length
            if len(buffer) < total:
                break
            first = head.find(b" ")
            path = bytes(buffer[first + 1 : buffer.find(b" ", first + 1)])
            del buffer[:total]
            if path.startswith(_COUNT):
                text = str(self._counts[path[len(_COUNT) :]]).encode()
                replies.append(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)
                )
            else:
                self._counts[path] += 1
                replies.append(_OK)
        if replies and self._transport is not None:
            self._transport.write(b"".join(replies))


async def _serve() -> None:
    counts: Counter[bytes] = Counter()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Sink(counts), "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    # Serve until the parent closes our stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.buffer.read)
    server.close()


class SinkProcess:
    """The running sink: ``url(path)`` to send to, ``await count(path)`` to read back."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self._client = aiohttp.ClientSession()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def count(self, path: str) -> int:
        async with self._client.get(self.url(f"{_COUNT.decode()}{path}")) as reply:
            return int(await reply.text())

    async def wait_for(self, n: int, path: str, within: float) -> None:
        """Waits until ``n`` requests to ``path`` have arrived (polled every 20 ms)."""
        async with asyncio.timeout(within):
            while await self.count(path) < n:  # noqa: ASYNC110 (another process's count)
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def sink_process() -> AsyncIterator[SinkProcess]:
    """Starts ``python -m bench.sink``; closes its stdin and waits for it on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sink",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    sink = SinkProcess(process, int(line))
    try:
        yield sink
    finally:
        await sink._client.close()
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


if __name__ == "__main__":
    uvloop.run(_serve())
