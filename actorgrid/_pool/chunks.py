"""The task every ``ag.Pool`` chunk runs in a worker process, and its per-process state.

Invariant: in each worker process, a pool's initializer has run before the first item of that
pool, and again after every ``maxtasksperchild`` chunks of that pool (the stand-in for a fresh
child process, see ``Pool``). ``_runs`` is keyed by the pool's id, so two pools sharing a
worker process each get their own initialization; the lock makes a second chunk of the same
pool wait for an initializer that is still running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["APPLY", "MAP", "STARMAP", "run_chunk"]

MAP, STARMAP, APPLY = 0, 1, 2

_lock = threading.Lock()
_runs: dict[str, int] = {}  # pool id -> chunks this process ran since its initializer ran


def run_chunk(
    pool_id: str,
    init: tuple[Callable[..., object], tuple[Any, ...]] | None,
    maxtasks: int | None,
    fn: Callable[..., Any],
    mode: int,
    items: list[Any],
) -> list[Any]:
    if init is not None or maxtasks is not None:
        with _lock:
            runs = _runs.get(pool_id)
            if runs is None or (maxtasks is not None and runs >= maxtasks):
                if init is not None:
                    init[0](*init[1])
                runs = 0
            _runs[pool_id] = runs + 1
    if mode == MAP:
        return [fn(x) for x in items]
    if mode == STARMAP:
        return [fn(*x) for x in items]
    return [fn(*args, **kwargs) for args, kwargs in items]
