"""``python -m herald.services.ingest``: run the ingest service."""

from __future__ import annotations

import sys

import uvloop

from herald.runtime.logging import configure_logging
from herald.runtime.server import serve
from herald.runtime.settings import KafkaSettings, load_both
from herald.services.ingest.app import build
from herald.services.ingest.settings import IngestSettings


async def main() -> int:
    """Builds and serves the ingest service until SIGTERM."""
    settings, kafka_settings = load_both(IngestSettings, KafkaSettings)
    configure_logging(settings.log_level, settings.log_format, service="ingest")
    app = await build(settings, kafka_settings)
    return await serve(
        app,
        settings.ingest_addr,
        settings.ingest_metrics_addr,
        settings.shutdown_grace_seconds,
        settings.server_tls(),
    )


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
