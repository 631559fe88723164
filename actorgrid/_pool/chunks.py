"""The task every ``ag.Pool`` chunk runs in a worker process, and its per-process state.

Invariant: in each worker process, a pool's initializer has run before the first item of that
pool, and again after every ``maxtasksperchild`` chunks of that pool (the stand-in for a fresh
child process, see ``Pool``). ``_runs`` is keyed by the pool's id, so two pools sharing a
worker process each get their own initialization; the lock makes a second chunk of the same
pool wait for an initializer that is still running.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["APPLY", "MAP", "STARMAP", "run_chunk", "stream_chunk"]

MAP, STARMAP, APPLY = 0, 1, 2

# A streamed chunk's results of fast items go out together, every STREAM_BATCH_S; the result
# of an item that took SLOW_ITEM_S or more goes out at once (its message is cheap beside it).
STREAM_BATCH_S = 0.02
SLOW_ITEM_S = 0.001

_lock = threading.Lock()
_runs: dict[str, int] = {}  # pool id -> chunks this process ran since its initializer ran
_globals: dict[tuple[str, str], dict[str, Any]] = {}  # (pool id, module) -> shared globals


def _rebind(fn: types.FunctionType, shared: dict[str, Any]) -> types.FunctionType:
    new = types.FunctionType(fn.__code__, shared, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__dict__.update(fn.__dict__)
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    return new


def _shared(pool_id: str, fn: Any) -> Any:
    """``fn`` bound to the pool's globals for its module in this process (see above)."""
    if not isinstance(fn, types.FunctionType):
        return fn
    own = fn.__globals__
    module = sys.modules.get(fn.__module__)
    if module is not None and module.__dict__ is own:
        return fn
    shared = _globals.setdefault((pool_id, fn.__module__), own)
    if shared is own:
        return fn
    for name, value in own.items():
        if name not in shared:
            if isinstance(value, types.FunctionType) and value.__globals__ is own:
                value = _rebind(value, shared)
            shared[name] = value
    return _rebind(fn, shared)


def run_chunk(
    pool_id: str,
    init: tuple[Callable[..., object], tuple[Any, ...]] | None,
    maxtasks: int | None,
    fn: Callable[..., Any],
    mode: int,
    items: list[Any],
) -> list[Any]:
    fn = _prepare(pool_id, init, maxtasks, fn)
    if mode == MAP:
        return [fn(x) for x in items]
    if mode == STARMAP:
        return [fn(*x) for x in items]
    return [fn(*args, **kwargs) for args, kwargs in items]


def stream_chunk(
    pool_id: str,
    init: tuple[Callable[..., object], tuple[Any, ...]] | None,
    maxtasks: int | None,
    fn: Callable[..., Any],
    mode: int,
    items: list[Any],
) -> Iterator[Any]:
    """``run_chunk`` as a remote generator (``imap`` and ``imap_unordered`` with ``chunksize``
    > 1): yields lists of results. The first result goes out at once, and so does each
    result that took ``SLOW_ITEM_S`` or more; results of fast items go out together every
    ``STREAM_BATCH_S``, so a chunk of tiny items costs a few messages, not one per item (a
    fast result followed by a slow item waits for that item). Results made before an error
    go out before it."""
    fn = _prepare(pool_id, init, maxtasks, fn)
    batch: list[Any] = []
    sent_at = -math.inf
    for x in items:
        started = time.monotonic()
        try:
            batch.append(fn(x) if mode == MAP else fn(*x))
        except BaseException:
            if batch:
                yield batch
            raise
        now = time.monotonic()
        if now - started >= SLOW_ITEM_S or now - sent_at >= STREAM_BATCH_S:
            yield batch
            batch = []
            sent_at = now
    if batch:
        yield batch


def _prepare(
    pool_id: str,
    init: tuple[Callable[..., object], tuple[Any, ...]] | None,
    maxtasks: int | None,
    fn: Callable[..., Any],
) -> Callable[..., Any]:
    """``fn`` with the pool's globals, after the initializer if it is due (see above)."""
    with _lock:
        fn = _shared(pool_id, fn)
        if init is not None or maxtasks is not None:
            runs = _runs.get(pool_id)
            if runs is None or (maxtasks is not None and runs >= maxtasks):
                if init is not None:
                    _shared(pool_id, init[0])(*init[1])
                runs = 0
            _runs[pool_id] = runs + 1
    return fn
