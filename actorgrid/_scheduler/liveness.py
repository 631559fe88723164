"""Pulse-based failure detection: which peers have gone silent for too long.

The I/O loop calls ``heard(key, now)`` for every frame or pulse from a peer and
``check(now)`` once per pulse interval; the detector never reads a clock.

Invariants:

- a watched peer is a *zombie* at ``now`` when ``now - last_heard > timeout_s``, where
  ``timeout_s = max_silent_intervals * interval_s`` (strictly more: a peer silent for exactly
  ``timeout_s`` is still alive);
- ``check(now)`` returns every watched zombie, in the order the peers were added, and stops
  watching them, so each zombie is reported once; a peer reported or removed is unknown until
  it is added again, and ``heard`` from an unknown peer is ignored (a late frame from a peer
  already declared dead does not revive it);
- ``heard`` is O(1); ``check`` is O(peers), which is why it runs once per interval, never per
  message.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["ZOMBIE_AFTER_INTERVALS", "FailureDetector"]

ZOMBIE_AFTER_INTERVALS = 5

K = TypeVar("K", bound=Hashable)


class FailureDetector(Generic[K]):
    """Pulse-based liveness of many peers, keyed by ``K``.

    A peer silent for more than ``max_silent_intervals * interval_s`` is a zombie. O(1) per
    ``heard()``; ``check()`` is O(peers) and runs once per interval, never per message.
    """

    def __init__(
        self, interval_s: float, max_silent_intervals: int = ZOMBIE_AFTER_INTERVALS
    ) -> None:
        if not math.isfinite(interval_s) or interval_s <= 0:
            raise ValueError(
                f"interval_s={interval_s} must be a positive, finite number of seconds: the "
                "time between pulses a live peer sends (e.g. 0.2)"
            )
        if max_silent_intervals < 1:
            raise ValueError(
                f"max_silent_intervals={max_silent_intervals} must be >= 1: the number of "
                "pulse intervals a peer may stay silent before it counts as dead (default "
                f"{ZOMBIE_AFTER_INTERVALS})"
            )
        self._interval_s = interval_s
        self._max_silent_intervals = max_silent_intervals
        self._timeout_s = interval_s * max_silent_intervals
        # Watched peers and when each was last heard from, in the order they were added.
        self._last_heard: dict[K, float] = {}

    def __repr__(self) -> str:
        return (
            f"<FailureDetector watching={len(self._last_heard)} "
            f"interval_s={self._interval_s:g} timeout_s={self._timeout_s:g}>"
        )

    def __contains__(self, key: object) -> bool:
        return key in self._last_heard

    def __len__(self) -> int:
        return len(self._last_heard)

    @property
    def interval_s(self) -> float:
        return self._interval_s

    @property
    def max_silent_intervals(self) -> int:
        return self._max_silent_intervals

    @property
    def timeout_s(self) -> float:
        """A watched peer silent for strictly longer than this is a zombie."""
        return self._timeout_s

    def add(self, key: K, now: float) -> None:
        """Start watching ``key``, as if just heard from; re-adding a watched key refreshes it."""
        self._last_heard[key] = now

    def heard(self, key: K, now: float) -> None:
        """A frame or pulse arrived from ``key``; ignored if ``key`` is not watched."""
        if key in self._last_heard:
            self._last_heard[key] = now

    def remove(self, key: K) -> None:
        """Stop watching ``key``; ignored if it is not watched."""
        self._last_heard.pop(key, None)

    def silent_for(self, key: K, now: float) -> float:
        """Seconds since ``key`` was last heard from; ``KeyError`` if it is not watched."""
        try:
            return now - self._last_heard[key]
        except KeyError:
            raise KeyError(
                f"{key!r} is not watched by this FailureDetector: it was never added, was "
                "removed, or was already reported by check() as a zombie"
            ) from None

    def check(self, now: float) -> list[K]:
        """The watched peers that are zombies at ``now``, which are no longer watched after."""
        timeout_s = self._timeout_s
        zombies = [key for key, last in self._last_heard.items() if now - last > timeout_s]
        for key in zombies:
            del self._last_heard[key]
        return zombies
