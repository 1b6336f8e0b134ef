"""The whole dev stack: ``python -m herald.devenv.stack run|up|down|status``.

* ``run``: Kafka, PostgreSQL and every service in the foreground, output prefixed
  with the service name; Ctrl-C stops it all (infra only if this run started it).
* ``up``: the same in the background (logs in ``.local/logs/<name>.log``, pids in
  ``.local/run/<name>.pid``); returns once every service is SERVING. Idempotent.
* ``down``: stop the services (SIGTERM, SIGKILL after 15 s), then the local infra.
* ``status``: every service's pid, address and health, and the infra; exit 3
  unless everything runs and is SERVING.

Services are the packages ``src/herald/services/<name>/`` with a ``__main__.py``.
Names without a default address in ``KNOWN_PORTS`` get the next free slots after
the table (50055/9455, ...), passed to them as ``<NAME>_ADDR``/``<NAME>_METRICS_ADDR``.
External ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` are used as they are.
Exit status: 0 success, 1 failure, 3 from ``status`` when something is down.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from . import LocalKafka, LocalPostgres, local_root, start_services
from ._stack_run import STOP_GRACE, Runner, describe_exit, launch
from ._stack_services import (
    UNREACHABLE,
    Service,
    check_health,
    dial_target,
    discover,
    infra_state,
    logs_dir,
    pid_file,
    recorded_service,
    run_dir,
    service_pid,
    stop_waves,
    summary,
    wait_serving,
    write_pid,
)
from ._util import DevEnvError, file_lock, pid_alive, port_open, tail, terminate

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Sequence
    from pathlib import Path

# How long a live service process that does not answer health checks yet gets
# before `up` considers it hung and restarts it.
_ANSWER_GRACE = 10.0


def _say(message: str) -> None:
    print(message, flush=True)


def _services() -> list[Service]:
    services = discover()
    if not services:
        raise DevEnvError("no services found (src/herald/services/*/__main__.py)")
    for service in services:
        if not service.known:
            _say(
                f"note: {service.name} has no default address in the stack's table; "
                f"using {service.addr} (metrics {service.metrics_addr})"
            )
    return services


def _answers(service: Service, grace: float) -> tuple[str, str]:
    """Probe until the service answers at all (or ``grace`` runs out); the last status,
    and why it is unreachable when its port is reached but cannot be talked to (see
    :func:`check_health`)."""
    status, why = check_health(service.addr)
    tries = int(grace / 0.5)
    while status == UNREACHABLE and not why and tries > 0:
        tries -= 1
        status, why = check_health(service.addr, timeout=0.5)
    return status, why


def _port_taken(service: Service) -> bool:
    host, _, port = dial_target(service.addr).rpartition(":")
    return port_open(host.strip("[]"), int(port))


def up(root: Path, timeout: float) -> int:
    """Start what is not running, in the background; return 0 once all is SERVING."""
    services = _services()
    # Two `up`s at once would both launch every service: one at a time.
    with file_lock(run_dir(root) / ".lock"):
        _say("starting PostgreSQL and Kafka (unless running or external) ...")
        infra = start_services(root)
        logs_dir(root).mkdir(parents=True, exist_ok=True)
        procs: dict[str, subprocess.Popen[bytes]] = {}
        pids: dict[str, int] = {}
        active: list[Service] = []
        for service in services:
            state = service_pid(root, service)
            if state.stale is not None:
                _say(f"{service.name}: removed stale pid file (pid {state.stale})")
            if state.pid is not None:
                running = recorded_service(root, service)
                health, why = _answers(running, _ANSWER_GRACE)
                if why:  # it runs, with other TLS settings than this environment's
                    raise DevEnvError(
                        f"{service.name} (pid {state.pid}) runs on {running.addr}, but this "
                        f"environment cannot talk to it: {why}; use the GRPC_TLS_* settings it "
                        "was started with, or `make down` first to restart it with these"
                    )
                if health != UNREACHABLE:
                    _say(f"{service.name}: already running (pid {state.pid}, {health})")
                    pids[service.name] = state.pid
                    active.append(running)
                    continue
                _say(
                    f"{service.name}: pid {state.pid} does not answer on {running.addr}; restarting"
                )
                if not terminate(state.pid, STOP_GRACE):
                    _say(f"{service.name}: pid {state.pid} ignored SIGTERM; killed")
                pid_file(root, service).unlink(missing_ok=True)
            if _port_taken(service):
                raise DevEnvError(
                    f"{service.addr} ({service.name}) is in use by a process the stack did not "
                    f"start; stop it or set {service.addr_var}"
                )
            log = logs_dir(root) / f"{service.name}.log"
            with log.open("ab") as out:
                started = time.strftime("%Y-%m-%d %H:%M:%S")
                out.write(f"\n=== {started} starting {service.module}\n".encode())
                out.flush()
                proc = launch(service, infra, out, detach=True)
            write_pid(root, service, proc.pid)
            procs[service.name], pids[service.name] = proc, proc.pid
            active.append(service)
            _say(f"{service.name}: started (pid {proc.pid}, log {log})")

        def exit_reason(service: Service) -> str | None:
            if service.name in procs:
                code = procs[service.name].poll()
                return None if code is None else describe_exit(code)
            return None if pid_alive(pids[service.name]) else "exited"

        _say(f"waiting for {', '.join(s.name for s in active)} to be SERVING ...")
        failure = wait_serving(active, exit_reason, timeout)
    if failure is not None:
        _report_failure(root, failure.service, failure.reason, active)
        return 1
    _say("\n".join(summary(active, root, pids)))
    _say(f"logs: {logs_dir(root)}/<service>.log   (stop with `make down`)")
    return 0


def _report_failure(root: Path, service: Service, reason: str, active: Sequence[Service]) -> None:
    """What ``up`` says when a service did not come up: its log's tail, where the
    servers are, and what is still running (left so, for the log and a retry)."""
    log = logs_dir(root) / f"{service.name}.log"
    print(f"error: {service.name} {reason}\n--- tail of {log} ---\n{tail(log)}", file=sys.stderr)
    for server in infra_state(root):
        print(f"{server.label}: {server.describe()}  {server.var}={server.value}", file=sys.stderr)
    still = [s.name for s in active if service_pid(root, s).pid is not None]
    still += [i.label for i in infra_state(root) if i.pid is not None]
    if still:
        print(f"(still running: {', '.join(still)}; `make down` stops them)", file=sys.stderr)


def _with_orphans(root: Path, services: Sequence[Service]) -> list[Service]:
    """The discovered services plus any pid file of a service no longer in the tree."""
    known = {s.name for s in services}
    extra = sorted(p.stem for p in run_dir(root).glob("*.pid") if p.stem not in known)
    return [*services, *(Service(name, "", "", known=False) for name in extra)]


def down(root: Path) -> int:
    """Stop every service from its pid file, then the local infrastructure."""
    services = _with_orphans(root, discover())
    with file_lock(run_dir(root) / ".lock"):
        running: list[tuple[Service, int]] = []
        for service in services:
            state = service_pid(root, service)
            if state.stale is not None:
                _say(f"{service.name}: removed stale pid file (pid {state.stale})")
            if state.pid is not None:
                running.append((service, state.pid))
        if running:
            _say(f"stopping {', '.join(f'{s.name} (pid {pid})' for s, pid in running)} ...")
        for wave in stop_waves(running, lambda item: item[0].name):
            # In parallel: each may take its full drain time.
            with ThreadPoolExecutor(max_workers=len(wave)) as pool:
                results = list(pool.map(lambda item: terminate(item[1], STOP_GRACE), wave))
            for (service, pid), clean in zip(wave, results, strict=True):
                pid_file(root, service).unlink(missing_ok=True)
                how = "stopped" if clean else f"killed (no exit {STOP_GRACE:.0f}s after SIGTERM)"
                _say(f"{service.name}: {how} (pid {pid})")
    stopped_infra = []
    for server in infra_state(root):
        if server.external or server.pid is None:
            continue  # the stack never starts a server given from outside
        _say(f"stopping {server.label} (pid {server.pid}) ...")
        (LocalPostgres(root).stop if server.label == "postgres" else LocalKafka(root).stop)()
        stopped_infra.append(server.label)
    if not running and not stopped_infra:
        _say("nothing was running")
    else:
        _say("down")
    return 0


def status(root: Path) -> int:
    """Print what runs where; 0 if every service runs and is SERVING, else 3."""
    services = discover()
    rows = [("service", "state", "pid", "gRPC", "metrics", "health")]
    healthy = bool(services)
    for service in services:
        state = service_pid(root, service)
        shown = recorded_service(root, service) if state.pid else service
        health, why = check_health(shown.addr)
        healthy &= state.pid is not None and health == "SERVING"
        health += f" ({why})" if why else ""
        stale = f" (stale pid file {state.stale} removed)" if state.stale else ""
        rows.append(
            (
                service.name,
                ("running" if state.pid else "stopped") + stale,
                str(state.pid or "-"),
                shown.addr,
                shown.metrics_addr,
                health,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    _say("")
    for infra in infra_state(root):
        healthy &= infra.up
        _say(f"{infra.label:<9} {infra.describe():<20} {infra.var}={infra.value}")
    return 0 if healthy else 3


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m herald.devenv.stack",
        description="Kafka, PostgreSQL and every Herald service, for development.",
    )
    parser.add_argument("command", choices=["run", "up", "down", "status"])
    parser.add_argument(
        "--timeout", type=float, default=60, help="seconds to wait for SERVING (run, up)"
    )
    args = parser.parse_args(argv)
    root = local_root()
    try:
        if args.command == "run":
            return Runner(root, _services(), args.timeout).main()
        if args.command == "up":
            return up(root, args.timeout)
        if args.command == "down":
            return down(root)
        return status(root)
    except DevEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
