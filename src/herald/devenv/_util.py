"""Shared helpers: paths, errors, process, port and lock utilities."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

# src/herald/devenv/_util.py -> repository root; the package is used from a checkout.
REPO_ROOT = Path(__file__).resolve().parents[3]


class DevEnvError(RuntimeError):
    """A local service could not be prepared, started, stopped or inspected."""


class MissingPrerequisiteError(DevEnvError):
    """A required program is not installed; the message names the install command."""

    def __init__(self, program: str, install: str, detail: str = "") -> None:
        message = f"{program} not found; install it with: {install}"
        super().__init__(f"{message} ({detail})" if detail else message)
        self.program = program
        self.install = install


def local_root() -> Path:
    """Return the data root: ``$HERALD_LOCAL_DIR`` or ``.local/`` at the repo root."""
    override = os.environ.get("HERALD_LOCAL_DIR")
    if override:
        return Path(override).expanduser().resolve()
    return REPO_ROOT / ".local"


def require_program(name: str, install: str) -> str:
    """Return the absolute path of ``name`` on PATH or raise with the install hint."""
    path = shutil.which(name)
    if path is None:
        raise MissingPrerequisiteError(name, install)
    return path


def pid_alive(pid: int) -> bool:
    """Tell whether ``pid`` is a live (non-zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, but belongs to another user
    # A dead child of this Python process stays a zombie until reaped, and
    # kill(pid, 0) still succeeds on zombies: look at the real state.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") or _zombie_still_exiting(pid)


def _zombie_still_exiting(pid: int) -> bool:
    """Reap a zombie child; tell whether the process is in fact still exiting.

    The main thread of a killed JVM turns zombie while its other threads are
    still exiting and holding the listening sockets: it is not dead yet.
    """
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # someone else's child: look at its threads
        try:
            return len(os.listdir(f"/proc/{pid}/task")) > 1
        except OSError:
            return False
    return reaped == 0  # 0: the kernel cannot report the exit yet


def proc_cmdline(pid: int) -> list[str]:
    """Return the argv of ``pid`` (empty if it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def read_pid(path: Path) -> int | None:
    """Read the first line of a pid file; ``None`` if missing or malformed."""
    try:
        first = path.read_text().splitlines()[0].strip()
        return int(first)
    except (OSError, IndexError, ValueError):
        return None


def wait_dead(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` is gone; return whether it died within ``timeout``."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def send_signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by ``pid`` (or just ``pid`` if it leads none)."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def terminate(pid: int, timeout: float) -> bool:
    """SIGTERM ``pid``, wait ``timeout`` s, then SIGKILL; return True if it was clean."""
    send_signal(pid, signal.SIGTERM)
    if wait_dead(pid, timeout):
        return True
    send_signal(pid, signal.SIGKILL)
    if not wait_dead(pid, 10):
        raise DevEnvError(f"process {pid} survived SIGKILL")
    return False


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Tell whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a text file (or a placeholder)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return f"<{path} not readable>"
    return "\n".join(data.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock so parallel test workers do not race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def run(
    cmd: Sequence[str],
    *,
    what: str,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> str:
    """Run a short-lived command; return its output or raise with the output."""
    try:
        proc = subprocess.run(  # noqa: S603 - argv lists built here, never a shell
            list(cmd),
            cwd=cwd,
            env=None if env is None else dict(env),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DevEnvError(f"{what} timed out after {timeout:.0f}s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise DevEnvError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout.strip()}"
        )
    return proc.stdout
