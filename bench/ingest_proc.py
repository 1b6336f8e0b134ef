"""Ingest as a separate process (``python -m herald.services.ingest``), as deployed.

A process of its own keeps the client's CPU apart from the service's (the box has
two cores shared by Kafka, PostgreSQL, ingest and the client) and runs ingest with
exactly the code path and settings of production.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from herald.ingest.v1 import ingest_pb2_grpc

from herald.services.ingest.app import SERVICE_NAME

ROOT = Path(__file__).resolve().parents[1]
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


@dataclass
class IngestProcess:
    """A running ingest process and a client for it."""

    process: Process
    address: str
    channel: grpc.aio.Channel
    stub: ingest_pb2_grpc.IngestServiceAsyncStub

    @property
    def pid(self) -> int:
        """The process id (for CPU accounting)."""
        return self.process.pid


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(
    database_url: str, bootstrap: str, topic: str, port: int, extra: Mapping[str, str]
) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT / "src"), str(ROOT / "gen"), env.get("PYTHONPATH", "")]
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in paths if p),
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        EVENTS_TOPIC=topic,
        INGEST_ADDR=f"127.0.0.1:{port}",
        INGEST_METRICS_ADDR="127.0.0.1:0",
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


async def _wait_serving(channel: grpc.aio.Channel, process: Process, within: float) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + within
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"ingest exited with {process.returncode} while starting")
        try:
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1
            )
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"ingest not SERVING within {within} s")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def ingest_process(
    database_url: str,
    bootstrap: str,
    topic: str,
    extra_env: Mapping[str, str] | None = None,
    start_timeout: float = 60,
    profile_to: Path | None = None,
) -> AsyncIterator[IngestProcess]:
    """Starts ingest on a free port, waits until SERVING; SIGTERM and wait on exit.

    Its stderr goes to a temporary file, shown when it fails to start or exits badly.
    With ``profile_to`` ingest runs under pyinstrument (when installed; for
    investigation only), which saves a ``.pyisession`` there when ingest exits;
    render it with ``python -m pyinstrument --load FILE``.
    """
    profiler = (
        ["-m", "pyinstrument", "-r", "pyisession", "-o", str(profile_to)] if profile_to else []
    )
    port = free_port()
    env = _environment(database_url, bootstrap, topic, port, extra_env or {})
    with tempfile.TemporaryFile() as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *profiler,
            "-m",
            "herald.services.ingest",
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        address = f"127.0.0.1:{port}"
        channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        try:
            await _wait_serving(channel, process, start_timeout)
            yield IngestProcess(
                process, address, channel, ingest_pb2_grpc.IngestServiceStub(channel)
            )
        except BaseException:
            _print_log(log)
            raise
        finally:
            await channel.close()
            code = await _terminate(process)
        if code not in (0, -signal.SIGTERM):
            print(f"  ingest exited with {code}")
            _print_log(log)


async def _terminate(process: Process, within: float = 20) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), within)
    except TimeoutError:
        process.kill()
        return await process.wait()


def _print_log(log: IO[bytes]) -> None:
    log.seek(0)
    text = log.read().decode(errors="replace")
    print("  ingest log (last 40 lines):")
    for line in text.splitlines()[-40:]:
        print("    " + line)
