"""One ``serve()`` for every service: gRPC server, health, reflection, tracing,
metrics, background workers and graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import io
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from herald.runtime.auth import ClientNameInterceptor, RevocationInterceptor
from herald.runtime.health import Check, HealthMonitor
from herald.runtime.interceptors import ErrorInterceptor
from herald.runtime.listen import listen
from herald.runtime.metrics import MetricsServer
from herald.runtime.tls import ServerTls
from herald.runtime.tls_rotation import CertificateRotation
from herald.runtime.tracing import configure_tracing, server_interceptor, tracing_enabled

log = structlog.get_logger("herald.server")
# A service's worker, or a stop hook: a coroutine function without arguments.
Worker = Callable[[], Coroutine[Any, Any, None]]


def spending_grace(hook: Worker) -> Worker:
    """``hook`` (an on_stop hook) marked as one that may take the stop's grace (plus
    STOP_STEP_SECONDS) before it is cut short; others get STOP_STEP_SECONDS."""
    setattr(hook, _SPENDS_GRACE, True)
    return hook


MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a full PublishBatch fits; events are capped lower
# A request is read whole before any interceptor (the API key check among them) sees it:
# an API whose requests are small takes no more, so that callers, authenticated or not,
# cannot make it hold 64 MiB per call (16 at once made webhooks grow by 1.8 GB).
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# Most a stopping worker set or an on_stop hook may take; a hook marked by spending_grace
# (ingest's relay drain, bounded by the stop's grace itself) that much beyond the grace.
STOP_STEP_SECONDS = 15.0
_SPENDS_GRACE = "_herald_spends_grace"
# Allocations (net of frees) between young-generation collections (CPython's default:
# 700); an App may choose its own (App.gc_young_threshold).
GC_YOUNG_THRESHOLD = 10_000


@dataclass
class App:
    """What a service puts into the shared runtime.

    ``register`` adds the service's servicers to the server. ``workers`` run for the
    life of the process (consumers, relays) or finish once their job is done; one
    that raises stops the process (exit 1). ``on_stop`` hooks run after the server
    has drained, in order (flush producers, close pools).
    """

    name: str
    service_names: list[str]
    register: Callable[[grpc.aio.Server], None]
    health_checks: dict[str, Check] = field(default_factory=dict)
    # Run inside the error interceptor (so their RpcErrors become statuses).
    interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    on_stop: list[Worker] = field(default_factory=list)
    # See settle_heap. A service whose garbage is mostly acyclic and whose batches keep
    # many objects alive at once (dispatch) does better with a higher threshold; one
    # making cyclic garbage per call (grpc.aio: ingest) with a lower one.
    gc_young_threshold: int = GC_YOUNG_THRESHOLD
    # The largest request taken (larger: RESOURCE_EXHAUSTED); ingest's PublishBatch
    # needs MAX_MESSAGE_BYTES.
    max_request_bytes: int = MAX_REQUEST_BYTES
    # How long its workers may take to stop, where that is more than STOP_STEP_SECONDS:
    # webhooks' engine lets attempts in flight finish (their HTTP timeout), and its
    # on_stop hook hands back what it claimed only after that.
    workers_stop_seconds: float = 0.0


class Running:
    """A started server; :meth:`stop` shuts it down gracefully."""

    def __init__(
        self,
        app: App,
        server: grpc.aio.Server,
        port: int,
        monitor: HealthMonitor,
        tasks: list[asyncio.Task[None]],
        metrics: MetricsServer | None,
    ) -> None:
        self.app = app
        self.server = server
        self.port = port
        self.monitor = monitor
        self.tasks = tasks
        self.metrics = metrics
        self.crashed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self._stopping = False
        for task in tasks:
            task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.crashed.done():
            return
        exc = task.exception()
        if exc is None:  # a one-off worker (e.g. start a client once Kafka answers)
            log.info("worker.finished", worker=task.get_name())
            return
        log.error("worker.crashed", worker=task.get_name(), error=repr(exc))
        self.crashed.set_result(exc)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping

    async def stop(self, grace: float) -> None:
        """Stop accepting, drain in-flight calls, stop workers, run on_stop hooks.
        Once: a second stop (a second signal) does nothing."""
        if self._stopping:
            return
        self._stopping = True
        await self.monitor.shutting_down()
        await self.server.stop(grace)
        for task in self.tasks:
            task.cancel()
        # Bounded: a worker or hook that does not finish is logged with where it is
        # stuck, and shutdown goes on (a stop must never hang the process).
        if self.tasks:
            budget = max(STOP_STEP_SECONDS, self.app.workers_stop_seconds)
            _done, stuck = await asyncio.wait(self.tasks, timeout=budget)
            for task in stuck:
                log.error("shutdown.worker_stuck", worker=task.get_name(), at=where(task))
        for hook in self.app.on_stop:
            name = getattr(hook, "__qualname__", str(hook))
            spends = getattr(hook, _SPENDS_GRACE, False)
            hook_seconds = STOP_STEP_SECONDS + (grace if spends else 0.0)
            try:
                async with asyncio.timeout(hook_seconds):
                    await hook()
            except TimeoutError:
                log.error("shutdown.hook_stuck", hook=name, seconds=hook_seconds)
            except Exception:
                log.exception("shutdown.hook_failed", hook=name)
        if self.metrics:
            self.metrics.close()
        log.info("server.stopped", service=self.app.name)


def where(task: asyncio.Task[Any]) -> str:
    """Where a task is suspended (its coroutine stack), for a log line."""
    out = io.StringIO()
    task.print_stack(limit=8, file=out)
    return out.getvalue()[-2000:]


async def start(
    app: App, address: str, metrics_address: str | None = None, tls: ServerTls | None = None
) -> Running:
    """Starts ``app`` on ``address`` (port 0 picks a free port) and its workers; with
    ``tls`` the port takes TLS only (health and reflection included)."""
    configure_tracing(app.name)
    rotation = CertificateRotation(tls) if tls else None
    interceptors: list[grpc.aio.ServerInterceptor] = [ErrorInterceptor()]
    if rotation is not None and rotation.revocations is not None:
        interceptors.append(RevocationInterceptor(lambda: rotation.revocations))
    if tls is not None and tls.client_names:
        interceptors.append(ClientNameInterceptor(tls.client_names))
    interceptors += app.interceptors
    if tracing_enabled():
        interceptors.insert(0, server_interceptor())
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", app.max_request_bytes),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # A second process on the same address must fail, not share the port and
            # take half of the calls unnoticed (grpc sets SO_REUSEPORT by default).
            ("grpc.so_reuseport", 0),
        ],
    )
    app.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *app.service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    credentials = rotation.credentials if rotation else None
    port = await listen(server, address, f"{app.name.upper()}_ADDR", credentials)
    # Before the server starts: one that runs when the start fails is left to a closed
    # loop. Each service's variable is <NAME>_METRICS_ADDR.
    metrics = (
        MetricsServer.listen(metrics_address, f"{app.name.upper()}_METRICS_ADDR")
        if metrics_address
        else None
    )
    monitor = HealthMonitor(health_servicer, app.service_names, app.health_checks)
    await monitor.check_once()
    await server.start()
    tasks = [asyncio.create_task(monitor.run(), name="health")]
    if rotation is not None and rotation.watches:
        tasks.append(asyncio.create_task(rotation.run(), name="tls"))
    tasks += [
        asyncio.create_task(w(), name=getattr(w, "__qualname__", "worker")) for w in app.workers
    ]
    host = address.rpartition(":")[0]
    log.info(
        "server.started",
        service=app.name,
        address=f"{host}:{port}",
        tls=("mutual" if tls.client_ca else "on") if tls else "off",
        metrics=f"{metrics_address.rpartition(':')[0]}:{metrics.port}"
        if metrics and metrics_address
        else None,
    )
    return Running(app, server, port, monitor, tasks, metrics)


def settle_heap(young_threshold: int = GC_YOUNG_THRESHOLD) -> None:
    """Tunes the cyclic garbage collector for a long-running service.

    What was allocated while starting (modules, protobuf descriptors, the app) lives as
    long as the process: frozen, the collector stops walking it on every full
    collection. Fewer young collections let more of a batch's short-lived objects die
    by reference counting first. Measured on dispatch's per-event path: ~26 µs of CPU
    per event instead of ~44 with a threshold of 10,000. At 10,000 dispatch still ran
    ~190 young collections per 100,000 events (~9% of its time, nothing collected), at
    100,000 none; but ingest, whose calls leave cyclic garbage, was 8-15% slower in
    unary Publish at 100,000 than at 10,000 (alternating runs).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold, *gc.get_threshold()[1:])


async def serve(
    app: App,
    address: str,
    metrics_address: str | None,
    grace: float,
    tls: ServerTls | None = None,
) -> int:
    """Runs ``app`` until SIGTERM or SIGINT (exit 0) or a worker crash (exit 1)."""
    running = await start(app, address, metrics_address, tls)
    settle_heap(app.gc_young_threshold)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stop_wait: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    crashed: asyncio.Future[Any] = running.crashed
    done, _ = await asyncio.wait({stop_wait, crashed}, return_when=asyncio.FIRST_COMPLETED)
    stop_wait.cancel()
    log.info("server.stopping", service=app.name, grace_seconds=grace)
    await running.stop(grace)
    return 1 if crashed in done else 0
