"""Every setting a service reads from the environment is in README's configuration table,
with the default the service takes."""

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


def documented_defaults() -> dict[str, str]:
    """The default column of each configuration row that documents one variable."""
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    found = {}
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        if len(names) == 1:
            found[names[0]] = cells[1]
    return found


def _same(documented: str, default: object) -> bool:
    if isinstance(default, bool):
        return documented.lower() == str(default).lower()
    if isinstance(default, int | float):
        try:
            return float(documented.replace(",", "")) == float(default)
        except ValueError:
            return False
    return documented == str(default)


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda cls: cls.__name__)
def test_every_documented_default_is_the_settings_default(cls: type[BaseSettings]) -> None:
    """A row's default column (`60`, `true`, empty, required) says what the service
    takes when the variable is unset."""
    rows = documented_defaults()
    prefix = cls.model_config.get("env_prefix", "") or ""
    wrong = []
    for name, field in cls.model_fields.items():
        variable = f"{prefix}{name}".upper()
        documented = rows.get(variable)
        if documented is None:
            continue  # a family's row, or one naming several variables
        if field.is_required():
            if not documented.startswith("required"):
                wrong.append(f"{variable}: required, README says {documented!r}")
            continue
        default = field.get_default(call_default_factory=True)
        quoted = re.match(r"`([^`]*)`", documented)
        if quoted is not None:
            if not _same(quoted.group(1), default):
                wrong.append(f"{variable}: {default!r}, README says {documented!r}")
        elif default not in ("", None, 0, False):
            wrong.append(f"{variable}: {default!r}, README says {documented!r}")
    assert not wrong, wrong
