"""``python -m herald.services.reconcile``: run the reconcile service."""

from __future__ import annotations

import sys

import uvloop

from herald.runtime.logging import configure_logging
from herald.runtime.server import serve
from herald.runtime.settings import KafkaSettings, load_both, load_settings
from herald.services.reconcile.app import build
from herald.services.reconcile.settings import ReconcileSettings, VibeKafkaSettings


async def main() -> int:
    """Builds and serves the reconcile service until SIGTERM."""
    settings, herald_kafka = load_both(ReconcileSettings, KafkaSettings)
    configure_logging(settings.log_level, settings.log_format, service="reconcile")
    vibe_kafka = (
        load_settings(VibeKafkaSettings) if VibeKafkaSettings.configured() else herald_kafka
    )
    app = await build(settings, herald_kafka, vibe_kafka)
    return await serve(
        app,
        settings.reconcile_addr,
        settings.reconcile_metrics_addr,
        settings.shutdown_grace_seconds,
        settings.server_tls(),
    )


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
