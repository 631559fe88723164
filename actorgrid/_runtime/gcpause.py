"""Short full collections in a process that holds many long-lived objects.

Python's cyclic garbage collector stops the process while it works, and a full (generation 2)
collection walks every object that is not frozen. A worker hosting 100,000 agents holds
millions: ``Starter`` freezes what the agents are made of as they start (``starting.py``), but
what they gather afterwards (the names they have looked up, their state, the letters waiting
in their mailboxes) is walked again by every full collection: 0.2-0.5 s of CPU with the loop
stopped, several seconds of wall clock on a machine whose cores are shared with other busy
processes, and the worker's pulses late enough to be taken for a zombie (seen at 100,000 agents
with two CPU hogs beside them, ``test_agents_100k_wealth.py``).

``install()`` adds a collector callback: after a full collection that took more than
``SLOW_FULL_COLLECTION_S`` of this thread's CPU, the survivors are moved to the permanent
generation (``gc.freeze``), so the next full collection walks only what came since. Frozen
objects are still freed by reference counting as ever; what is put off is the collection of a
reference cycle among them that becomes garbage later (the runtime breaks its own agents'
cycles when they end: ``Context._close``). Put off, not given up: ``THAW_AFTER_S`` after it
began freezing, the process thaws everything (``gc.unfreeze``), so its next full collection
walks it all once and frees such cycles (a long-running worker does not leak them), and then,
if that collection was slow again, freezes its survivors anew. A process whose full
collections are short (a few thousand objects) never freezes anything.

The runtime's other freezes (``Starter`` every FREEZE_AFTER agents started, a worker's agent
host likewise, a driver every FREEZE_AFTER names claimed) call :func:`freeze` here, so they
come under the same thaw: this is the one place that calls ``gc.freeze`` (a test checks it).
Such a freeze begins a round of freezing as a slow collection does, but does not by itself
freeze the survivors of later middle collections: only a slow full collection makes a process
do that.

Cost: one callback call per collection (a comparison for the young generations).
"""

from __future__ import annotations

import gc
import time
from typing import Any

__all__ = [
    "SLOW_FULL_COLLECTION_S",
    "THAW_AFTER_S",
    "freeze",
    "full_collections_frozen",
    "install",
]

# A full collection that took longer than this (CPU of the collecting thread) freezes its
# survivors: 20 ms is ~100,000 objects walked, and a fraction of a pulse interval.
SLOW_FULL_COLLECTION_S = 0.02
# How long a process keeps freezing before it thaws all once: the longest a garbage cycle among
# frozen objects waits to be freed, for one slow full collection each time.
THAW_AFTER_S = 600.0

_started = [0.0]
_frozen = [0]
_freezing_since: list[float | None] = [None]  # monotonic time this round of freezing began
_slow = [False]  # this round had a slow full collection: middle survivors are frozen too


def _after_collection(phase: str, info: dict[str, Any]) -> None:
    generation = info["generation"]
    if generation == 0:
        return
    if phase == "start":
        _started[0] = time.thread_time()
    elif generation == 2 and time.thread_time() - _started[0] > SLOW_FULL_COLLECTION_S:
        _frozen[0] += 1
        _slow[0] = True
        _freeze_now()
    elif (since := _freezing_since[0]) is not None:
        if time.monotonic() - since > THAW_AFTER_S:
            # Thaw: the next full collection walks everything once and frees the cycles
            # that died while frozen; if it is slow, it starts a new round of freezing.
            gc.unfreeze()
            _freezing_since[0] = None
            _slow[0] = False
        elif _slow[0]:
            # A process that had a slow full collection: what survives a middle collection
            # is frozen too, so none accumulates for the next full one to walk all at once.
            gc.freeze()


def _freeze_now() -> None:
    gc.freeze()
    if _freezing_since[0] is None:
        _freezing_since[0] = time.monotonic()


def freeze() -> None:
    """Move what exists now to the permanent generation, to be thawed ``THAW_AFTER_S`` after
    this round of freezing began (so a cycle that dies among these objects is freed then).
    For a burst of long-lived objects just made: agents started, names claimed."""
    install()
    _freeze_now()


def install() -> None:
    """Freeze the survivors of slow full collections in this process from now on (once)."""
    if _after_collection not in gc.callbacks:
        gc.callbacks.append(_after_collection)


def full_collections_frozen() -> int:
    """How many slow full collections this process has frozen the survivors of."""
    return _frozen[0]
