"""What the dev stack (make run / make up) starts, with which environment, and in
which order it stops them."""

from __future__ import annotations

from pathlib import Path

import pytest

from herald.devenv._stack_run import child_env
from herald.devenv._stack_services import Service, discover, stop_waves

INFRA = {"DATABASE_URL": "postgresql://x@127.0.0.1:1/h", "KAFKA_BOOTSTRAP_SERVERS": "k:1"}


@pytest.fixture(autouse=True)
def own_local_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """child_env creates the development secrets: in this test's directory."""
    monkeypatch.setenv("HERALD_LOCAL_DIR", str(tmp_path))


def service(name: str) -> Service:
    return next(s for s in discover({}) if s.name == name)


def test_the_stack_runs_ingest_and_its_relay_as_separate_processes() -> None:
    found = {s.name: s.addr for s in discover({})}
    assert found["ingest"] == "127.0.0.1:50051"
    assert found["ingest_relay"] == "127.0.0.1:50055"


def test_ingest_leaves_relaying_to_the_relay_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAY_ENABLED", raising=False)
    assert child_env(service("ingest"), INFRA)["RELAY_ENABLED"] == "false"
    relay_env = child_env(service("ingest_relay"), INFRA)
    assert "RELAY_ENABLED" not in relay_env
    assert relay_env["INGEST_RELAY_ADDR"] == "127.0.0.1:50055"


def test_an_operators_relay_enabled_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_ENABLED", "true")
    assert child_env(service("ingest"), INFRA)["RELAY_ENABLED"] == "true"


def test_the_relay_stops_after_everything_else() -> None:
    """So that its drain sends what ingest accepted up to ingest's last call."""
    names = [s.name for s in discover({})]
    waves = stop_waves(names, lambda n: n)
    assert waves == [[n for n in names if n != "ingest_relay"], ["ingest_relay"]]
    assert stop_waves(["ingest", "webhooks"], lambda n: n) == [["ingest", "webhooks"]]


def test_a_keys_file_of_the_operators_replaces_the_dev_tenant_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Both WEBHOOKS_API_KEYS and its file set stop webhooks: the dev key stays out."""
    monkeypatch.delenv("WEBHOOKS_API_KEYS", raising=False)
    assert child_env(service("webhooks"), INFRA)["WEBHOOKS_API_KEYS"].startswith("hk_dev_")
    monkeypatch.setenv("WEBHOOKS_API_KEYS_FILE", str(tmp_path / "keys"))
    env = child_env(service("webhooks"), INFRA)
    assert "WEBHOOKS_API_KEYS" not in env
    assert env["WEBHOOKS_MASTER_KEY"], "the other dev secrets still come"
