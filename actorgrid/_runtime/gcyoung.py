"""Fewer young collections in a process that runs many calls at once.

Every call in flight holds a handful of objects the cyclic collector tracks (its entry and
ref, its in-flight record, the message that carries it; a worker's work item and answer), and
makes more that die young. At CPython's default young threshold (a collection every 700 such
allocations) a driver sending 20,000 pipelined calls runs ~250 young collections, ~20 middle
ones and 2 full ones, each of the latter walking every call still in flight: measured 4.5 µs
of driver CPU per pipelined actor call and 9 µs per no-op task, a fifth of all it spends.

While a runtime runs in a process (``ag.init``/``ag.connect`` in a driver; a worker for its
whole life) the young threshold is YOUNG_COLLECTION_OBJECTS: a burst's short-lived objects are
mostly freed by reference counting before any collection sees them, and middle and full
collections, which follow from the young ones, come ~30 times less often. Cost: garbage
*cycles* wait for up to that many allocations instead of 700 before they are freed (a few MB
at most). A threshold set higher already, or a collector turned off, is left as it is; a driver
gets its own threshold back when the runtime ends (unless it changed it meanwhile).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["YOUNG_COLLECTION_OBJECTS", "raise_young_threshold", "young_threshold_raised"]

YOUNG_COLLECTION_OBJECTS = 20_000


def raise_young_threshold() -> tuple[int, ...] | None:
    """Raise this process's young threshold to YOUNG_COLLECTION_OBJECTS; the thresholds it
    had, or None if it was left as it is (higher already, or the collector is off)."""
    before = gc.get_threshold()
    if not gc.isenabled() or before[0] == 0 or before[0] >= YOUNG_COLLECTION_OBJECTS:
        return None
    gc.set_threshold(YOUNG_COLLECTION_OBJECTS, *before[1:])
    return before


@contextmanager
def young_threshold_raised() -> Iterator[None]:
    """Around a runtime's life in a driver: raised inside, the process's own after."""
    before = raise_young_threshold()
    try:
        yield
    finally:
        if before is not None and gc.get_threshold()[0] == YOUNG_COLLECTION_OBJECTS:
            gc.set_threshold(*before)
