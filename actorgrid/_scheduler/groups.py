"""Actor ids grouped by a key (a worker's address, an owner process), for the tables that must
hand back every actor of one group at once (that worker died, that owner left) without walking
every actor.

A set per group costs 40-100 bytes an actor (a set's table is kept at most 60% full, and
grows four-fold); at 100,000 agents, with four such indexes on the head and one in every
name cache, that was most of what a name cost. Here each group is an append-only list (8 bytes
an id) and a count of its live members: ``remove`` only counts down, and the list is
compacted (its stale ids dropped, asking the owning table ``belongs``) once it is more than
twice as long as its live members, so its length stays O(live members) and each call O(1)
amortised. ``pop`` hands back the live members of a group, each once.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["Groups"]

G = TypeVar("G", bound=Hashable)
I = TypeVar("I", bound=Hashable)  # noqa: E741

# A group's list is compacted past 2 x its live members plus this (small groups never).
_SLACK = 16


class Groups(Generic[G, I]):
    """``group -> ids``. ``belongs(id, group)``: the owning table's word that ``id`` is (still)
    in ``group``; every ``add`` is matched by at most one ``remove`` of the same pair."""

    __slots__ = ("_belongs", "_ids", "_live")

    def __init__(self, belongs: Callable[[I, G], bool]) -> None:
        self._belongs = belongs
        self._ids: dict[G, list[I]] = {}
        self._live: dict[G, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, group: object) -> bool:
        return group in self._ids

    def groups(self) -> Iterator[G]:
        return iter(self._ids)

    def add(self, group: G, item: I) -> None:
        ids = self._ids.get(group)
        if ids is None:
            self._ids[group] = [item]
            self._live[group] = 1
            return
        ids.append(item)
        self._live[group] += 1

    def remove(self, group: G, item: I) -> None:
        """``item`` left ``group`` (the caller's table no longer says it belongs there)."""
        live = self._live.get(group)
        if live is None:
            return
        if live <= 1:
            del self._ids[group], self._live[group]
            return
        self._live[group] = live - 1
        ids = self._ids[group]
        if len(ids) > 2 * (live - 1) + _SLACK:
            self._ids[group] = self._members(group, ids)

    def members(self, group: G) -> list[I]:
        """The live members of ``group``, each once (O(its list))."""
        ids = self._ids.get(group)
        return [] if ids is None else self._members(group, ids)

    def pop(self, group: G) -> list[I]:
        """The live members of ``group``, each once; the group is forgotten."""
        ids = self._ids.pop(group, None)
        self._live.pop(group, None)
        return [] if ids is None else self._members(group, ids)

    def _members(self, group: G, ids: list[I]) -> list[I]:
        belongs = self._belongs
        return [item for item in dict.fromkeys(ids) if belongs(item, group)]
