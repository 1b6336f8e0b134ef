"""Services as separate processes (``service_process``), ingest in particular, as
deployed (``python -m herald.services.<name>``).

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
from collections.abc import AsyncIterator, Mapping, Sequence
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
    relay: Process | None = None  # the outbox relay's own process, as the stack runs it

    @property
    def pid(self) -> int:
        """The ingest process's id."""
        return self.process.pid

    @property
    def pids(self) -> tuple[int, ...]:
        """Ingest's processes (for CPU accounting): ingest, and its relay's."""
        return (self.pid,) if self.relay is None else (self.pid, self.relay.pid)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(
    database_url: str, bootstrap: str, topic: str, port: int, extra: Mapping[str, str]
) -> dict[str, str]:
    return service_env(
        {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "EVENTS_TOPIC": topic,
            "INGEST_ADDR": f"127.0.0.1:{port}",
            "INGEST_METRICS_ADDR": "127.0.0.1:0",
            **extra,
        }
    )


async def wait_serving(
    channel: grpc.aio.Channel, process: Process, within: float, service: str = ""
) -> None:
    """Waits until the process's health check reports SERVING (for ``service``)."""
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + within
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"the service exited with {process.returncode} while starting")
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the service is not SERVING within {within} s")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def service_process(
    module: str, env: Mapping[str, str], python_args: Sequence[str] = ()
) -> AsyncIterator[Process]:
    """``python [python_args] -m <module>`` with ``env`` (the caller builds it whole);
    SIGTERM and wait on exit. Its output goes to a temporary file, shown when the body
    fails or the process exits badly."""
    with tempfile.TemporaryFile() as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *python_args,
            "-m",
            module,
            env=dict(env),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        except BaseException:
            _print_log(module, log)
            raise
        finally:
            code = await _terminate(process)
        if code not in (0, -signal.SIGTERM):
            print(f"  {module} exited with {code}")
            _print_log(module, log)


def service_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment with the project on PYTHONPATH, logs as deployed (INFO: a line
    per event, per delivery; JSON, to a file), and ``extra``."""
    env = dict(os.environ)
    paths = [str(ROOT / "src"), str(ROOT / "gen"), env.get("PYTHONPATH", "")]
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in paths if p), LOG_LEVEL="INFO", LOG_FORMAT="json"
    )
    env.update(extra)
    return env


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

    As ``make run`` deploys it: the outbox relay in a process of its own
    (``herald.services.ingest_relay``), unless ``extra_env`` sets ``RELAY_ENABLED``
    (``true``: the relay inside ingest, the old topology; ``false``: no relay at all).

    With ``profile_to`` ingest runs under pyinstrument (when installed; for
    investigation only), which saves a ``.pyisession`` there when ingest exits;
    render it with ``python -m pyinstrument --load FILE``.
    """
    profiler = (
        ["-m", "pyinstrument", "-r", "pyisession", "-o", str(profile_to)] if profile_to else []
    )
    port = free_port()
    extra = dict(extra_env or {})
    separate_relay = "RELAY_ENABLED" not in extra
    if separate_relay:
        extra["RELAY_ENABLED"] = "false"
    env = _environment(database_url, bootstrap, topic, port, extra)
    address = f"127.0.0.1:{port}"
    async with (
        service_process("herald.services.ingest", env, profiler) as process,
        _relay_process(env, start_timeout) if separate_relay else contextlib.nullcontext() as relay,
    ):
        channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        try:
            await wait_serving(channel, process, start_timeout, SERVICE_NAME)
            yield IngestProcess(
                process, address, channel, ingest_pb2_grpc.IngestServiceStub(channel), relay
            )
        finally:
            await channel.close()


@contextlib.asynccontextmanager
async def _relay_process(ingest_env: Mapping[str, str], within: float) -> AsyncIterator[Process]:
    """``herald.services.ingest_relay`` beside an ingest with ``ingest_env``; SERVING."""
    address = f"127.0.0.1:{free_port()}"
    env = {**ingest_env, "INGEST_RELAY_ADDR": address, "INGEST_RELAY_METRICS_ADDR": "127.0.0.1:0"}
    async with service_process("herald.services.ingest_relay", env) as process:
        async with grpc.aio.insecure_channel(address) as channel:
            await wait_serving(channel, process, within)
        yield process


async def _terminate(process: Process, within: float = 20) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), within)
    except TimeoutError:
        process.kill()
        return await process.wait()


def _print_log(module: str, log: IO[bytes]) -> None:
    log.seek(0)
    text = log.read().decode(errors="replace")
    print(f"  {module} log (last 40 lines):")
    for line in text.splitlines()[-40:]:
        print("    " + line)
