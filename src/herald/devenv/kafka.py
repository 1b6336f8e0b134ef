"""A real single-node Apache Kafka 3.9 (KRaft combined mode) for dev, tests and benchmarks.

The broker runs from the official jars on Maven Central (``deploy/kafka/pom.xml``),
copied once into ``<root>/kafka/libs`` by Maven; no Docker and no tarball.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import time
from typing import TYPE_CHECKING

from . import _kafka_wire
from ._kafka_setup import (
    HOST,
    JVM_FLAGS,
    LOG4J_CONFIG,
    SCRAM_MECHANISM,
    cds_flags,
    ensure_libs,
    java_executable,
    new_cluster_id,
    promote_cds,
    scram_format_args,
    server_properties,
)
from ._util import (
    DevEnvError,
    file_lock,
    pid_alive,
    port_open,
    proc_cmdline,
    read_pid,
    run,
    send_signal,
    tail,
    terminate,
    wait_dead,
)

if TYPE_CHECKING:
    from pathlib import Path

_MAIN_CLASS = "kafka.Kafka"
_READY_LINE = "Kafka Server started"


class LocalKafka:
    """A local Kafka broker+controller whose files live under ``<root>/kafka``.

    Listeners: PLAINTEXT on ``port`` (what Herald uses), CONTROLLER on
    ``controller_port`` and SASL_PLAINTEXT/SCRAM-SHA-512 on ``scram_port``
    (users ``vibe``/``vibe-secret`` and ``admin``/``admin-secret``).
    """

    def __init__(
        self, root: Path, port: int = 19092, controller_port: int = 19093, scram_port: int = 19094
    ) -> None:
        self.root = root
        self.port = port
        self.controller_port = controller_port
        self.scram_port = scram_port
        self.dir = root / "kafka"
        self.libs_dir = self.dir / "libs"
        self.data_dir = self.dir / "data"
        self.logs_dir = self.dir / "logs"
        self.config_file = self.dir / "server.properties"
        self.pid_file = self.dir / "kafka.pid"
        self.out_file = self.dir / "kafka.out"
        self.server_log = self.logs_dir / "server.log"
        self.bootstrap_servers = f"{HOST}:{port}"
        self.scram_bootstrap_servers = f"{HOST}:{scram_port}"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- state -----------------------------------------------------------------

    def pid(self) -> int | None:
        """Return the broker's pid if it is running (checked against its command line)."""
        pid = read_pid(self.pid_file)
        if pid is None or not pid_alive(pid):
            return None
        cmdline = proc_cmdline(pid)
        if _MAIN_CLASS not in cmdline or str(self.config_file) not in cmdline:
            return None  # stale pid file, pid reused by something else
        return pid

    def is_running(self) -> bool:
        """Tell whether this broker's process is alive."""
        return self.pid() is not None

    def is_ready(self) -> bool:
        """Tell whether the broker answers on both client listeners."""
        try:
            if _kafka_wire.metadata_broker_count(HOST, self.port) < 1:
                return False
            error, _ = _kafka_wire.sasl_mechanisms(HOST, self.scram_port, SCRAM_MECHANISM)
            return error == 0
        except (OSError, struct.error):  # refused/reset/timeout, or a truncated answer
            return False

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 120) -> None:
        """Start the broker unless it runs already; return once it serves requests.

        ``timeout`` bounds the wait for readiness after launch; the one-time jar
        download (Maven) and storage format have their own, longer limits.
        """
        with file_lock(self.dir / ".lock"):
            pid = self.pid()
            if pid is not None:
                self._wait_ready(pid, time.monotonic() + timeout, log_offset=None)
                return
            java = java_executable()
            self._check_ports_free()
            ensure_libs(self.libs_dir)
            self._write_config()
            self._ensure_formatted(java)
            log_offset = self.server_log.stat().st_size if self.server_log.exists() else 0
            pid = self._launch(java)
            try:
                self._wait_ready(pid, time.monotonic() + timeout, log_offset)
            except BaseException:
                # Leave nothing half-started behind: the next start() begins clean.
                terminate(pid, 10)
                self.pid_file.unlink(missing_ok=True)
                promote_cds(self.dir, keep=False)  # classes of a failed start only
                raise

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the broker (controlled shutdown), SIGKILL after ``timeout`` seconds."""
        with file_lock(self.dir / ".lock"):
            pid = self.pid()
            if pid is not None:
                clean = terminate(pid, timeout)
                promote_cds(self.dir, keep=clean)
            self.pid_file.unlink(missing_ok=True)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL the broker immediately (simulates a crash; data is recovered on start)."""
        pid = self.pid()
        if pid is not None:
            send_signal(pid, signal.SIGKILL)
            if not wait_dead(pid, 10):
                raise DevEnvError(f"Kafka pid {pid} survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        self._proc = None

    # -- helpers ---------------------------------------------------------------

    def _check_ports_free(self) -> None:
        for port in (self.port, self.controller_port, self.scram_port):
            if port_open(HOST, port):
                raise DevEnvError(
                    f"{HOST}:{port} is already in use by a process this launcher did not start; "
                    "stop it or pick other ports (or set KAFKA_BOOTSTRAP_SERVERS to use it)"
                )

    def _write_config(self) -> None:
        """(Re)write server.properties on every start so port changes take effect."""
        self.dir.mkdir(parents=True, exist_ok=True)
        text = server_properties(self.port, self.controller_port, self.scram_port, self.data_dir)
        self.config_file.write_text(text)

    def _jvm(self, java: str, extra: list[str]) -> list[str]:
        return [
            java,
            *extra,
            *JVM_FLAGS,
            f"-Dlog4j.configuration=file:{LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            f"{self.libs_dir}/*",
        ]

    def _ensure_formatted(self, java: str) -> None:
        """Format the storage once (cluster id + SCRAM users); later starts reuse it."""
        if (self.data_dir / "meta.properties").is_file():
            return
        # A data dir without meta.properties is a failed earlier format: start over.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        id_file = self.dir / "cluster.id"
        cluster_id = id_file.read_text().strip() if id_file.is_file() else new_cluster_id()
        id_file.write_text(cluster_id + "\n")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        cmd = [*self._jvm(java, ["-Xmx256m"]), "kafka.tools.StorageTool", "format"]
        cmd += ["-t", cluster_id, "-c", str(self.config_file), *scram_format_args()]
        run(cmd, what="formatting the Kafka storage", timeout=120, cwd=self.dir)

    def _launch(self, java: str) -> int:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        flags = ["-Xms512m", "-Xmx1g", *cds_flags(java, self.libs_dir, self.dir)]
        cmd = [*self._jvm(java, flags), _MAIN_CLASS, str(self.config_file)]
        with self.out_file.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting Kafka\n".encode())
            out.flush()
            # Own session: the broker outlives this process and terminal signals.
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        return self._proc.pid

    def _log_since(self, offset: int) -> str:
        try:
            with self.server_log.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(offset if offset <= size else 0)  # smaller: the log rolled over
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, pid: int, deadline: float, log_offset: int | None) -> None:
        """Wait for the "started" log line (fresh launches) and real answers on both listeners."""
        seen_line = log_offset is None
        while True:
            if not pid_alive(pid):
                raise DevEnvError(f"Kafka (pid {pid}) exited during startup\n{self._diagnostics()}")
            if not seen_line and log_offset is not None:
                seen_line = _READY_LINE in self._log_since(log_offset)
            if seen_line and self.is_ready():
                return
            if time.monotonic() >= deadline:
                raise DevEnvError(
                    f"Kafka (pid {pid}) not ready on {self.bootstrap_servers} in time\n"
                    f"{self._diagnostics()}"
                )
            time.sleep(0.2)

    def _diagnostics(self) -> str:
        return (
            f"--- tail of {self.server_log} ---\n{tail(self.server_log)}\n"
            f"--- tail of {self.out_file} ---\n{tail(self.out_file, 20)}"
        )


__all__ = ["LocalKafka"]
