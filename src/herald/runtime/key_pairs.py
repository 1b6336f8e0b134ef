"""API keys as ``*_API_KEYS`` and ``*_API_KEYS_FILE`` give them: ``KEY=NAME`` pairs.
Pure but for reading the file; imported by the settings, so it imports no runtime."""

from __future__ import annotations

import re
from pathlib import Path

MIN_KEY_LENGTH = 16
_COMMENT = re.compile(r"(^|\s)#.*$")


def parse_api_keys(text: str, name: str = "NAME") -> dict[str, str]:
    """``"key1=tenant-a,key2=tenant-b"`` → {key: name}; raises ValueError naming
    the bad entry (the key itself is never echoed) and what a pair holds (``name``: a
    webhooks tenant, another service's caller). A key given twice is refused: the later
    name would silently win. An entry is split at the last ``=`` of its first run of
    ``=``: a key may end in base64 padding (``openssl rand -base64 32``: split at the first
    ``=`` it became a shorter key that no caller sends) and a name may hold ``=`` (as
    before that; only a name starting with one cannot be written)."""
    keys: dict[str, str] = {}
    for n, entry in enumerate(e.strip() for e in text.split(",") if e.strip()):
        key, sep, tenant = _split(entry)
        if not sep or len(key.strip()) < MIN_KEY_LENGTH or not tenant.strip():
            raise ValueError(
                f"entry {n + 1}: expected KEY={name} with a key of {MIN_KEY_LENGTH}+ characters"
            )
        if key.strip() in keys:
            raise ValueError(f"entry {n + 1}: its key is given twice")
        keys[key.strip()] = tenant.strip()
    return keys


_FIRST_RUN_OF_EQUALS = re.compile(r"=+")


def _split(entry: str) -> tuple[str, str, str]:
    """KEY=NAME at the last ``=`` of the first run of them (see parse_api_keys)."""
    run = _FIRST_RUN_OF_EQUALS.search(entry)
    if run is None:
        return entry, "", ""
    return entry[: run.end() - 1], "=", entry[run.end() :]


def read_key_file(path: str, name: str = "NAME") -> str:
    """The file's pairs as one ``*_API_KEYS`` value; raises ValueError saying what is
    wrong (unreadable, a bad pair, no key; never a key itself)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    # A comment is a line starting with '#', or the rest of a line from a '#' after
    # white space (``KEY=billing  # prod``: else the caller were named "billing  # prod").
    lines = (_COMMENT.sub("", line).strip() for line in text.splitlines())
    pairs = ",".join(line for line in lines if line)
    if not parse_api_keys(pairs, name):
        raise ValueError(f"{path} holds no KEY={name} pair")
    return pairs
