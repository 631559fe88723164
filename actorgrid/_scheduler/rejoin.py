"""A head's decisions when a node or worker comes back under its old identity.

A node agent or worker that loses its head keeps running and dials the same address again,
reporting who it is. Two heads can answer:

- the **same incarnation**, which saw the link close and declared that node or worker dead:
  its workers left the membership, their names were freed and the calls in flight to them
  failed over. Taking it back would let an actor run twice, so the head refuses
  (``refusal``), and the node fences: it kills its old workers and joins as a new node;
- a **new incarnation** (the head was restarted on the same address): it has declared nobody
  dead, so it accepts the node and its workers, and rebuilds its tables from their reports
  (``restore_worker``): each named actor takes its name again, each detached actor is adopted
  again (the head restarts it if its worker dies later).

The fence is the head's own memory, so no incarnation id needs to travel: a fresh head has
none. The memory is bounded (``FENCE_MEMORY`` ids, oldest forgotten first): one id back after
that many others died is taken as new, which is safe for a worker (its names were freed) and
for a node (its workers rejoin one by one).

Costs: ``declare_dead`` and ``refusal`` are O(1); ``restore_worker`` is O(actors of that
worker). Never reads a clock, does no I/O.
"""

from __future__ import annotations

from collections import OrderedDict

from .._protocol.messages import RejoinWorker
from .detached import DetachedTable
from .names import NameRegistry

__all__ = ["FENCE_MEMORY", "FenceTable", "restore_worker"]

FENCE_MEMORY = 100_000


class FenceTable:
    """The nodes and workers this head incarnation declared dead, and why."""

    def __init__(self, capacity: int = FENCE_MEMORY) -> None:
        self._capacity = capacity
        self._dead: OrderedDict[bytes, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._dead)

    def __repr__(self) -> str:
        return f"<FenceTable dead={len(self._dead)}>"

    def declare_dead(self, ident: bytes, why: str) -> None:
        self._dead[ident] = why
        self._dead.move_to_end(ident)
        while len(self._dead) > self._capacity:
            self._dead.popitem(last=False)

    def refusal(self, ident: bytes, what: str) -> str | None:
        """Why ``what`` (e.g. "node 1a2b3c") may not come back under this id, or None."""
        why = self._dead.get(ident)
        if why is None:
            return None
        return (
            f"{what} was declared dead by this head ({why}) and its work went elsewhere: "
            "it must not come back under the same identity; stop its old workers and join "
            "as a new node"
        )


def restore_worker(report: RejoinWorker, names: NameRegistry, detached: DetachedTable) -> list[str]:
    """Take back the names and detached actors a rejoining worker reports; return what could
    not be taken back (a name another actor took meanwhile), for the log."""
    lost = []
    for info in report.actors:
        if info.name:
            result = names.register(info, False)
            if result.error is not None:
                lost.append(
                    f"actor {info.label} {info.name!r} keeps running but lost its name: "
                    f"{result.error}"
                )
    for create in report.detached:
        if create.actor.address == report.worker.address:
            detached.adopt(create)
    return lost
