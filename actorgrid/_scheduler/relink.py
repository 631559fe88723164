"""Whether a dropped link to a worker means the worker died: link state apart from worker
state, as a pure state machine (sans-I/O). ``Relinks.dropped(...) -> Verdict``.

One TCP connection closing (a reset, a frame the peer rejected, a proxy's idle timeout, a
Ctrl-C that once broke a frame) is no proof that the process at the other end died. The
membership this process learns from the head says which workers are alive; a link to one
of them that drops is redialled before anything is decided::

    open ──dropped──▶ REDIAL ──redialled(ok)──▶ ALIVE: the calls in flight on the dropped
      ▲                  │                       link fail (they may have run); its actors,
      └──────────────────┘                       names and placement stay
                         └─redialled(not ok)──▶ GONE: the worker's death, as before
    open ──dropped──▶ GONE   (this process stopping; a worker the head no longer lists; a
                              link the runtime aborted itself: a zombie, or the head's news
                              of the worker's death; or one that dropped too often lately)

Invariants (``tests/_scheduler/test_relink.py``):

- at most one redial per address at a time: a link dropped while one is under way is GONE;
- an address whose links dropped ``MAX_DROPS`` times within ``DROP_WINDOW_S`` is GONE at the
  next drop (a peer that accepts and then drops every connection is not redialled for ever);
- ``worker_left`` forgets an address: no state outlives the worker.

Costs: every call is O(1); the state holds one entry per address with a redial under way or
a drop within the window (pruned at each drop of that address and when its worker leaves).
Never reads a clock (the shell passes ``now``), does no I/O.
"""

from __future__ import annotations

import enum

__all__ = ["DROP_WINDOW_S", "MAX_DROPS", "Relinks", "Verdict"]

# A link to one address that dropped this many times within the window is the worker's
# death at its next drop, as it was before links were redialled.
MAX_DROPS = 3
DROP_WINDOW_S = 30.0


class Verdict(enum.Enum):
    REDIAL = "redial"  # dial the address again; decide by its answer (``redialled``)
    ALIVE = "alive"  # the worker answered: only the link dropped
    GONE = "gone"  # treat the worker as dead (the head's WorkerLeft confirms it)


class Relinks:
    """The links to workers that dropped lately, and the redials under way."""

    def __init__(self) -> None:
        self._redialling: set[str] = set()
        self._drops: dict[str, list[float]] = {}  # address -> times of recent drops

    def __repr__(self) -> str:
        return f"<Relinks redialling={len(self._redialling)} recent={len(self._drops)}>"

    def redialling(self, address: str) -> bool:
        return address in self._redialling

    def dropped(
        self, address: str, now: float, *, listed: bool, aborted: bool, stopping: bool
    ) -> Verdict:
        """A link to ``address`` that had opened dropped. ``listed``: the head's membership
        still lists a worker there; ``aborted``: this process dropped it (a zombie, the
        head's news of its death); ``stopping``: this process is leaving the cluster."""
        if stopping or not listed or aborted or address in self._redialling:
            return Verdict.GONE
        recent = [t for t in self._drops.get(address, ()) if now - t < DROP_WINDOW_S]
        if len(recent) >= MAX_DROPS:
            self._drops.pop(address, None)
            return Verdict.GONE
        recent.append(now)
        self._drops[address] = recent
        self._redialling.add(address)
        return Verdict.REDIAL

    def redialled(self, address: str, ok: bool) -> Verdict:
        """The redial of ``address`` connected and shook hands (``ok``), or failed."""
        self._redialling.discard(address)
        if not ok:
            self._drops.pop(address, None)
            return Verdict.GONE
        return Verdict.ALIVE

    def worker_left(self, address: str) -> None:
        """The head declared the worker at ``address`` gone."""
        self._drops.pop(address, None)
