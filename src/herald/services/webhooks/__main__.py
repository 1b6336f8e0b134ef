"""``python -m herald.services.webhooks``: run the webhooks service."""

from __future__ import annotations

import sys

import uvloop

from herald.runtime.logging import configure_logging
from herald.runtime.server import serve
from herald.runtime.settings import KafkaSettings, load_both
from herald.services.webhooks.app import build
from herald.services.webhooks.settings import WebhooksSettings


async def main() -> int:
    """Builds and serves the webhooks service until SIGTERM."""
    settings, kafka_settings = load_both(WebhooksSettings, KafkaSettings)
    configure_logging(settings.log_level, settings.log_format, service="webhooks")
    app = await build(settings, kafka_settings)
    return await serve(
        app,
        settings.webhooks_addr,
        settings.webhooks_metrics_addr,
        settings.shutdown_grace_seconds,
        settings.server_tls(),
    )


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
