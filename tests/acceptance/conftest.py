"""Whole services as processes, driven like a user would: over gRPC and Kafka."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServiceProcess:
    """``python -m herald.services.<name>`` with its own env; log in ``log_path``."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_path: Path,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """``credentials``: how to reach its port when it takes TLS."""
        self.name = name
        self.env = env
        self.log_path = log_path
        self.credentials = credentials
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = env[f"{name.upper()}_ADDR"]

    def start(self, timeout: float = 30) -> None:
        full_env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'gen'}", **self.env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"herald.services.{self.name}"],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        self.wait_serving(timeout)

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with (
            grpc.secure_channel(self.address, self.credentials)
            if self.credentials
            else grpc.insecure_channel(self.address)
        ) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    pytest.fail(f"{self.name} exited: {self.log_path.read_text()[-3000:]}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        pytest.fail(f"{self.name} not SERVING in {timeout}s: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def service_logs(tmp_path: Path) -> Path:
    return tmp_path
