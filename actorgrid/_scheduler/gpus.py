"""A node's GPUs and the worker slots that hold them: each GPU belongs to one worker at a time.

A worker slot whose share of the node has GPUs (``_node/shares.py``) claims that many when its
process is started, and holds what it got until that process ends. The node's base workers
and the workers of each runtime environment draw from this one ledger, so a GPU id is never
visible to two live workers at once (``CUDA_VISIBLE_DEVICES`` is set from the grant).

- A claim that fits the free GPUs is granted at once; one that does not waits, in order.
- Claims of environment workers (``yields=False``) come before those of base workers
  (``yields=True``): an environment's driver asked for its own workers, while the base ones
  hold GPUs only in case someone needs them. So a waiting environment claim revokes base
  holders (``Revoke``: the node closes that worker once nothing holds its GPUs and its calls
  are done, and starts it again, then without a GPU) until what is free or being given back
  covers it; a base claim never revokes anything.
- A holder whose GPUs are in use (``set_busy``: a live actor or a running call of its worker
  holds one) is never revoked: revoking would kill that work. The environment claim waits
  instead (``busy_blockers`` names what it waits for), and revokes the holder once it says
  its GPUs are free again (``set_busy(holder, False)`` returns that ``Revoke``).
- A released holder's GPUs go to the waiting claims: environment ones first, then base ones,
  each in arrival order, stopping at the first that does not fit (no starvation of a large
  claim by small ones).

Invariants (checked by ``check``, and by the stateful test):

- Each GPU id is free, or held by exactly one holder; a holder holds exactly what it claimed.
- A holder waits or holds, never both; ``release`` ends both (a no-op for a stranger).
- The first waiting claim, in grant order, does not fit the free GPUs.
- Only base holders are revoked, each at most once per grant, and none while it is busy.

Costs: ``claim`` O(GPUs + holders) when it revokes, else O(GPUs); ``release`` O(GPUs x waiting
claims granted). Never reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import attrs

__all__ = ["GpuLedger", "Grant", "Revoke"]


@attrs.frozen
class Grant:
    """``holder`` (a waiting claim) now holds ``ids``."""

    holder: Hashable
    ids: tuple[str, ...]


@attrs.frozen
class Revoke:
    """Close ``holder``'s worker once its calls are done: a waiting claim needs its GPUs."""

    holder: Hashable


class GpuLedger:
    def __init__(self, ids: list[str] | tuple[str, ...]) -> None:
        self.ids = tuple(ids)
        self.free: list[str] = list(self.ids)  # in the node's order: lowest ids go first
        self.held: dict[Hashable, tuple[str, ...]] = {}
        self.yields: dict[Hashable, bool] = {}  # of holders and waiters
        self.waiting: OrderedDict[Hashable, int] = OrderedDict()
        self.revoked: set[Hashable] = set()  # holders asked to give theirs back
        self.busy: set[Hashable] = set()  # holders whose GPUs a live actor or a call holds

    def __repr__(self) -> str:
        return (
            f"<GpuLedger free={len(self.free)}/{len(self.ids)} holders={len(self.held)} "
            f"waiting={len(self.waiting)}>"
        )

    def claim(
        self, holder: Hashable, count: int, *, yields: bool, prefer: tuple[str, ...] = ()
    ) -> tuple[tuple[str, ...] | None, list[Revoke]]:
        """``holder`` wants ``count`` GPUs (``prefer``'s first when free: a slot keeps its
        own GPU across restarts): the ids now, or None while it waits (a ``Grant`` from
        ``release`` later), and the base holders to close for it."""
        if holder in self.held or holder in self.waiting:
            raise ValueError(f"{holder!r} already holds or waits for GPUs")
        if count < 1 or count > len(self.ids):
            raise ValueError(f"a claim of {count} GPUs on a node of {len(self.ids)}")
        self.yields[holder] = yields
        if not self._ahead(yields) and len(self.free) >= count:
            return self._take(holder, count, prefer), []
        self.waiting[holder] = count
        return None, [] if yields else self._revokes()

    def _ahead(self, yields: bool) -> bool:
        """A waiting claim would be granted before a new one of this kind."""
        if yields:
            return bool(self.waiting)  # base claims come after every waiting one
        return any(not self.yields[w] for w in self.waiting)

    def _take(self, holder: Hashable, count: int, prefer: tuple[str, ...] = ()) -> tuple[str, ...]:
        first = [g for g in self.free if g in prefer]
        ids = tuple((first + [g for g in self.free if g not in prefer])[:count])
        self.free = [g for g in self.free if g not in ids]
        self.held[holder] = ids
        return ids

    def _revokes(self) -> list[Revoke]:
        """Base holders to close so that what environment claims wait for comes free."""
        wanted = sum(n for w, n in self.waiting.items() if not self.yields[w])
        coming = len(self.free) + sum(len(self.held[h]) for h in self.revoked)
        revokes = []
        for holder, ids in self.held.items():
            if coming >= wanted:
                break
            if self.yields[holder] and holder not in self.revoked and holder not in self.busy:
                self.revoked.add(holder)
                coming += len(ids)
                revokes.append(Revoke(holder))
        return revokes

    def set_busy(self, holder: Hashable, busy: bool) -> list[Revoke]:
        """``holder``'s worker says whether a live actor or a running call holds its GPUs.
        Free again, it is revoked if a waiting environment claim needs it."""
        if holder not in self.held:
            return []
        if busy:
            self.busy.add(holder)
            return []
        if holder not in self.busy:
            return []
        self.busy.discard(holder)
        if any(not self.yields[w] for w in self.waiting):
            return self._revokes()
        return []

    def busy_blockers(self) -> dict[Hashable, tuple[str, ...]]:
        """The base holders, and their GPUs, whose work keeps waiting environment claims
        waiting: not revoked because busy, or revoked and busy since (their worker gives them
        back once that work ends). For the warning that says what a claim waits for."""
        if not any(not self.yields[w] for w in self.waiting):
            return {}
        return {h: ids for h, ids in self.held.items() if h in self.busy and self.yields[h]}

    def release(self, holder: Hashable) -> list[Grant]:
        """``holder``'s worker ended (or its claim is withdrawn): what it held goes to the
        waiting claims. Returns the grants made."""
        self.revoked.discard(holder)
        self.busy.discard(holder)
        if self.waiting.pop(holder, None) is not None:
            self.yields.pop(holder, None)
            return self._grant_waiting()
        ids = self.held.pop(holder, None)
        if ids is None:
            return []
        self.yields.pop(holder, None)
        self.free.extend(ids)
        self.free.sort(key=self.ids.index)
        return self._grant_waiting()

    def _grant_waiting(self) -> list[Grant]:
        grants = []
        while self.waiting:
            holder = self._first()
            count = self.waiting[holder]
            if len(self.free) < count:
                break
            del self.waiting[holder]
            grants.append(Grant(holder, self._take(holder, count)))
        return grants

    def _first(self) -> Hashable:
        """The waiting claim granted next: the oldest environment one, else the oldest."""
        return next((w for w in self.waiting if not self.yields[w]), next(iter(self.waiting)))

    def holds(self, holder: Hashable) -> tuple[str, ...] | None:
        return self.held.get(holder)

    def check(self) -> None:
        """Raise AssertionError if an invariant does not hold (for tests)."""
        held = [g for ids in self.held.values() for g in ids]
        assert len(held) == len(set(held)), f"a GPU held twice: {self.held}"
        assert sorted(held + self.free) == sorted(self.ids), (self.held, self.free)
        assert not set(self.held) & set(self.waiting)
        assert self.revoked <= set(self.held) and all(self.yields[h] for h in self.revoked)
        assert self.busy <= set(self.held)
        if self.waiting:
            assert len(self.free) < self.waiting[self._first()]
