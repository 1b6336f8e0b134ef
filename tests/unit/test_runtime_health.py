"""runtime.health: what is published, and when a dependency's state is logged."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from grpc_health.v1 import health_pb2
from structlog.testing import capture_logs

from herald.runtime.health import HealthMonitor


class FakeServicer:
    def __init__(self) -> None:
        self.status: dict[str, int] = {}

    async def set(self, name: str, status: int) -> None:
        self.status[name] = status


class Dependency:
    """A check that fails while ``up`` is false."""

    def __init__(self, up: bool) -> None:
        self.up = up

    async def __call__(self) -> None:
        if not self.up:
            raise ConnectionError("not connected")


def _monitor(kafka: Dependency, grace: float) -> tuple[HealthMonitor, FakeServicer]:
    servicer = FakeServicer()
    checks: dict[str, Any] = {"kafka": kafka}
    return HealthMonitor(servicer, ["svc"], checks, start_grace=grace), servicer


def _events(logs: list[MutableMapping[str, Any]]) -> list[tuple[str, str]]:
    return [(x["event"], x["dependency"]) for x in logs if x["event"].startswith("health.")]


async def test_a_dependency_connecting_during_the_start_is_not_logged_as_down() -> None:
    kafka = Dependency(up=False)
    monitor, servicer = _monitor(kafka, grace=60)
    with capture_logs() as logs:
        assert not await monitor.check_once()
        assert servicer.status["svc"] == health_pb2.HealthCheckResponse.NOT_SERVING
        kafka.up = True
        assert await monitor.check_once()
    assert servicer.status[""] == health_pb2.HealthCheckResponse.SERVING
    assert _events(logs) == []


async def test_a_dependency_that_never_answers_is_logged_once_the_grace_is_over() -> None:
    kafka = Dependency(up=False)
    monitor, _ = _monitor(kafka, grace=0)
    with capture_logs() as logs:
        await monitor.check_once()
        await monitor.check_once()
        kafka.up = True
        await monitor.check_once()
    assert _events(logs) == [
        ("health.dependency_down", "kafka"),
        ("health.dependency_up", "kafka"),
    ]


async def test_a_dependency_lost_after_answering_is_logged_at_once_even_while_starting() -> None:
    kafka = Dependency(up=True)
    monitor, servicer = _monitor(kafka, grace=60)
    with capture_logs() as logs:
        await monitor.check_once()
        kafka.up = False
        assert not await monitor.check_once()
        await monitor.check_once()
    assert servicer.status[""] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert _events(logs) == [("health.dependency_down", "kafka")]
