"""Lending a blocked task's CPUs: what a pool thread running a sync task holds, and the section
around a blocking wait in user code that lends it back. Also where a thread's burst of calls
starts (``new_burst``/``burst_started``): its first call may skip the loop.

TaskQueue (``lanes.py``) sets ``local.hold`` around each task it runs; ``ag.get`` and
``ag.wait`` (``objects.py``) wrap their waits in ``blocking_section``. It sits low in
``_runtime`` so that both can reach it without importing each other.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

__all__ = ["Lender", "blocking_section", "burst_started", "local", "new_burst"]


class Lender(Protocol):
    """The queue whose CPUs a running task holds (TaskQueue)."""

    def lend(self, amount: float) -> None: ...

    def take_back(self, amount: float) -> None: ...


# On a pool thread running a sync task: ``hold`` is (its queue, the CPUs it holds), else None.
local = threading.local()


@contextmanager
def blocking_section() -> Iterator[None]:
    """Around a blocking wait in user code: lend this task's CPUs to others meanwhile.

    Without it, a task on a one-CPU worker that waits for a task queued behind it on the same
    worker would wait forever.
    """
    hold: tuple[Lender, float] | None = getattr(local, "hold", None)
    if hold is None or hold[1] == 0:
        yield
        return
    queue, amount = hold
    queue.lend(amount)
    try:
        yield
    finally:
        queue.take_back(amount)


def new_burst() -> None:
    """This thread starts anew: a pool thread takes its next call or task, or a blocking
    ``ag.get``/``ag.wait`` returned. Its next call starts a burst of its own."""
    local.burst = True


def burst_started() -> bool:
    """Any thread: True for the first call this thread makes after ``new_burst``, once.

    Such a call may be written straight to its link from this thread even while earlier
    calls on that link await their answers (fire-and-forget calls from actors leave many so):
    the calls after it, made back to back, go through the loop, which batches them.
    """
    if getattr(local, "burst", False):
        local.burst = False
        return True
    return False
