"""Service processes: launching them, and ``stack run`` (everything in the foreground).

Each service's output is streamed with a fixed-width ``name | `` prefix. Ctrl-C,
SIGTERM or SIGHUP stop the services (SIGTERM, SIGKILL after a grace period), then
the Kafka/PostgreSQL this run started itself; those already running are left alone.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING

from . import LocalKafka, LocalPostgres, local_root, start_services
from ._stack_services import (
    STACK_DEFAULTS,
    Service,
    dial_target,
    infra_state,
    service_pid,
    stop_waves,
    summary,
    wait_serving,
    write_pid,
)
from ._util import REPO_ROOT, DevEnvError, port_open
from .dev_secrets import brings_own, dev_secrets

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path
    from types import FrameType

# As the README advises an orchestrator: the gRPC drain, 22 s for workers (a relay round
# Kafka does not answer is cut short), the relay's drain (a 15 s stop killed a relay
# mid-drain, and its records were repeated).
STOP_GRACE = 60.0
_COLORS = ("36", "35", "33", "32", "34", "96", "95", "93")
_STACK = "stack"


def child_env(service: Service, infra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a service process.

    ``os.environ`` + the infrastructure addresses + ``LOG_FORMAT=console`` and the
    service's :data:`STACK_DEFAULTS` unless set, the service's own addresses,
    unbuffered output (lines show up at once) and an absolute PYTHONPATH (the child
    runs from the repository root).
    """
    env = dict(os.environ)
    env.update(infra)
    for name, value in dev_secrets(local_root()).items():
        if not brings_own(env, name):
            env.setdefault(name, value)
    # Development receivers run on this machine: webhooks may deliver to loopback.
    env.setdefault("WEBHOOKS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
    env.setdefault("LOG_FORMAT", "console")
    for name, value in STACK_DEFAULTS.get(service.name, {}).items():
        env.setdefault(name, value)
    env["PYTHONUNBUFFERED"] = "1"
    env[service.addr_var] = service.addr
    env[service.metrics_var] = service.metrics_addr
    paths = [str(REPO_ROOT / "src"), str(REPO_ROOT / "gen")]
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
    env["PYTHONPATH"] = os.pathsep.join(paths + existing)
    return env


def launch(
    service: Service,
    infra: Mapping[str, str],
    stdout: IO[bytes] | int,
    *,
    detach: bool,
) -> subprocess.Popen[bytes]:
    """Start ``python -m herald.services.<name>``, output (with stderr) to ``stdout``.

    ``detach``: own session, so the service outlives this process and the
    terminal; otherwise its own process group, so a terminal Ctrl-C reaches only
    the runner, which then stops the services in order.
    """
    return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        [sys.executable, "-m", service.module],
        cwd=REPO_ROOT,
        env=child_env(service, infra),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        close_fds=True,
        start_new_session=detach,
        process_group=None if detach else 0,
    )


def describe_exit(code: int) -> str:
    """Say how a process ended from its Popen return code."""
    if code < 0:
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` leads (every service leads one); gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class _Output:
    """Writes prefixed lines; one lock so lines of different services never interleave."""

    def __init__(self, names: Sequence[str]) -> None:
        self.width = max(len(name) for name in [*names, _STACK])
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.codes = {name: _COLORS[i % len(_COLORS)] for i, name in enumerate(names)}
        self.codes[_STACK] = "1"  # bold
        self.lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        prefix = f"{name:<{self.width}} | "
        if self.color:
            prefix = f"\033[{self.codes.get(name, '0')}m{prefix}\033[0m"
        with self.lock:
            try:
                sys.stdout.write(prefix + text + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):
                pass  # the terminal went away (SIGHUP); shutting down must go on

    def say(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.line(_STACK, line)


class _Child:
    """A running service and the thread copying its output to the terminal."""

    def __init__(self, service: Service, proc: subprocess.Popen[bytes], out: _Output) -> None:
        self.service = service
        self.proc = proc
        self.recent: collections.deque[str] = collections.deque(maxlen=40)
        self._out = out
        self._reader = threading.Thread(
            target=self._pump, name=f"{service.name}-output", daemon=True
        )
        self._reader.start()

    def _pump(self) -> None:
        stream: IO[bytes] | None = self.proc.stdout
        if stream is None:
            return
        for raw in stream:
            text = raw.decode(errors="replace").rstrip("\r\n")
            self.recent.append(text)
            self._out.line(self.service.name, text)

    def finish_output(self) -> None:
        """Wait (briefly) until the output of a dead child is fully printed."""
        self._reader.join(timeout=2)


class _Interrupted(Exception):
    """A stop signal arrived while the infrastructure was starting."""


class Runner:
    """One ``stack run``: start, supervise, stop."""

    def __init__(self, root: Path, services: Sequence[Service], timeout: float) -> None:
        self.root = root
        self.services = list(services)
        self.timeout = timeout
        self.out = _Output([s.name for s in services])
        self.children: list[_Child] = []
        self.stop = threading.Event()
        self.signal_name = ""
        self._interruptible = False

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stop.is_set():
            self.signal_name = signal.Signals(signum).name
        self.stop.set()
        # Only the blocking infrastructure start needs an exception to be left;
        # everything else polls ``self.stop`` and must not be cut short.
        if self._interruptible:
            self._interruptible = False
            raise _Interrupted

    def main(self) -> int:
        """Run until a signal (exit 0) or a failure (exit 1)."""
        problem = self._conflicts()
        if problem:
            self.out.say(f"error: {problem}")
            return 1
        before = {state.label: state.up for state in infra_state(self.root)}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        code = 1
        try:
            self.out.say("starting PostgreSQL and Kafka (unless running or external) ...")
            self._interruptible = True
            infra = start_services(self.root)
            self._interruptible = False
            code = self._supervise(infra)
        except _Interrupted:
            self.out.say(f"{self.signal_name} while starting the infrastructure; stopping")
            code = 0
        except (DevEnvError, OSError) as exc:
            self.out.say(f"error: {exc}")
        finally:
            self._interruptible = False
            self._stop_children()
            self._stop_infra(before)
        self.out.say(f"stopped (exit {code})")
        return code

    def _conflicts(self) -> str | None:
        for service in self.services:
            pid = service_pid(self.root, service).pid
            if pid is not None:
                return (
                    f"{service.name} already runs (pid {pid}, e.g. from `make up`); "
                    "stop it with `make down` first"
                )
            host, _, port = dial_target(service.addr).rpartition(":")
            if port_open(host.strip("[]"), int(port)):
                return f"{service.addr} ({service.name}) is in use by a process not from the stack"
        return None

    def _supervise(self, infra: Mapping[str, str]) -> int:
        for service in self.services:
            proc = launch(service, infra, subprocess.PIPE, detach=False)
            # A pid file lets `status`/`down` in another terminal see this run's services.
            write_pid(self.root, service, proc.pid)
            self.children.append(_Child(service, proc, self.out))
        self.out.say(f"waiting for {', '.join(s.name for s in self.services)} to be SERVING ...")
        failure = wait_serving(
            self.services, self._exit_reason, self.timeout, cancelled=self.stop.is_set
        )
        if self.stop.is_set():
            self.out.say(f"{self.signal_name} received; stopping")
            return 0
        if failure is not None:
            child = self._child(failure.service)
            if child.proc.poll() is not None:
                child.finish_output()
            self.out.say(f"{failure.service.name} {failure.reason}; its last log lines:")
            for line in list(child.recent)[-25:]:
                self.out.line(failure.service.name, line)
            # Not SERVING is most often a dependency gone (e.g. stopped by a test run).
            self.out.say("\n".join(f"{s.label}: {s.describe()}" for s in infra_state(self.root)))
            return 1
        pids = {c.service.name: c.proc.pid for c in self.children}
        self.out.say("\n".join(summary(self.services, self.root, pids)))
        self.out.say("all SERVING; Ctrl-C stops everything")
        while not self.stop.wait(0.5):
            for child in self.children:
                code = child.proc.poll()
                if code is not None:
                    child.finish_output()
                    self.out.say(
                        f"!!! {child.service.name} {describe_exit(code)} unexpectedly; "
                        "stopping everything"
                    )
                    return 1
        self.out.say(f"{self.signal_name} received; stopping")
        return 0

    def _child(self, service: Service) -> _Child:
        return next(c for c in self.children if c.service.name == service.name)

    def _exit_reason(self, service: Service) -> str | None:
        code = self._child(service).proc.poll()
        return None if code is None else describe_exit(code)

    def _stop_children(self) -> None:
        alive = [c for c in self.children if c.proc.poll() is None]
        for wave in stop_waves(alive, lambda c: c.service.name):
            for child in wave:
                signal_group(child.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            for child in wave:
                try:
                    child.proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    name = child.service.name
                    self.out.say(f"{name} still running after {STOP_GRACE:.0f}s: SIGKILL")
                    signal_group(child.proc.pid, signal.SIGKILL)
                    child.proc.wait()
        for child in self.children:
            child.finish_output()
            code = child.proc.returncode
            if child in alive:
                result = "stopped" if code == 0 else describe_exit(code)
                self.out.say(f"{child.service.name} {result}")
            # Dead now, so this removes the pid file, unless `up` has since replaced it.
            service_pid(self.root, child.service)

    def _stop_infra(self, before: Mapping[str, bool]) -> None:
        stoppers = {"postgres": LocalPostgres(self.root).stop, "kafka": LocalKafka(self.root).stop}
        for state in infra_state(self.root):
            if state.external:
                continue
            if before.get(state.label):
                self.out.say(f"leaving {state.label} running (it was running before `run`)")
                continue
            if state.pid is not None:
                self.out.say(f"stopping {state.label} (started by this run) ...")
            # Even without a pid: a start cut short by a signal may still be under way in
            # start_services' thread; stop() waits for it (same lock), then stops it.
            try:
                stoppers[state.label]()
            except DevEnvError as exc:
                self.out.say(f"error stopping {state.label}: {exc}")
