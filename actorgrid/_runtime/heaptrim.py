"""Giving back to the system the heap memory a burst freed (glibc's ``malloc_trim``).

A worker whose 100,000 agents all wake in one round (a broadcast, a rumour) makes and frees
millions of short-lived objects (messages, frames, name lookups) among the long-lived ones
the round leaves (the names it cached). What glibc's malloc freed in the middle of its heap
stays in the process's RSS: glibc gives memory back by itself only from the top of the heap.
``malloc_trim(0)`` walks the heap and returns every free page to the system (``madvise``),
whatever lies around it: at 100,000 agents, 20-30 MB of each worker's RSS after a round.

``trim_heap`` calls it. It runs in a thread (ctypes lets the GIL go around the call, so the
loop keeps running), at most once per burst (``agentpools.py`` says when). Elsewhere than on
glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

__all__ = ["trim_heap"]


def _load() -> Callable[[int], int] | None:
    try:  # the symbols this process has loaded: the C library's among them
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc: no malloc_trim
        return None
    return trim


_malloc_trim = _load()


def trim_heap() -> bool:
    """Return the heap's free pages to the system; False where there is no malloc_trim."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
