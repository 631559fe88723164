"""Copies of stored values on other nodes: the two ledgers behind cross-node pulls.

A value held in one node's store and read on another is pulled into the reader's node as a
cached copy (``_runtime/stored.py``). When its owner frees it, its holder tells each process
that pulled a copy, which frees its node's copy. Two ledgers keep that exact:

- :class:`Pullers`, the holder's: which links pulled a copy of each value it holds. A link
  that closes (its process exited, its connection broke) is forgotten at once with every name
  it pulled (``gone``), so the holder neither keeps it nor sends to it later; a name no other
  link pulled is no longer "pulled" at all, and its free takes the local path again.
- :class:`PullsUnderWay`, the puller's: a free can overtake the pull it is about (it travels
  on another connection than the pieces of the value), and the node agent ignores the free
  of a copy it does not know yet. A free that arrives while its pull is under way is kept,
  and the copy is freed as soon as the pull has made it, not left until evicted.

Invariants: a link is in ``Pullers`` only while it pulled a name not yet freed or until it
closes; ``PullsUnderWay.finished`` answers True exactly when a free arrived between the
pull's ``started`` and its ``finished``.

Costs: O(1) per pull and per free of a name; O(names a link pulled) when it closes. No clock.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Pullers", "PullsUnderWay"]

L = TypeVar("L", bound=Hashable)


class Pullers(Generic[L]):
    """The holder's side: the links that pulled a copy of each name it holds."""

    def __init__(self) -> None:
        self._by_name: dict[str, set[L]] = {}
        self._by_link: dict[L, set[str]] = {}

    def __repr__(self) -> str:
        return f"<Pullers names={len(self._by_name)} links={len(self._by_link)}>"

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        """Names pulled by at least one open link."""
        return len(self._by_name)

    @property
    def links(self) -> int:
        """Links known to have pulled something (each until it closes)."""
        return len(self._by_link)

    def pulled(self, name: str, link: L) -> bool:
        """``link`` pulled a copy of ``name``. True when the link is new here: the caller
        then calls ``gone`` once it closes."""
        new = link not in self._by_link
        self._by_name.setdefault(name, set()).add(link)
        self._by_link.setdefault(link, set()).add(name)
        return new

    def freed(self, name: str) -> set[L]:
        """``name`` was freed here: the links to tell (each frees its node's copy)."""
        links = self._by_name.pop(name, set())
        for link in links:
            self._by_link[link].discard(name)
        return links

    def gone(self, link: L) -> list[str]:
        """``link`` closed: forget it; the names no open link pulled any more."""
        orphaned = []
        for name in self._by_link.pop(link, ()):
            links = self._by_name.get(name)
            if links is None:
                continue
            links.discard(link)
            if not links:
                del self._by_name[name]
                orphaned.append(name)
        return orphaned


class PullsUnderWay:
    """The puller's side: pulls under way, and the frees that overtook them."""

    def __init__(self) -> None:
        self._freed: dict[str, bool] = {}  # name pulled now -> a free arrived meanwhile

    def __repr__(self) -> str:
        return f"<PullsUnderWay {len(self._freed)}>"

    def __contains__(self, name: object) -> bool:
        return name in self._freed

    def started(self, name: str) -> None:
        self._freed[name] = False

    def freed(self, name: str) -> bool:
        """A free of ``name`` arrived. True if a pull of it is under way: the copy it makes
        is freed when it ends (``finished`` says so)."""
        if name in self._freed:
            self._freed[name] = True
            return True
        return False

    def finished(self, name: str) -> bool:
        """The pull of ``name`` ended (made its copy, or failed). True if a free overtook
        it: the copy it made must be freed now."""
        return self._freed.pop(name, False)
