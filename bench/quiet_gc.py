"""The measuring process's own garbage collector, kept out of a measurement.

The bench process holds every prebuilt request and every timestamp it takes; a full
collection of that heap paused it for 40-70 ms in (d), delaying the pacing client and
the watcher that timestamps records on Kafka alike, which read as Herald's latency.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def no_collector_pauses() -> Iterator[None]:
    """What exists now is frozen (never walked again) and the collector is off until
    the end of the block; what the block left as cyclic garbage is collected after it."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()
