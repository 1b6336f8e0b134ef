"""The standard gRPC health service, SERVING only while dependencies answer.

A dependency going away is logged (``health.dependency_down``, a warning) and coming
back too (``health.dependency_up``). While a service starts, its Kafka clients take a
moment to connect: a dependency that has not answered yet is logged as down only once
it has not answered for ``start_grace`` seconds, so a normal start logs no warning and
one against a server that is not there still says so. SERVING or NOT_SERVING is
published from the first check, whatever is logged."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog
from grpc_health.v1 import health, health_pb2

log = structlog.get_logger("herald.health")

Check = Callable[[], Awaitable[None]]


class HealthMonitor:
    """Runs named checks periodically and publishes the result for every service."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        service_names: Sequence[str],
        checks: dict[str, Check],
        interval: float = 2.0,
        start_grace: float = 10.0,
    ) -> None:
        self._servicer = servicer
        self._names = ["", *service_names]
        self._checks = checks
        self._interval = interval
        self._start_grace = start_grace
        self._first_check: float | None = None
        self._answered: set[str] = set()  # dependencies that answered once
        self._reported: set[str] = set()  # dependencies logged as down, not yet up
        self._stopping = False

    async def check_once(self) -> bool:
        """Runs every check once and publishes SERVING or NOT_SERVING."""
        now = asyncio.get_running_loop().time()
        if self._first_check is None:
            self._first_check = now
        starting = now - self._first_check < self._start_grace
        results = await asyncio.gather(
            *(_bounded(c) for c in self._checks.values()), return_exceptions=True
        )
        failing = set()
        for name, result in zip(self._checks, results, strict=True):
            if isinstance(result, BaseException):
                failing.add(name)
                if name not in self._reported and (name in self._answered or not starting):
                    log.warning("health.dependency_down", dependency=name, error=repr(result))
                    self._reported.add(name)
            else:
                self._answered.add(name)
                if name in self._reported:
                    log.info("health.dependency_up", dependency=name)
                    self._reported.discard(name)
        serving = not failing and not self._stopping
        await self._publish(serving)
        return serving

    async def run(self) -> None:
        """Checks forever, every ``interval`` seconds."""
        while True:
            await self.check_once()
            await asyncio.sleep(self._interval)

    async def shutting_down(self) -> None:
        """Reports NOT_SERVING from now on (load balancers drain the instance)."""
        self._stopping = True
        await self._publish(False)

    async def _publish(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._names:
            await self._servicer.set(name, status)


async def _bounded(check: Check) -> None:
    """One check, given 5 s. Its coroutine is made here, when it runs: made earlier, a
    stop cancelling the gather before it starts left it never awaited (a warning).
    asyncio.timeout, not wait_for, which loses a stop's cancellation on Python 3.11
    when the check finishes at that moment (see runtime.wake)."""
    async with asyncio.timeout(5):
        await check()
