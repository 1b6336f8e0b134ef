"""The retry schedule of a failing target. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DELAY_SECONDS = 365 * 86400  # a year; more is surely a mistake (and 1e400s is inf)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Delays (seconds) before retry 1, 2, …; after the last, the event is dead."""

    delays: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """``"5m,30m,2h,6h,24h"`` (units s, m, h, d; a bare number is seconds); each
        delay from 0 to 365 days."""
        delays = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            unit = _UNITS.get(part[-1])
            number = part[:-1] if unit else part
            try:
                value = float(number) * (unit or 1)
            except ValueError:
                raise ValueError(f"{part!r}: expected a number with s, m, h or d") from None
            if not math.isfinite(value):
                raise ValueError(f"{part!r}: expected a finite number")
            if value < 0:
                raise ValueError(f"{part!r}: a delay cannot be negative")
            if value > MAX_DELAY_SECONDS:
                raise ValueError(f"{part!r}: a delay is at most 365 days")
            delays.append(value)
        if not delays:
            raise ValueError("at least one delay")
        return cls(tuple(delays))

    def delay_after(self, tries: int) -> float:
        """Seconds to wait after ``tries`` failed tries."""
        return self.delays[min(tries, len(self.delays)) - 1]

    def exhausted(self, tries: int) -> bool:
        """True when ``tries`` failed tries used up every retry."""
        return tries > len(self.delays)
