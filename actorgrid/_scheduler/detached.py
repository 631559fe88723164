"""Detached actors the head restarts, since their creator may be gone.

``.options(lifetime="detached")`` makes an actor outlive its creator; so the head, not the
creator, restarts it when its worker dies, under its ``max_restarts``. The creator hands the
head what it takes to create the actor again (``adopt``: its CreateActor, with the class code
and the constructor's arguments); each restart is adopted again at its new address.

Entries leave when the actor ends (``ended``: killed, or its constructor failed; news of an
earlier incarnation at another address is ignored) or when its worker goes
(``address_gone``, which hands back those with restarts left, for the caller to place again).

Costs: ``adopt`` and ``ended`` are O(1), ``address_gone`` O(detached actors at that address).
Never reads a clock, does no I/O.
"""

from __future__ import annotations

from .._protocol.ids import ActorId
from .._protocol.messages import CreateActor

__all__ = ["DetachedTable"]


class DetachedTable:
    def __init__(self) -> None:
        self._actors: dict[ActorId, CreateActor] = {}
        self._by_address: dict[str, set[ActorId]] = {}

    def __len__(self) -> int:
        return len(self._actors)

    def __repr__(self) -> str:
        return f"<DetachedTable actors={len(self._actors)}>"

    def adopt(self, create: CreateActor) -> None:
        self._remove(create.actor.actor_id)
        self._actors[create.actor.actor_id] = create
        self._by_address.setdefault(create.actor.address, set()).add(create.actor.actor_id)

    def get(self, actor_id: ActorId) -> CreateActor | None:
        return self._actors.get(actor_id)

    def ended(self, actor_id: ActorId, address: str | None = None) -> None:
        create = self._actors.get(actor_id)
        if create is not None and (address is None or create.actor.address == address):
            self._remove(actor_id)

    def __contains__(self, actor_id: object) -> bool:
        return actor_id in self._actors

    def at(self, address: str) -> list[ActorId]:
        """The detached actors at ``address``: O(those)."""
        return list(self._by_address.get(address, ()))

    def address_gone(self, address: str) -> list[CreateActor]:
        """The worker at ``address`` is gone: its detached actors with restarts left, to be
        created again elsewhere (the others are forgotten)."""
        gone = [self._actors[aid] for aid in self._by_address.get(address, ())]
        for create in gone:
            self._remove(create.actor.actor_id)
        return [c for c in gone if c.actor.max_restarts != 0]

    def _remove(self, actor_id: ActorId) -> None:
        create = self._actors.pop(actor_id, None)
        if create is None:
            return
        ids = self._by_address.get(create.actor.address)
        if ids is not None:
            ids.discard(actor_id)
            if not ids:
                del self._by_address[create.actor.address]
