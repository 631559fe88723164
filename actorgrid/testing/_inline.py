"""Deterministic stand-ins for a process's threads and process-wide state, for simulations.

``InlinePool`` runs blocking user code on the loop itself: on a thread, the virtual clock would
jump while it computes, and its result would come back at a moment no seed decides.
``deterministic`` seeds what a run would otherwise draw at random or by address: Trio's
scheduling order (the mode its own test suite uses under Hypothesis: each batch of runnable
tasks is sorted by spawn order, then shuffled by a seeded generator) and the id space.

It also makes the cyclic garbage collector run less often (SIM_GC_THRESHOLDS): a whole
cluster in one process allocates for all its processes, and with the default thresholds a
simulated day of 10,000 agents spent a quarter of its time collecting (36.7 s of CPU, 29.6 s
with these; the trace is the same). Reference counting still frees nearly everything at once;
what waits for a collection is cycles, and the run leaves few (a collection after that day
found 46 objects).
"""

from __future__ import annotations

import contextvars
import gc
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from .._protocol import ids
from .._runtime.portal import Portal

__all__ = ["InlinePool", "deterministic"]

_FLAG = "_ALLOW_DETERMINISTIC_SCHEDULING"  # trio's switch for its own Hypothesis tests
# gc.set_threshold during a simulation: a young generation of 50,000 objects (default 700),
# older ones collected every 20 and 100 collections of the one below (default 10 and 10).
SIM_GC_THRESHOLDS = (50_000, 20, 100)


class InlinePool:
    """A pool with no threads: ``run`` calls the function in the calling task; ``start`` runs
    it on the loop soon, in the order started, in the starting task's context (its runtime)."""

    def __init__(self, portal: Portal) -> None:
        self._portal = portal

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return fn(*args)

    def start(self, fn: Callable[..., Any], *args: Any) -> None:
        context = contextvars.copy_context()
        self._portal.call_soon(context.run, fn, *args)

    def close(self) -> None:
        pass


@contextmanager
def deterministic(seed: int) -> Iterator[random.Random]:
    """Around one ``trio.run``: seeded scheduling and ids; yields the run's generator, from
    which every other random choice of the simulation is drawn."""
    from trio._core import _run as trio_run  # the scheduler's seed: there is no public one

    rng = random.Random(seed)
    internals = vars(trio_run)
    saved_flag = internals[_FLAG]
    scheduler: random.Random = internals["_r"]
    saved_state = scheduler.getstate()
    saved_ids = ids.seed(rng.randbytes(8))
    internals[_FLAG] = True
    scheduler.seed(rng.getrandbits(64))
    gc.collect()  # garbage of an earlier run must not be freed (and counted) during this one
    saved_thresholds = gc.get_threshold()
    gc.set_threshold(*map(max, saved_thresholds, SIM_GC_THRESHOLDS))
    try:
        yield rng
    finally:
        gc.set_threshold(*saved_thresholds)
        internals[_FLAG] = saved_flag
        scheduler.setstate(saved_state)
        ids.restore(saved_ids)
