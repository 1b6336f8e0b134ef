"""Development-only secrets for `make run` / `make up`: a webhooks master key, an
API key for the tenant ``dev`` and the internal key dispatch uses, generated once into
``.local/dev-secrets.json``.

Real deployments set WEBHOOKS_MASTER_KEY, WEBHOOKS_API_KEYS and WEBHOOKS_INTERNAL_KEY
themselves; values
already in the environment always win.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

DEV_TENANT = "dev"


def dev_secrets(root: Path) -> dict[str, str]:
    """The development variables, created on first use (file mode 0600)."""
    path = root / "dev-secrets.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    fresh = {
        "WEBHOOKS_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "WEBHOOKS_API_KEYS": f"hk_dev_{secrets.token_hex(16)}={DEV_TENANT}",
        # Shared by webhooks (SubscriptionService) and dispatch (its caller).
        "WEBHOOKS_INTERNAL_KEY": f"hk_internal_{secrets.token_hex(16)}",
    }
    if stored.keys() >= fresh.keys():
        return stored
    values = fresh | stored  # a file from an older version keeps its values
    root.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(values, out, indent=2)
    partial.replace(path)
    return values


def brings_own(env: Mapping[str, str], name: str) -> bool:
    """Whether ``env`` gives ``name`` a value of its own: set, or for WEBHOOKS_API_KEYS
    its file (both set would stop webhooks)."""
    return bool(env.get(name) or env.get(f"{name}_FILE"))


def dev_api_key(root: Path) -> str | None:
    """The development API key, unless the environment brings its own keys."""
    if brings_own(os.environ, "WEBHOOKS_API_KEYS"):
        return None
    return dev_secrets(root)["WEBHOOKS_API_KEYS"].partition("=")[0]
