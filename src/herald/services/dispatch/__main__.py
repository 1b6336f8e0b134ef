"""``python -m herald.services.dispatch``: run the dispatch service."""

from __future__ import annotations

import sys

import uvloop

from herald.runtime.logging import configure_logging
from herald.runtime.server import serve
from herald.runtime.settings import KafkaSettings, load_both
from herald.services.dispatch.app import build
from herald.services.dispatch.settings import DispatchSettings


async def main() -> int:
    """Builds and serves the dispatch service until SIGTERM."""
    settings, kafka_settings = load_both(DispatchSettings, KafkaSettings)
    configure_logging(settings.log_level, settings.log_format, service="dispatch")
    app = await build(settings, kafka_settings)
    return await serve(
        app,
        settings.dispatch_addr,
        settings.dispatch_metrics_addr,
        settings.shutdown_grace_seconds,
        settings.server_tls(),
    )


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
