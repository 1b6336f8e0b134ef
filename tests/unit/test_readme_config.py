"""Every setting a service reads from the environment is in README's configuration table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from herald.runtime.settings import KafkaSettings
from herald.services.dispatch.settings import DispatchSettings
from herald.services.ingest.settings import IngestRelaySettings, IngestSettings
from herald.services.reconcile.settings import ReconcileSettings, VibeKafkaSettings
from herald.services.webhooks.settings import WebhooksSettings

README = Path(__file__).parents[2] / "README.md"
SETTINGS: list[type[BaseSettings]] = [
    IngestSettings,
    IngestRelaySettings,
    DispatchSettings,
    WebhooksSettings,
    ReconcileSettings,
    KafkaSettings,
    VibeKafkaSettings,
]


def documented() -> tuple[set[str], tuple[str, ...]]:
    """The `NAMES` in the configuration section's table rows, and the prefixes of rows
    that stand for a family (`VIBE_KAFKA_*`)."""
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [row for row in section.splitlines() if row.startswith("| `")]
    names = {n for row in rows for n in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}
    families = tuple(p for row in rows for p in re.findall(r"`([A-Z][A-Z0-9_]*_)\*`", row))
    return names, families


def variables(cls: type[BaseSettings]) -> list[str]:
    prefix = cls.model_config.get("env_prefix", "") or ""
    return [f"{prefix}{name}".upper() for name in cls.model_fields]


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda cls: cls.__name__)
def test_every_setting_is_documented(cls: type[BaseSettings]) -> None:
    names, families = documented()
    missing = sorted(v for v in variables(cls) if v not in names and not v.startswith(families))
    assert not missing, f"not in README's configuration table: {missing}"
