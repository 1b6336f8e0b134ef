"""What a caller may publish: which event types (``INGEST_API_KEY_EVENT_TYPES``),
from which sources (``INGEST_API_KEY_SOURCES``) and under which ``application-id``
(``INGEST_API_KEY_APPLICATION_IDS``). Pure.

A caller named there (by its ``INGEST_API_KEYS`` key's name) may publish only the types
its type patterns select (``message.*``, ``user_registered``, ``*``: as a webhook's
subscription patterns), only with a ``source`` its source patterns select (a source
exactly, or ``prefix*``: every source starting with the prefix), and only under an
``application-id`` its id patterns select (alike: the record's, which is the call's
metadata, else the event's source); any other event is refused with
``PERMISSION_DENIED``. A caller not named is limited by the ``*`` entry
when there is one, else not at all; a call without a key (ingest without keys) never.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from herald.runtime.auth import limits_of, parse_caller_lists
from herald.runtime.type_patterns import PATTERN, matches

TYPES_VARIABLE = "INGEST_API_KEY_EVENT_TYPES"
SOURCES_VARIABLE = "INGEST_API_KEY_SOURCES"
APPLICATION_IDS_VARIABLE = "INGEST_API_KEY_APPLICATION_IDS"
ANY_SUFFIX = "*"


def parse_type_limits(
    text: str, callers: Collection[str], keys: Collection[str] = ()
) -> dict[str, tuple[str, ...]]:
    """``"billing=billing.*|user_registered,…"`` → {caller: its patterns}; raises
    ValueError naming the bad entry (see ``parse_caller_lists``; ``keys``: the API keys,
    never echoed)."""
    return parse_caller_lists(text, callers, "NAME=type|prefix.*|…", _type_problem, keys)


def parse_source_limits(
    text: str, callers: Collection[str], keys: Collection[str] = ()
) -> dict[str, tuple[str, ...]]:
    """``"billing=/billing/*|urn:billing,…"`` → {caller: its source patterns}; raises
    ValueError as :func:`parse_type_limits`."""
    return parse_caller_lists(text, callers, "NAME=source|prefix*|…", _source_problem, keys)


def parse_application_id_limits(
    text: str, callers: Collection[str], keys: Collection[str] = ()
) -> dict[str, tuple[str, ...]]:
    """``"billing=billing|billing-*,…"`` → {caller: its application-id patterns};
    raises ValueError as :func:`parse_type_limits`."""
    return parse_caller_lists(text, callers, "NAME=id|prefix*|…", _id_problem, keys)


def _type_problem(pattern: str) -> str | None:
    if PATTERN.fullmatch(pattern):
        return None
    return f"{pattern!r} is not an event type, 'prefix.*' or '*'"


def _source_problem(pattern: str) -> str | None:
    if any(c.isspace() for c in pattern):
        return f"{pattern!r} holds white space: not a source (a URI-reference)"
    return _star_problem(pattern, "a source pattern")


def _id_problem(pattern: str) -> str | None:
    if any(c.isspace() for c in pattern):
        return f"{pattern!r} holds white space: not an application id"
    return _star_problem(pattern, "an application-id pattern")


def _star_problem(pattern: str, what: str) -> str | None:
    if ANY_SUFFIX in pattern[:-1]:
        return f"{pattern!r}: '*' may only end {what} ('prefix*')"
    return None


def source_matches(pattern: str, source: str) -> bool:
    """Whether a source (or application-id) pattern selects ``source``: exactly, or
    ``prefix*`` by its start (``*``: every one)."""
    if pattern.endswith(ANY_SUFFIX):
        return source.startswith(pattern[:-1])
    return pattern == source


class PublishLimits:
    """The event types, sources and application ids each limited caller may publish."""

    def __init__(
        self,
        types: Mapping[str, tuple[str, ...]] | None = None,
        sources: Mapping[str, tuple[str, ...]] | None = None,
        application_ids: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self._types = dict(types or {})
        self._sources = dict(sources or {})
        self._application_ids = dict(application_ids or {})

    def unmatched(self, types: Iterable[str]) -> dict[str, list[str]]:
        """The type patterns (by caller) that select none of ``types``: a misspelt type
        (``user_registred``), or one not registered yet."""
        known = list(types)
        found = {
            caller: [p for p in patterns if not any(matches(p, t) for t in known)]
            for caller, patterns in self._types.items()
        }
        return {caller: patterns for caller, patterns in found.items() if patterns}

    def refusal(
        self,
        caller: str | Sequence[str],
        event_type: str,
        source: str,
        application_id: str = "",
    ) -> str | None:
        """Why ``caller`` (an API key's name, or a client certificate's identities: the
        limits of each it names hold) may not publish an event of ``event_type`` from
        ``source`` under ``application_id`` (the one its record would carry); None if it
        may. An empty type, source or id is not judged here (validation refuses it)."""
        names = (caller,) if isinstance(caller, str) else tuple(caller)
        if not any(names) or not (self._types or self._sources or self._application_ids):
            return None  # nobody limited: the usual
        for name, types in limits_of(self._types, names):
            if event_type and not any(matches(p, event_type) for p in types):
                return (
                    f"caller {name!r} may not publish events of type {event_type!r} "
                    f"({TYPES_VARIABLE} lets it publish {', '.join(types)})"
                )
        for name, sources in limits_of(self._sources, names):
            if source and not any(source_matches(p, source) for p in sources):
                return (
                    f"caller {name!r} may not publish events from source {source!r} "
                    f"({SOURCES_VARIABLE} lets it publish from {', '.join(sources)})"
                )
        for name, ids in limits_of(self._application_ids, names):
            if application_id and not any(source_matches(p, application_id) for p in ids):
                return (
                    f"caller {name!r} may not publish as application-id {application_id!r} "
                    f"({APPLICATION_IDS_VARIABLE} lets it publish as {', '.join(ids)})"
                )
        return None
