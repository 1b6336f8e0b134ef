"""What the dev stack knows: services and addresses, pid files, health, infrastructure.

Shared by the foreground runner (``_stack_run``) and the ``up/down/status`` commands.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import LocalKafka, LocalPostgres, external_database_url, external_kafka_bootstrap
from ._util import REPO_ROOT, DevEnvError, pid_alive, proc_cmdline, read_pid
from .dev_secrets import DEV_TENANT, dev_api_key

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

T = TypeVar("T")
HOST = "127.0.0.1"
SERVICES_DIR = REPO_ROOT / "src" / "herald" / "services"
# Default (gRPC, metrics) ports of the services the stack knows; the services use
# the same defaults for <NAME>_ADDR / <NAME>_METRICS_ADDR.
KNOWN_PORTS: dict[str, tuple[int, int]] = {
    "ingest": (50051, 9451),
    "ingest_relay": (50055, 9455),
    "dispatch": (50052, 9452),
    "webhooks": (50053, 9453),
    "reconcile": (50054, 9454),
}
# What the stack adds to a service's environment unless the operator set it: ingest's
# outbox relay runs as a process of its own (ingest_relay), a core apart from the calls.
STACK_DEFAULTS: dict[str, dict[str, str]] = {"ingest": {"RELAY_ENABLED": "false"}}
# Stopped after every other service has exited: the relay's drain then sends what
# ingest accepted up to its last call (stopped together, the relay could finish its
# drain first and leave the last events in the outbox until the next start).
STOP_LAST = frozenset({"ingest_relay"})
SERVING = "SERVING"
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Service:
    """One ``herald.services.<name>`` package and where it listens."""

    name: str
    addr: str
    metrics_addr: str
    known: bool = True

    @property
    def module(self) -> str:
        """The module run with ``python -m``; also how its process is recognised."""
        return f"herald.services.{self.name}"

    @property
    def addr_var(self) -> str:
        """The environment variable holding the gRPC listen address."""
        return f"{self.name.upper()}_ADDR"

    @property
    def metrics_var(self) -> str:
        """The environment variable holding the /metrics listen address."""
        return f"{self.name.upper()}_METRICS_ADDR"


def discover(environ: Mapping[str, str] | None = None) -> list[Service]:
    """Find ``src/herald/services/*/__main__.py``; known names first, in table order.

    Addresses come from ``<NAME>_ADDR`` / ``<NAME>_METRICS_ADDR`` when set, else
    from :data:`KNOWN_PORTS`. A name missing from the table gets the next ports
    after the table's (50055/9455, 50056/9456, ... alphabetically) so that every
    command computes the same address; the stack passes them to the service
    explicitly since its own defaults cannot be known.
    """
    env = os.environ if environ is None else environ
    names = {path.parent.name for path in SERVICES_DIR.glob("*/__main__.py")}
    ordered = [name for name in KNOWN_PORTS if name in names]
    unknown = sorted(names - set(KNOWN_PORTS))
    grpc_next = max(port for port, _ in KNOWN_PORTS.values()) + 1
    metrics_next = max(port for _, port in KNOWN_PORTS.values()) + 1
    services = []
    for name in ordered + unknown:
        known = name in KNOWN_PORTS
        offset = 0 if known else unknown.index(name)
        grpc_port, metrics_port = KNOWN_PORTS.get(name, (grpc_next + offset, metrics_next + offset))
        upper = name.upper()
        services.append(
            Service(
                name,
                _address(env, f"{upper}_ADDR", grpc_port),
                _address(env, f"{upper}_METRICS_ADDR", metrics_port),
                known,
            )
        )
    return services


def stop_waves(items: Sequence[T], name: Callable[[T], str]) -> list[list[T]]:
    """``items`` (services, or what stands for them) in the waves they are stopped in:
    everything, then :data:`STOP_LAST`; empty waves left out."""
    first = [i for i in items if name(i) not in STOP_LAST]
    last = [i for i in items if name(i) in STOP_LAST]
    return [wave for wave in (first, last) if wave]


def _address(env: Mapping[str, str], var: str, default_port: int) -> str:
    value = env.get(var) or f"{HOST}:{default_port}"
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise DevEnvError(f"{var}={value!r}: expected HOST:PORT")
    return value


# -- pid files -------------------------------------------------------------------


def run_dir(root: Path) -> Path:
    """Where the pid files live."""
    return root / "run"


def logs_dir(root: Path) -> Path:
    """Where ``up`` appends each service's output."""
    return root / "logs"


def pid_file(root: Path, service: Service) -> Path:
    """The pid file of ``service``."""
    return run_dir(root) / f"{service.name}.pid"


def write_pid(root: Path, service: Service, pid: int) -> None:
    """Record ``pid`` (first line, what :func:`read_pid` reads) and the addresses."""
    run_dir(root).mkdir(parents=True, exist_ok=True)
    pid_file(root, service).write_text(f"{pid}\n{service.addr}\n{service.metrics_addr}\n")


class PidState(NamedTuple):
    """A live pid (``pid``) or the pid a stale file named (``stale``), or neither."""

    pid: int | None
    stale: int | None = None


def service_pid(root: Path, service: Service) -> PidState:
    """Return the live pid of ``service``; a stale pid file is removed.

    Stale: the process is gone, or the pid was reused by a process whose command
    line does not contain ``herald.services.<name>``.
    """
    path = pid_file(root, service)
    pid = read_pid(path)
    if pid is None:
        return PidState(None)
    if pid_alive(pid) and service.module in proc_cmdline(pid):
        return PidState(pid)
    path.unlink(missing_ok=True)
    return PidState(None, stale=pid)


def recorded_service(root: Path, service: Service) -> Service:
    """``service`` with the addresses written into its pid file, if any.

    A running service listens where it was started, whatever the environment
    of a later ``status`` or ``up`` says.
    """
    try:
        lines = pid_file(root, service).read_text().splitlines()
    except OSError:
        return service
    if len(lines) < 3 or not lines[1] or not lines[2]:
        return service
    return Service(service.name, lines[1].strip(), lines[2].strip(), service.known)


# -- health ----------------------------------------------------------------------


def dial_target(addr: str) -> str:
    """Turn a listen address into one to connect to (wildcards mean loopback)."""
    host, _, port = addr.rpartition(":")
    if host in ("", "0.0.0.0"):  # noqa: S104 - comparing, not binding
        return f"{HOST}:{port}"
    if host in ("[::]", "::"):
        return f"[::1]:{port}"
    return addr


def probe_credentials(environ: Mapping[str, str] | None = None) -> grpc.ChannelCredentials | None:
    """TLS of the health probe when the services' ports take TLS (GRPC_TLS_CERT_FILE):
    trusting GRPC_TLS_CA_FILE (else the servers' own certificate, as a self-signed one
    is), presenting GRPC_TLS_CLIENT_CERT_FILE/KEY_FILE when set (mutual TLS); None:
    plaintext. A file that cannot be read: the service itself names it as it stops."""
    env = os.environ if environ is None else environ
    if not env.get("GRPC_TLS_CERT_FILE"):
        return None

    def read(var: str) -> bytes | None:
        path = env.get(var)
        try:
            return Path(path).read_bytes() if path else None
        except OSError:
            return None

    return grpc.ssl_channel_credentials(
        root_certificates=read("GRPC_TLS_CA_FILE") or read("GRPC_TLS_CERT_FILE"),
        private_key=read("GRPC_TLS_CLIENT_KEY_FILE"),
        certificate_chain=read("GRPC_TLS_CLIENT_CERT_FILE"),
    )


def probe(addr: str, timeout: float = 1.0) -> str:
    """Ask ``grpc.health.v1.Health/Check`` (service ""): SERVING, NOT_SERVING, ...

    Returns :data:`UNREACHABLE` when nothing answers in ``timeout`` seconds.
    """
    return check_health(addr, timeout)[0]


def check_health(addr: str, timeout: float = 1.0) -> tuple[str, str]:
    """:func:`probe`'s answer, and why the service is unreachable when something
    listens but the connection fails (a TLS handshake: a certificate the probe does not
    trust or not for the host, a mutual-TLS port the probe presents no certificate to),
    else ""."""
    # No HTTP proxy from the environment may sit between us and a loopback port.
    options = [("grpc.enable_http_proxy", 0)]
    credentials = probe_credentials()
    target = dial_target(addr)
    with (
        grpc.secure_channel(target, credentials, options=options)
        if credentials
        else grpc.insecure_channel(target, options=options)
    ) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            # What is raised is also a grpc.Call, which the type stubs cannot express.
            code: grpc.StatusCode | None = getattr(exc, "code", lambda: None)()
            if code in (None, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                details: str = getattr(exc, "details", lambda: "")() or ""
                return UNREACHABLE, _connection_failure(details, credentials is not None)
            return f"error {code.name}", ""
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)), ""


def _connection_failure(details: str, tls: bool, environ: Mapping[str, str] | None = None) -> str:
    """Why a connection to a listening port failed, from gRPC's ``details``; "" when
    nothing listens (yet) or nothing is known."""
    env = os.environ if environ is None else environ
    # "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: <why>"
    why = details.rpartition("last error: ")[2].split(": ", 2)[-1].removesuffix(": OK")
    if "WRONG_VERSION_NUMBER" in details:
        return "the port does not speak TLS: a plaintext port? (GRPC_TLS_CERT_FILE is set here)"
    if "handshake" in details.lower() or "verification" in details.lower():
        return f"TLS handshake failed: {why.removeprefix('Tls handshake failed ')}"
    if "Socket closed" in details:
        if not tls:
            return (
                "the port closed the connection: a TLS port? (GRPC_TLS_CERT_FILE is not set here)"
            )
        if not env.get("GRPC_TLS_CLIENT_CERT_FILE"):
            return (
                "the port closed the TLS connection: mutual TLS? (GRPC_TLS_CLIENT_CERT_FILE "
                "is not set here)"
            )
        return "the port closed the TLS connection (a client certificate it does not trust?)"
    return ""


class Failure(NamedTuple):
    """Why a service did not become SERVING."""

    service: Service
    reason: str


def wait_serving(
    services: Sequence[Service],
    exit_reason: Callable[[Service], str | None],
    timeout: float,
    cancelled: Callable[[], bool] = lambda: False,
) -> Failure | None:
    """Poll every service's health until all are SERVING; return the first failure.

    ``exit_reason`` tells whether a service's process has died (and how); that
    fails at once rather than after the whole timeout. Returns ``None`` also when
    ``cancelled()`` turns true.
    """
    deadline = time.monotonic() + timeout
    pending = list(services)
    last: dict[str, tuple[str, str]] = {}
    while pending and not cancelled():
        for service in list(pending):
            reason = exit_reason(service)
            if reason is not None:
                return Failure(service, reason)
            last[service.name] = check_health(service.addr)
            if last[service.name][0] == SERVING:
                pending.remove(service)
        if pending and time.monotonic() >= deadline:
            service = pending[0]
            health, why = last.get(service.name, (UNREACHABLE, ""))
            return Failure(
                service,
                f"not SERVING after {timeout:.0f}s (health: {health}{f': {why}' if why else ''})",
            )
        if pending:
            time.sleep(0.5)
    return None


# -- infrastructure --------------------------------------------------------------


class InfraState(NamedTuple):
    """One of Kafka / PostgreSQL as the stack sees it."""

    label: str
    var: str
    value: str
    external: bool
    pid: int | None

    @property
    def up(self) -> bool:
        """External servers count as up: the stack does not manage them."""
        return self.external or self.pid is not None

    def describe(self) -> str:
        """``external`` / ``running, pid N`` / ``stopped``."""
        if self.external:
            return "external"
        return f"running, pid {self.pid}" if self.pid else "stopped"


def infra_state(root: Path) -> list[InfraState]:
    """Where PostgreSQL and Kafka are, and whether the local ones run."""
    pg, kafka = LocalPostgres(root), LocalKafka(root)
    db_url, bootstrap = external_database_url(), external_kafka_bootstrap()
    return [
        InfraState(
            "postgres", "DATABASE_URL", db_url or pg.dsn, bool(db_url), None if db_url else pg.pid()
        ),
        InfraState(
            "kafka",
            "KAFKA_BOOTSTRAP_SERVERS",
            bootstrap or kafka.bootstrap_servers,
            bool(bootstrap),
            None if bootstrap else kafka.pid(),
        ),
    ]


def summary(services: Sequence[Service], root: Path, pids: Mapping[str, int]) -> list[str]:
    """The address table printed by ``run`` and ``up``."""
    width = max((len(s.name) for s in services), default=0)
    lines = ["services:"]
    for s in services:
        pid = f"   pid {pids[s.name]}" if s.name in pids else ""
        lines.append(
            f"  {s.name:<{width}}  gRPC {s.addr:<16}  metrics http://{s.metrics_addr}/metrics{pid}"
        )
    lines.append("infrastructure:")
    for state in infra_state(root):
        lines.append(f"  {state.var}={state.value}   [{state.label}: {state.describe()}]")
    key = dev_api_key(root)
    if key and any(s.name == "webhooks" for s in services):
        lines.append(f"development API key (tenant {DEV_TENANT}): -H 'authorization: Bearer {key}'")
    return lines
