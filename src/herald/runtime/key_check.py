"""A service's optional key check (``*_API_KEYS``), and API keys from a file
(``*_API_KEYS_FILE``) re-read while the service runs: a key added, changed or revoked
there takes effect within a poll (``API_KEYS_FILE_POLL_SECONDS``), with no restart.

The file holds what ``*_API_KEYS`` would (``KEY=NAME`` pairs), separated by commas or
line breaks; blank lines are skipped, and a ``#`` at a line's start or after white
space starts a comment (``key_pairs.read_key_file``). At start a file
that cannot be read, holds a bad pair or no key at all stops the process (the settings
check, naming the variable). Later, such a file is not applied: the keys in force stay
(logged ``api_keys.refused``, counted), so a file caught half written neither opens the
service nor locks every caller out; the next good version is applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import grpc
import structlog
from prometheus_client import Counter

from herald.runtime.auth import (
    EVERY_OTHER_CALLER,
    ApiKeys,
    BearerAuthInterceptor,
    ClientMethodsInterceptor,
    parse_key_methods,
)
from herald.runtime.key_pairs import parse_api_keys, read_key_file
from herald.runtime.off_loop import in_daemon_thread
from herald.runtime.refusals import Refusals
from herald.runtime.server import Worker
from herald.runtime.settings import API_KEYS_FILE_POLL_SECONDS

log = structlog.get_logger("herald.auth")

RELOADS = Counter(
    "api_keys_reloads",
    "Changes of an *_API_KEYS_FILE, by outcome: applied, or refused (the keys in force stay).",
    ["outcome"],
)


class KeyFile:
    """Polls a keys file and puts each good new version into ``keys``.

    ``check`` may refuse a version the service cannot take (its message, else None):
    webhooks' internal key given to a tenant, say.
    """

    def __init__(
        self,
        path: str,
        variable: str,
        keys: ApiKeys,
        current: dict[str, str],
        *,
        name: str = "NAME",
        check: Callable[[dict[str, str]], str | None] | None = None,
        poll_seconds: float = API_KEYS_FILE_POLL_SECONDS,
    ) -> None:
        self._path = path
        self._variable = variable
        self._keys = keys
        self._current = dict(current)
        self._name = name
        self._check = check
        self._poll = poll_seconds
        self._refusals = Refusals(
            RELOADS,
            log,
            "api_keys.refused",
            "the keys in force stay until the file is good again",
            variable=variable,
        )

    async def run(self) -> None:
        """Polls until cancelled."""
        while True:
            await asyncio.sleep(self._poll)
            # Off the event loop: a file on a slow or hung mount stalls no call (nor,
            # in a daemon thread, the exit).
            await in_daemon_thread(self.poll_once, "api-keys-file")

    def poll_once(self) -> None:
        """Reads the file once; applies it when it changed and is good."""
        try:
            pairs = read_key_file(self._path, self._name)
            keys = parse_api_keys(pairs, self._name)
            if (problem := self._check and self._check(keys)) is not None:
                raise ValueError(problem)
        except ValueError as exc:
            self._refusals.refused(str(exc))
            return
        self._refusals.cleared()
        if keys == self._current:
            return
        old, self._current = self._current, keys
        self._keys.replace(keys)
        RELOADS.labels("applied").inc()
        log.info(
            "api_keys.reloaded",
            variable=self._variable,
            keys=len(keys),
            # Names only: whose keys were added, revoked or moved (never a key).
            callers_changed=sorted(
                {n for k, n in keys.items() if old.get(k) != n}
                | {n for k, n in old.items() if keys.get(k) != n}
            ),
        )


@dataclass
class KeyCheck:
    """What a service with optional keys installs: the key check (none without keys)
    and the worker re-reading its keys file (none without one)."""

    interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)


def new_callers_limited(
    start: Collection[str], limits: Mapping[str, Collection[str]]
) -> Callable[[dict[str, str]], str | None]:
    """A check for a new version of a keys file, whose callers at start were ``start``
    and whose limits (by setting: the callers each names) are ``limits``: a caller
    that is new and that a limit neither names nor covers by ``*`` would be unlimited
    there. The start refuses a limit naming a caller no key has, so a misspelt name
    cannot slip in unlimited; in a running service the keys change alone, and a
    misspelt name (``bililng`` for ``billing``) would: refused. A caller losing its
    keys (revoked) is always taken."""

    def check(keys: dict[str, str]) -> str | None:
        new = set(keys.values()) - set(start)
        for variable, named in limits.items():
            if not named or EVERY_OTHER_CALLER in named:
                continue
            if unnamed := sorted(new - set(named)):
                return (
                    f"new caller {', '.join(map(repr, unnamed))} would not be limited by "
                    f"{variable} (it names {', '.join(sorted(named))}): a misspelt name? "
                    "Name it there (a restart) or give it a '*' entry"
                )
        return None

    return check


def optional_key_check(
    api_keys: str,
    key_methods: str = "",
    methods_variable: str = "",
    methods: Collection[str] = (),
    *,
    key_file: str = "",
    file_variable: str = "",
    poll_seconds: float = API_KEYS_FILE_POLL_SECONDS,
    other_limits: Mapping[str, Collection[str]] | None = None,
    client_names: Collection[str] = (),
) -> KeyCheck:
    """The key check of a service with ``methods`` whose ``*_API_KEYS`` setting is
    ``api_keys`` (read from ``key_file``, the setting ``file_variable``, when that is
    given: the settings check has put its pairs into ``api_keys``) and whose
    ``*_API_KEY_METHODS`` (named ``methods_variable``) is ``key_methods``; the service's
    other limits (``other_limits``: the callers each names) guard the file's new
    versions too (:func:`new_callers_limited`). No check when there are no keys (the
    service answers anyone, at no cost per call), unless ``*_API_KEY_METHODS`` limits
    client certificate identities (``client_names``: GRPC_TLS_CLIENT_NAMES)."""
    keys = parse_api_keys(api_keys)
    if not keys:
        by_name = parse_key_methods(key_methods, set(client_names), methods)
        if not by_name:
            return KeyCheck()
        return KeyCheck([ClientMethodsInterceptor(by_name, methods_variable)])
    allowed = parse_key_methods(key_methods, set(keys.values()), methods, keys)
    known = ApiKeys(keys)
    check = KeyCheck([BearerAuthInterceptor(known, allowed=allowed, allowed_by=methods_variable)])
    if key_file:
        limits = {methods_variable: list(allowed), **(other_limits or {})}
        watcher = KeyFile(
            key_file,
            file_variable,
            known,
            keys,
            check=new_callers_limited(set(keys.values()), limits),
            poll_seconds=poll_seconds,
        )
        check.workers.append(watcher.run)
    return check
