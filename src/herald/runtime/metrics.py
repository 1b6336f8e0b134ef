"""Prometheus metrics: the shared event metrics and the /metrics HTTP endpoint."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Histogram, start_http_server

from herald.runtime.settings import StartError

# Names from the events seed (000): every service reports through these.
EVENTS_PUBLISHED = Counter(
    "events_published", "Events acknowledged by Kafka after acceptance.", ["event_type"]
)
EVENTS_RETRY = Counter("events_retry", "Failed publish attempts that will be retried.", ["stage"])
EVENTS_LATENCY = Histogram(
    "events_latency_seconds",
    "Seconds from an event's acceptance to its acknowledgement by Kafka.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
EVENTS_DLQ = Counter("events_dlq", "Records sent to the dead-letter topic.", ["reason"])
EVENTS_REJECTED = Counter("events_rejected", "Events refused as invalid.", ["reason"])
EVENTS_ACCEPTED = Counter(
    "events_accepted", "Events accepted (stored in the outbox).", ["event_type", "duplicate"]
)


class MetricsServer:
    """The /metrics endpoint on its own thread (prometheus_client's WSGI server)."""

    def __init__(self, host: str, port: int) -> None:
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host)

    @classmethod
    def listen(cls, address: str, setting: str) -> MetricsServer:
        """Serves /metrics on ``address`` (HOST:PORT, port 0 picks one); a StartError
        naming ``setting``, the variable that gave it, when it cannot (in use, no such
        host)."""
        host, _, port = address.rpartition(":")
        try:
            return cls(host.strip("[]"), int(port))  # "[::]:9451": the host is "::"
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StartError(f"{setting}: cannot serve /metrics on {address}: {reason}") from None

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        return int(self._server.server_port)

    def close(self) -> None:
        """Stops serving."""
        self._server.shutdown()
        self._server.server_close()
