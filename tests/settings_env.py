"""Settings tests' shared parts: what webhooks cannot start without, and the message of
a start that the environment stops."""

from __future__ import annotations

import base64

import pytest
from pydantic_settings import BaseSettings

from herald.runtime.settings import load_settings

KEY = "k" * 16


def set_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """What webhooks cannot start without."""
    monkeypatch.setenv("WEBHOOKS_API_KEYS", f"{KEY}=acme")
    monkeypatch.setenv("WEBHOOKS_MASTER_KEY", base64.b64encode(bytes(32)).decode())


def refused(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cls: type[BaseSettings],
    **env: str,
) -> str:
    """The message of the start that ``env`` stops (exit 2)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exc:
        load_settings(cls)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("invalid configuration:")
    return err
