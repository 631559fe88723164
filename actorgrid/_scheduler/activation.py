"""Virtual agents: which worker activates the agent of a key, and one worker's activations.

An agent of a kind is addressed by ``(kind, key)`` (an ``Ident``) and lives on the worker that
rendezvous hashing picks over the live workers (``owner_of``): the worker whose
``hash(worker, ident)`` scores highest. Every process computes it alone from its own view of
the membership, so no head round trip is needed, and a worker joining or leaving moves only
the keys it wins or held.

``ActivationTable`` is one worker's decision maker (``handle(event) -> commands``): it holds
the agents active on that worker and decides, for each message that arrives, whether to
deliver it, to activate the agent first, to forward the message to the owner, or to hold it
while the agent is deactivating. Invariants:

- Only the owner activates (in its own view): senders that guessed another membership reach a
  worker that forwards. A message that has been forwarded ``MAX_HOPS`` times is activated where
  it is, so views that disagree for a moment cannot bounce it forever (views agree once the
  head's membership news has reached both; until then two activations may exist for a key).
- At most one activation per ident per worker: while one deactivates, messages for it are
  held, in arrival order, and go to the next activation (here, or at the owner if the
  membership changed meanwhile) once the old one has ended.
- A membership change deactivates the agents this worker no longer owns (their messages
  follow them to the new owner once they end).

Never reads a clock nor does I/O. Costs: ``Arrived``, ``Idle`` and ``Ended`` are O(1) plus
O(workers) hashing for an ident with no activation here; ``Members`` is O(activations here).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from .._protocol.wireclass import message

__all__ = [
    "MAX_HOPS",
    "Activate",
    "ActivationTable",
    "Arrived",
    "Deactivate",
    "Deliver",
    "Ended",
    "Forward",
    "Ident",
    "Idle",
    "Members",
    "owner_of",
]

MAX_HOPS = 3

Ident = tuple[str, str]  # (kind, key)


def _score(worker: str, ident: Ident) -> bytes:
    data = f"{worker}\x00{ident[0]}\x00{ident[1]}".encode()
    return hashlib.blake2b(data, digest_size=8).digest()


def owner_of(ident: Ident, workers: Iterable[str]) -> str | None:
    """The worker that hosts ``ident`` (rendezvous hashing), or None if there is none."""
    best: str | None = None
    best_score = b""
    for worker in workers:
        score = _score(worker, ident)
        if best is None or score > best_score or (score == best_score and worker > best):
            best, best_score = worker, score
    return best


# --- events --------------------------------------------------------------------------------


@message
class Arrived:
    """A message for ``ident`` reached this worker, after ``hops`` forwards."""

    ident: Ident
    item: Any
    hops: int = 0


@message
class Idle:
    """The activation of ``ident`` has had no message for its idle timeout."""

    ident: Ident


@message
class Ended:
    """The activation of ``ident`` has returned (deactivated, or ended by itself).
    ``unconsumed``: messages it had been given and never took in (held while its mailbox
    was full), in order; they go to the next activation, ahead of those held meanwhile."""

    ident: Ident
    unconsumed: tuple[Any, ...] = ()


@message
class Members:
    """The live workers changed."""

    workers: tuple[str, ...]


# --- commands ------------------------------------------------------------------------------


@message
class Activate:
    ident: Ident


@message
class Deliver:
    ident: Ident
    item: Any


@message
class Forward:
    address: str
    item: Any
    hops: int


@message
class Deactivate:
    ident: Ident


Event = Arrived | Idle | Ended | Members
Command = Activate | Deliver | Forward | Deactivate


class ActivationTable:
    """The agents active on the worker at ``me`` (see the module docstring)."""

    def __init__(self, me: str, workers: Sequence[str] = ()) -> None:
        self.me = me
        self.workers: tuple[str, ...] = tuple(workers)
        self._active: set[Ident] = set()
        # Deactivating: the messages that arrived meanwhile, in arrival order.
        self._ending: dict[Ident, deque[tuple[Any, int]]] = {}

    def __repr__(self) -> str:
        return (
            f"<ActivationTable at {self.me} active={len(self._active)} "
            f"ending={len(self._ending)} workers={len(self.workers)}>"
        )

    def __len__(self) -> int:
        return len(self._active) + len(self._ending)

    def is_active(self, ident: Ident) -> bool:
        return ident in self._active

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, Arrived):
            return self._arrived(event.ident, event.item, event.hops)
        if isinstance(event, Idle):
            if event.ident in self._active:
                self._active.discard(event.ident)
                self._ending[event.ident] = deque()
                return [Deactivate(event.ident)]
            return []
        if isinstance(event, Ended):
            return self._ended(event.ident, event.unconsumed)
        return self._members(event.workers)

    def _arrived(self, ident: Ident, item: Any, hops: int) -> list[Command]:
        if ident in self._active:
            return [Deliver(ident, item)]
        held = self._ending.get(ident)
        if held is not None:
            held.append((item, hops))
            return []
        owner = owner_of(ident, self.workers)
        if owner is None or owner == self.me or hops >= MAX_HOPS:
            self._active.add(ident)
            return [Activate(ident), Deliver(ident, item)]
        return [Forward(owner, item, hops + 1)]

    def _ended(self, ident: Ident, unconsumed: tuple[Any, ...]) -> list[Command]:
        self._active.discard(ident)
        held = self._ending.pop(ident, None)
        commands: list[Command] = []
        for item in unconsumed:
            commands.extend(self._arrived(ident, item, 0))
        for item, hops in held or ():
            commands.extend(self._arrived(ident, item, hops))
        return commands

    def _members(self, workers: tuple[str, ...]) -> list[Command]:
        self.workers = workers
        moved = [i for i in self._active if owner_of(i, workers) not in (None, self.me)]
        commands: list[Command] = []
        for ident in moved:
            self._active.discard(ident)
            self._ending[ident] = deque()
            commands.append(Deactivate(ident))
        return commands
