"""The head's record of which processes were told where a named actor lives (they may hold it
in a name cache, and are told when it ends), by actor and by process.

Costs: ``cache``, ``forget`` and the share of ``gone`` per id are O(1) amortised; nothing
walks every name. Memory is what a simulation's names cost at the head after one round of
by-name messages (every worker looks up the names its agents send to): a name cached by one
process keeps that process itself, by up to ``_TUPLE_MAX`` a tuple (56-72 bytes, where a set
of two was 216), by more a set; the ids of a process are a ``Groups`` list (8 bytes an id,
where a set per process cost ~50). Before, a round at 10,000 names cost the head 238 bytes a
name; now 66 (traced).

Pure: no clock, no I/O. ``C`` is a process (the head's ``Peer``), compared by identity.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from .groups import Groups

__all__ = ["NameCachers"]

C = TypeVar("C", bound=Hashable)
I = TypeVar("I", bound=Hashable)  # noqa: E741

# Up to this many cachers of one name are kept as a tuple (copied on each add: O(this));
# more, as a set.
_TUPLE_MAX = 4


class NameCachers(Generic[C, I]):
    """``id -> the processes that cached it`` and ``process -> its ids``."""

    __slots__ = ("_by_cacher", "_of")

    def __init__(self) -> None:
        self._of: dict[I, C | tuple[C, ...] | set[C]] = {}
        self._by_cacher: Groups[C, I] = Groups(self.cached_by)

    def __len__(self) -> int:
        return len(self._of)

    def __repr__(self) -> str:
        return f"<NameCachers names={len(self._of)} cachers={len(self._by_cacher)}>"

    def cached_by(self, item: I, cacher: C) -> bool:
        held = self._of.get(item)
        if held is None:
            return False
        if isinstance(held, (tuple, set)):
            return cacher in held
        return held is cacher

    def cache(self, cacher: C, item: I) -> None:
        """``cacher`` was told where ``item`` lives (again: nothing changes)."""
        held = self._of.get(item)
        if held is None:
            self._of[item] = cacher
        elif isinstance(held, tuple):
            if cacher in held:
                return
            self._of[item] = (*held, cacher) if len(held) < _TUPLE_MAX else {*held, cacher}
        elif isinstance(held, set):
            if cacher in held:
                return
            held.add(cacher)
        elif held is cacher:
            return
        else:
            self._of[item] = (held, cacher)
        self._by_cacher.add(cacher, item)

    def forget(self, item: I) -> set[C]:
        """The processes that cached ``item``, no longer recorded."""
        held = self._of.pop(item, None)
        if held is None:
            return set()
        cachers = set(held) if isinstance(held, (tuple, set)) else {held}
        remove = self._by_cacher.remove
        for cacher in cachers:
            remove(cacher, item)
        return cachers

    def gone(self, cacher: C) -> None:
        """``cacher`` left: it is no longer a cacher of anything (O(its ids))."""
        of = self._of
        for item in self._by_cacher.pop(cacher):
            held = of[item]  # (pop hands back only ids it still caches)
            if isinstance(held, set):
                held.discard(cacher)
                if not held:
                    del of[item]
            elif isinstance(held, tuple):
                rest = tuple(c for c in held if c is not cacher)
                of[item] = rest[0] if len(rest) == 1 else rest
            else:
                del of[item]
