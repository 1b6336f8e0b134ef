"""Which event types a caller may publish (``INGEST_API_KEY_EVENT_TYPES``). Pure.

A caller named there (by its ``INGEST_API_KEYS`` key's name) may publish only the types
its patterns select (``message.*``, ``user_registered``, ``*``: as a webhook's
subscription patterns); any other event is refused with ``PERMISSION_DENIED``. A caller
not named, or a call without a key (ingest without keys), may publish every type.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from herald.runtime.auth import parse_caller_lists
from herald.runtime.type_patterns import PATTERN, matches

VARIABLE = "INGEST_API_KEY_EVENT_TYPES"


def parse_type_limits(
    text: str, callers: Collection[str], keys: Collection[str] = ()
) -> dict[str, tuple[str, ...]]:
    """``"billing=billing.*|user_registered,…"`` → {caller: its patterns}; raises
    ValueError naming the bad entry (see ``parse_caller_lists``; ``keys``: the API keys,
    never echoed)."""
    return parse_caller_lists(text, callers, "NAME=type|prefix.*|…", _problem, keys)


def _problem(pattern: str) -> str | None:
    if PATTERN.fullmatch(pattern):
        return None
    return f"{pattern!r} is not an event type, 'prefix.*' or '*'"


class TypeLimits:
    """The event types each limited caller may publish."""

    def __init__(self, limits: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self._limits = dict(limits or {})

    def unmatched(self, types: Iterable[str]) -> dict[str, list[str]]:
        """The patterns (by caller) that select none of ``types``: a misspelt type
        (``user_registred``), or one not registered yet."""
        known = list(types)
        found = {
            caller: [p for p in patterns if not any(matches(p, t) for t in known)]
            for caller, patterns in self._limits.items()
        }
        return {caller: patterns for caller, patterns in found.items() if patterns}

    def refusal(self, caller: str, event_type: str) -> str | None:
        """Why ``caller`` may not publish an event of ``event_type``; None if it may."""
        patterns = self._limits.get(caller)
        if patterns is None or any(matches(p, event_type) for p in patterns):
            return None
        return (
            f"caller {caller!r} may not publish events of type {event_type!r} "
            f"({VARIABLE} lets it publish {', '.join(patterns)})"
        )
