"""The runtime of this process, if any: one slot, read by the modules that users' objects call
into (refs, handles) and set by ``core.set_current_runtime``.

It sits at the bottom of ``_runtime`` so that an ``ObjectRef`` or an ``ActorHandle`` can reach
the runtime without importing ``core`` (which imports them). The slot holds a plain object;
each reader states what it needs of it as a Protocol next to itself, and ``core.py`` checks
(under mypy) that ``Runtime`` is all of those.
"""

from __future__ import annotations

from .._exceptions import NotInitializedError

_current: object | None = None


def get() -> object:
    """The current runtime; raises NotInitializedError when there is none."""
    rt = _current
    if rt is None:
        raise NotInitializedError(
            "actorgrid is not initialized in this process: call ag.init() (or use "
            "`async with ag.connect()` in Trio code) before using remote functions and actors"
        )
    return rt


def get_or_none() -> object | None:
    return _current


def set_current(rt: object | None) -> None:
    global _current
    if rt is not None and _current is not None and _current is not rt:
        raise RuntimeError(
            "actorgrid is already initialized in this process; call ag.shutdown() first"
        )
    _current = rt
