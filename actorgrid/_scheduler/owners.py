"""Which process owns which actor, so that an actor ends with the process that created it.

An actor belongs to its creator (a driver, or a worker process whose task or actor created
it), as in Ray. The creator tells the head where each non-detached actor it creates lives
(``own``), again at each restart (same id, new address). When the creator goes (clean exit,
``ag.shutdown()``, SIGKILL, or silent for 5 pulse intervals: its link to the head closes),
``owner_gone`` hands back its actors and where they are; the head asks their workers to kill
them. An actor created by a task stays its worker process's after the task returns, until that
process ends or the actor is killed (Ray's rule). Detached actors are never entered here.

Owners are opaque hashable keys (the head's link to each process). Entries leave when the
actor ends (``ended``, from its worker or from whoever killed it), when its worker goes
(``address_gone``: the actor went with it; a restart enters it again at its new address), or
with their owner.

Invariants: every actor has at most one entry; ``_by_owner`` and ``_by_address`` index
exactly the entries of ``_actors``. An entry is its (address, owner) pair, one tuple shared by
all of that owner's actors at that address (``_places``, dropped with its owner): no record of
its own per actor (64 bytes an agent at the head), an ``OwnedActor`` made when asked for. Costs: ``own`` and ``ended`` are O(1); ``owner_gone`` and
``address_gone`` are O(actors of that owner / at that address): no operation walks every actor.
Never reads a clock, does no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable

import attrs

from .._protocol.ids import ActorId
from .groups import Groups

__all__ = ["OwnedActor", "OwnerTable"]


@attrs.frozen
class OwnedActor:
    actor_id: ActorId
    address: str  # the worker it lives on
    owner: Hashable


_Place = tuple[str, Hashable]  # (address, owner)


class OwnerTable:
    def __init__(self) -> None:
        self._actors: dict[ActorId, _Place] = {}
        # Each owner's places by address; one at an address gone stays until its owner goes
        # (a tuple per address the owner ever created an actor at).
        self._places: dict[Hashable, dict[str, _Place]] = {}
        # Lists, not a set per group: groups.py (~60 bytes less per actor and index).
        self._by_owner: Groups[Hashable, ActorId] = Groups(self._is_owned_by)
        self._by_address: Groups[str, ActorId] = Groups(self._is_at)

    def _is_owned_by(self, actor_id: ActorId, owner: Hashable) -> bool:
        entry = self._actors.get(actor_id)
        return entry is not None and entry[1] == owner

    def _is_at(self, actor_id: ActorId, address: str) -> bool:
        entry = self._actors.get(actor_id)
        return entry is not None and entry[0] == address

    def __len__(self) -> int:
        return len(self._actors)

    def __repr__(self) -> str:
        return f"<OwnerTable actors={len(self._actors)} owners={len(self._by_owner)}>"

    def get(self, actor_id: ActorId) -> OwnedActor | None:
        place = self._actors.get(actor_id)
        return None if place is None else OwnedActor(actor_id, *place)

    def own(self, owner: Hashable, actor_id: ActorId, address: str) -> None:
        """``owner`` created ``actor_id`` at ``address`` (or restarted it there)."""
        self._remove(actor_id)
        places = self._places.get(owner)
        if places is None:
            places = self._places[owner] = {}
        place = places.get(address)
        if place is None:
            place = places[address] = (address, owner)
        self._actors[actor_id] = place
        self._by_owner.add(owner, actor_id)
        self._by_address.add(address, actor_id)

    def ended(self, actor_id: ActorId, address: str | None = None) -> None:
        """The actor has ended (at ``address``, if given: news of an earlier incarnation, at
        another address, leaves a restarted actor's entry alone)."""
        entry = self._actors.get(actor_id)
        if entry is not None and (address is None or entry[0] == address):
            self._remove(actor_id)

    def owner_gone(self, owner: Hashable) -> list[OwnedActor]:
        """The actors ``owner`` owned, now nobody's: the caller kills them."""
        gone = [OwnedActor(aid, *self._actors[aid]) for aid in self._by_owner.members(owner)]
        for entry in gone:
            self._remove(entry.actor_id)
        self._places.pop(owner, None)
        return gone

    def address_gone(self, address: str) -> None:
        """The worker at ``address`` is gone, and its actors with it."""
        for actor_id in self._by_address.members(address):
            self._remove(actor_id)

    def _remove(self, actor_id: ActorId) -> None:
        entry = self._actors.pop(actor_id, None)
        if entry is None:
            return
        self._by_address.remove(entry[0], actor_id)
        self._by_owner.remove(entry[1], actor_id)
