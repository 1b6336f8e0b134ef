"""Event-type patterns of webhook subscriptions: one definition for the webhooks
service (validating and matching) and dispatch (its index of subscriptions). Pure.

``*`` matches every type, ``message.*`` every type under ``message.`` (at any depth),
anything else exactly that type.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Hashable
from typing import Generic, TypeVar

EVERY_TYPE = "*"
SUBTREE = ".*"
PATTERN = re.compile(r"\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?")  # what a pattern may be

V = TypeVar("V", bound=Hashable)


def matches(pattern: str, event_type: str) -> bool:
    """Whether ``pattern`` selects ``event_type``."""
    if pattern == EVERY_TYPE:
        return True
    if pattern.endswith(SUBTREE):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


class PatternIndex(Generic[V]):
    """Values (webhook ids) by pattern, answering "which want this type" in one
    dictionary lookup plus the wildcard patterns, with the same answers as
    :func:`matches`."""

    def __init__(self) -> None:
        self._exact: defaultdict[str, list[V]] = defaultdict(list)
        self._prefixes: list[tuple[str, V]] = []
        self._everything: list[V] = []

    def add(self, pattern: str, value: V) -> None:
        if pattern == EVERY_TYPE:
            self._everything.append(value)
        elif pattern.endswith(SUBTREE):
            self._prefixes.append((pattern[:-1], value))
        else:
            self._exact[pattern].append(value)

    def match(self, event_type: str) -> list[V]:
        """The values whose pattern selects ``event_type``, each once, in the order
        every-type, exact, subtree."""
        found = self._everything + self._exact.get(event_type, [])
        found += [value for prefix, value in self._prefixes if event_type.startswith(prefix)]
        return list(dict.fromkeys(found))
