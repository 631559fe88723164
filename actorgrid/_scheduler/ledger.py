"""What a worker's calls hold of its resources (GPU, memory, custom ones), and who waits.

A task holds what it asked for while it runs, an actor while it lives. The ledger hands out
in arrival order: a request that does not fit yet waits, and later requests wait behind it
(no starvation of a large request by a stream of small ones).

Invariants:

- Never over-committed: for every resource, what holders hold is at most the total.
- A key holds at most one grant; ``release`` of a key that holds nothing is a no-op, so a
  call that ends before it was granted may release blindly.
- ``release`` returns the keys granted by it, oldest first; nothing else grants.

Costs: ``request`` O(resources); ``release`` O(resources x grants made). Never reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Mapping

__all__ = ["Ledger"]

_EPSILON = 1e-9  # fractional amounts (0.5 + 0.25 + 0.25) add up within float error


class Ledger:
    def __init__(self, total: Mapping[str, float]) -> None:
        self.total = {k: float(v) for k, v in total.items()}
        self.used: dict[str, float] = dict.fromkeys(self.total, 0.0)
        self.holders: dict[Hashable, tuple[tuple[str, float], ...]] = {}
        self.waiting: OrderedDict[Hashable, tuple[tuple[str, float], ...]] = OrderedDict()

    def __repr__(self) -> str:
        return f"<Ledger used={self.used} total={self.total} waiting={len(self.waiting)}>"

    def feasible(self, need: tuple[tuple[str, float], ...]) -> bool:
        """Could ever fit here (with nothing else held)."""
        return all(self.total.get(k, 0.0) + _EPSILON >= v for k, v in need)

    def _fits(self, need: tuple[tuple[str, float], ...]) -> bool:
        return all(self.used.get(k, 0.0) + v <= self.total.get(k, 0.0) + _EPSILON for k, v in need)

    def request(self, key: Hashable, need: tuple[tuple[str, float], ...]) -> bool:
        """True: ``key`` holds ``need`` now. False: it waits (``release`` grants it later).
        ValueError for a need this worker can never meet."""
        if key in self.holders or key in self.waiting:
            raise ValueError(f"{key!r} already holds or waits for resources here")
        if not self.feasible(need):
            raise ValueError(f"this worker offers {self.total}, never {dict(need)}")
        if not self.waiting and self._fits(need):
            self._grant(key, need)
            return True
        self.waiting[key] = need
        return False

    def _grant(self, key: Hashable, need: tuple[tuple[str, float], ...]) -> None:
        for k, v in need:
            self.used[k] = self.used.get(k, 0.0) + v
        self.holders[key] = need

    def release(self, key: Hashable) -> list[Hashable]:
        """``key`` gives back what it holds (or stops waiting): the keys granted now."""
        if self.waiting.pop(key, None) is not None:
            return self._grant_waiting()
        need = self.holders.pop(key, None)
        if need is None:
            return []
        for k, v in need:
            self.used[k] = max(0.0, self.used[k] - v)
        return self._grant_waiting()

    def _grant_waiting(self) -> list[Hashable]:
        granted = []
        while self.waiting:
            key, need = next(iter(self.waiting.items()))
            if not self._fits(need):
                break
            del self.waiting[key]
            self._grant(key, need)
            granted.append(key)
        return granted

    def free(self) -> dict[str, float]:
        return {k: max(0.0, t - self.used.get(k, 0.0)) for k, t in self.total.items()}
