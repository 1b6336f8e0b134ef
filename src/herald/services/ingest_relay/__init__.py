"""The ingest outbox relay as a process of its own (see herald.services.ingest.relay_app)."""
