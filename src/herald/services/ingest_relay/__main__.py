"""``python -m herald.services.ingest_relay``: run an outbox relay of its own."""

from __future__ import annotations

import sys

import uvloop

from herald.runtime.logging import configure_logging
from herald.runtime.server import serve
from herald.runtime.settings import KafkaSettings, load_both
from herald.services.ingest.relay_app import build_relay
from herald.services.ingest.settings import IngestRelaySettings


async def main() -> int:
    """Builds and runs the relay until SIGTERM (then sends what is pending, within the
    grace period)."""
    settings, kafka_settings = load_both(IngestRelaySettings, KafkaSettings)
    configure_logging(settings.log_level, settings.log_format, service="ingest_relay")
    app = await build_relay(settings, kafka_settings)
    return await serve(
        app,
        settings.ingest_relay_addr,
        settings.ingest_relay_metrics_addr,
        settings.shutdown_grace_seconds,
        settings.server_tls(),
    )


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
