"""What a service that re-reads files (its API keys, its port's certificate) says of a
changed version it cannot take: once per problem, not at every poll, and counted."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter


class Refusals:
    """Logs ``event`` (an error) and counts ``counter{outcome="refused"}`` when a
    version is refused for a problem other than the last one."""

    def __init__(self, counter: Counter, log: Any, event: str, detail: str, **fields: str) -> None:
        self._counter = counter
        self._log = log
        self._event = event
        self._fields = {**fields, "detail": detail}
        self._last: str | None = None

    def refused(self, problem: str) -> None:
        if problem != self._last:
            self._last = problem
            self._counter.labels("refused").inc()
            self._log.error(self._event, error=problem, **self._fields)

    def cleared(self) -> None:
        """The files are good again: the next problem is news."""
        self._last = None
