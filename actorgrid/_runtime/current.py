"""The runtime of this process, if any: one slot, read by the modules that users' objects call
into (refs, handles) and set by ``core.set_current_runtime``.

It sits at the bottom of ``_runtime`` so that an ``ObjectRef`` or an ``ActorHandle`` can reach
the runtime without importing ``core`` (which imports them). The slot holds a plain object;
each reader states what it needs of it as a Protocol next to itself, and ``core.py`` checks
(under mypy) that ``Runtime`` is all of those.

A deterministic simulation (``actorgrid.testing``) hosts many runtimes in one process, one per
simulated driver and worker: each sets its own in the context of its tasks (``set_for_task``),
which the tasks it starts inherit. The process-wide slot wins, so a real process pays nothing.
"""

from __future__ import annotations

import contextvars

from .._exceptions import NotInitializedError

_current: object | None = None
_task_current: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "actorgrid_runtime", default=None
)


def get() -> object:
    """The current runtime; raises NotInitializedError when there is none."""
    rt = _current
    if rt is None:
        rt = _task_current.get()
    if rt is None:
        raise NotInitializedError(
            "actorgrid is not initialized in this process: call ag.init() (or use "
            "`async with ag.connect()` in Trio code) before using remote functions and actors"
        )
    return rt


def get_or_none() -> object | None:
    return _current if _current is not None else _task_current.get()


def set_for_task(rt: object | None) -> None:
    """The runtime of this Trio task and of the tasks it starts from now on (a simulation)."""
    _task_current.set(rt)


def set_current(rt: object | None) -> None:
    global _current
    if rt is not None and _current is not None and _current is not rt:
        raise RuntimeError(
            "actorgrid is already initialized in this process; call ag.shutdown() first"
        )
    _current = rt
