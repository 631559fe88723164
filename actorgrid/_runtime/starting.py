"""Starting agents by the thousand without starving the loop.

Trio runs every task made runnable during one turn of its loop in the next turn. A worker
told to create 100,000 coroutine agents at once would start them all in one turn: seconds of
argument loading and first steps with nothing else run, its pulses late, and the worker
killed as a zombie. ``Starter`` starts at most ``START_BATCH`` tasks per loop turn, in the
order asked, so pulses, replies and the agents already running get a turn between batches.

Long-lived agents also make Python's cyclic garbage collector slow: a full collection walks
every object in the process, about a second per 10,000 agents on a loaded 2-core machine, with
the loop stopped. Every FREEZE_AFTER starts, ``Starter`` moves what exists into the
collector's permanent generation (``gc.freeze``): the agents' objects are still freed by
reference counting when they end, but later collections walk only what came since. (A cycle
among frozen objects would outlive its agent until the process thaws, ``gcpause.freeze``; the
runtime breaks its own, see ``Context._close``.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from . import gcpause

__all__ = ["FREEZE_AFTER", "START_BATCH", "Starter"]

# New agents started per loop turn: each costs ~0.1-0.4 ms to start on a 2-core machine, so a
# turn stays within ~25 ms of CPU: far inside the zombie window (5 pulses), and a handshake
# (a few turns) ends well inside the dial timeout even where other processes take 5/6 of
# the CPU (256 a turn did not: dials timed out during creation bursts).
START_BATCH = 64
# Every this many starts, gcpause.freeze() (see the module docstring).
FREEZE_AFTER = 1000


class Starter:
    """Starts tasks in a nursery, at most START_BATCH per loop turn, in the order asked."""

    __slots__ = ("_draining", "_queue", "_unfrozen")

    def __init__(self) -> None:
        self._queue: deque[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]] = deque()
        self._draining = False
        self._unfrozen = 0  # tasks started since the last freeze

    def __len__(self) -> int:
        return len(self._queue)

    def start_soon(
        self, nursery: trio.Nursery, fn: Callable[..., Awaitable[Any]], *args: Any
    ) -> None:
        self._queue.append((fn, args))
        if not self._draining:
            self._draining = True
            nursery.start_soon(self._drain, nursery)

    async def _drain(self, nursery: trio.Nursery) -> None:
        queue = self._queue
        try:
            while queue:
                n = min(START_BATCH, len(queue))
                for _ in range(n):
                    fn, args = queue.popleft()
                    # The function's own qualname as the task's name: Trio would build a new
                    # "module.qualname" string per task (~100 bytes an idle agent).
                    nursery.start_soon(fn, *args, name=getattr(fn, "__qualname__", None))
                await trio.lowlevel.checkpoint()  # those just started run before the next batch
                self._unfrozen += n
                if self._unfrozen >= FREEZE_AFTER:  # they have run their first steps
                    self._unfrozen = 0
                    gcpause.freeze()
        finally:
            self._draining = False
