"""CPU accounting during a scenario: where the box's CPU went.

On a 2-core machine shared by Kafka, PostgreSQL, ingest and the client (and maybe
other people's tests), where the CPU goes explains the figures; the report keeps it
beside each of them. Processes are grouped as service (the Herald service measured),
client (this process), kafka (java), postgresql and other; a process that started and
ended between the two readings is not seen.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def process_stat(pid: str) -> tuple[str, float] | None:
    """(command name, user + system CPU seconds) of process ``pid``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    name = text[text.find("(") + 1 : text.rfind(")")]
    fields = text.rpartition(")")[2].split()
    return name, (int(fields[11]) + int(fields[12])) / _TICKS


def processes() -> dict[int, tuple[str, float]]:
    """Every process's (command name, CPU seconds)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := process_stat(entry)) is not None:
            out[int(entry)] = stat
    return out


def box_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / _TICKS, total / _TICKS


@dataclass
class CpuMeter:
    """Measures CPU use between :meth:`start` and :meth:`stop`."""

    service_pids: tuple[int, ...] = ()  # the Herald service's processes (ingest and its relay, …)
    _wall: float = 0.0
    _busy: float = 0.0
    _total: float = 0.0
    _before: dict[int, tuple[str, float]] = field(default_factory=dict)

    def start(self) -> None:
        """Takes the starting readings."""
        self._wall = time.perf_counter()
        self._before = processes()
        self._busy, self._total = box_cpu_seconds()

    def _group(self, pid: int, name: str) -> str:
        if pid in self.service_pids:
            return "service_cpu_s"
        if pid == os.getpid():
            return "client_cpu_s"
        if name == "java":
            return "kafka_cpu_s"
        if name.startswith("postgres"):
            return "postgres_cpu_s"
        return "other_cpu_s"

    def stop(self) -> dict[str, float]:
        """CPU seconds per group since :meth:`start`, and the box's busy share (0-100 %)."""
        wall = time.perf_counter() - self._wall
        busy, total = box_cpu_seconds()
        out = {
            "wall_s": wall,
            "box_busy_pct": 100 * (busy - self._busy) / max(total - self._total, 1e-9),
            "client_cpu_s": 0.0,
            "kafka_cpu_s": 0.0,
            "postgres_cpu_s": 0.0,
            "other_cpu_s": 0.0,
        }
        if self.service_pids:
            out["service_cpu_s"] = 0.0
        for pid, (name, seconds) in processes().items():
            used = seconds - self._before.get(pid, (name, 0.0))[1]
            if used > 0:
                key = self._group(pid, name)
                out[key] = out[key] + used
        return out
