"""The cluster's name registry: atomic get-or-create of actor names per namespace.

Every name is held by one actor (``ActorInfo``: id and address). The registry also remembers,
for each name, the *claimer*: the process that registered it (an opaque hashable key, the
head's link to that process), until that process is gone. A claim whose creator dies before
the actor exists would otherwise hold the name for good, so ``claimer_gone(key)`` hands back
the names that process claimed; the caller (the head) asks their workers which actors exist
and frees the others with ``actor_ended``.

Costs: ``register``, ``lookup``, ``actor_ended`` are O(1); ``address_gone(address)`` and
``claimer_gone(key)`` are O(names at that address / claimed by that key), through an index
each: no operation walks every name.
"""

from __future__ import annotations

from collections.abc import Hashable

import attrs

from .._protocol.ids import ActorId
from .._protocol.messages import ActorInfo

__all__ = ["DEFAULT_NAMESPACE", "NameCache", "NameRegistry", "RegisterResult"]

DEFAULT_NAMESPACE = "default"


@attrs.frozen
class RegisterResult:
    actor: ActorInfo | None  # the actor holding the name after the call
    created: bool  # True if the proposed actor got the name
    error: str | None = None


class NameRegistry:
    def __init__(self) -> None:
        self._by_name: dict[tuple[str, str], ActorInfo] = {}
        self._by_actor: dict[ActorId, tuple[str, str]] = {}
        self._by_address: dict[str, set[ActorId]] = {}
        self._claimer: dict[ActorId, Hashable] = {}
        self._by_claimer: dict[Hashable, set[ActorId]] = {}

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"<NameRegistry names={len(self._by_name)} claimers={len(self._by_claimer)}>"

    def register(
        self, actor: ActorInfo, get_if_exists: bool, claimer: Hashable | None = None
    ) -> RegisterResult:
        """Give ``actor`` its name unless another actor holds it; ``claimer`` is the process
        asking (the claim is its until ``claimer_gone``)."""
        if not actor.name:
            return RegisterResult(None, False, "an actor needs a non-empty name to register")
        key = (actor.namespace or DEFAULT_NAMESPACE, actor.name)
        existing = self._by_name.get(key)
        if existing is not None and existing.actor_id == actor.actor_id:
            # A restarted actor: same id, new address, perhaps a new owner.
            self._unindex(existing)
            self._by_name[key] = actor
            self._index(actor, claimer)
            return RegisterResult(actor, True)
        if existing is not None:
            if get_if_exists:
                return RegisterResult(existing, False)
            return RegisterResult(
                existing,
                False,
                f"the name {key[1]!r} is already taken in namespace {key[0]!r} by a live "
                f"{existing.label} actor; pass get_if_exists=True to reuse it, or ag.kill() it",
            )
        self._by_name[key] = actor
        self._by_actor[actor.actor_id] = key
        self._index(actor, claimer)
        return RegisterResult(actor, True)

    def claim(self, actor: ActorInfo, claimer: Hashable) -> ActorInfo | None:
        """``register(actor, False, claimer)`` without its result record (a batched claim
        of a new actor, 100,000 in a row): None if ``actor`` now holds its name, else the
        actor that holds it (``register`` tells why)."""
        key = (actor.namespace or DEFAULT_NAMESPACE, actor.name or "")
        if not actor.name or key in self._by_name:
            return self.register(actor, False, claimer).actor or actor
        self._by_name[key] = actor
        self._by_actor[actor.actor_id] = key
        self._index(actor, claimer)
        return None

    def lookup(self, name: str, namespace: str | None) -> ActorInfo | None:
        return self._by_name.get((namespace or DEFAULT_NAMESPACE, name))

    def get(self, actor_id: ActorId) -> ActorInfo | None:
        """The named actor with this id, if it still holds its name."""
        key = self._by_actor.get(actor_id)
        return None if key is None else self._by_name.get(key)

    def actor_ended(self, actor_id: ActorId) -> ActorInfo | None:
        """Free the name of ``actor_id`` (no effect if it holds none)."""
        key = self._by_actor.pop(actor_id, None)
        if key is None:
            return None
        info = self._by_name.pop(key, None)
        if info is not None:
            self._unindex(info)
        return info

    def address_gone(self, address: str) -> list[ActorInfo]:
        """Free the names of every actor that lived at ``address`` (its process is gone)."""
        gone = [self.get(aid) for aid in list(self._by_address.get(address, ()))]
        for info in gone:
            if info is not None:
                self.actor_ended(info.actor_id)
        return [info for info in gone if info is not None]

    def claimer_gone(self, claimer: Hashable) -> list[ActorInfo]:
        """The names ``claimer`` registered that are still held; from now on they are nobody's
        claim. The caller frees those whose actor does not exist (``actor_ended``)."""
        ids = self._by_claimer.pop(claimer, set())
        claimed = []
        for aid in ids:
            self._claimer.pop(aid, None)
            info = self.get(aid)
            if info is not None:
                claimed.append(info)
        return claimed

    def names(self) -> list[ActorInfo]:
        return list(self._by_name.values())

    def _index(self, info: ActorInfo, claimer: Hashable | None) -> None:
        self._by_address.setdefault(info.address, set()).add(info.actor_id)
        if claimer is not None:
            self._claimer[info.actor_id] = claimer
            self._by_claimer.setdefault(claimer, set()).add(info.actor_id)

    def _unindex(self, info: ActorInfo) -> None:
        at = self._by_address.get(info.address)
        if at is not None:
            at.discard(info.actor_id)
            if not at:
                del self._by_address[info.address]
        claimer = self._claimer.pop(info.actor_id, None)
        if claimer is not None:
            claims = self._by_claimer.get(claimer)
            if claims is not None:
                claims.discard(info.actor_id)
                if not claims:
                    del self._by_claimer[claimer]


class NameCache:
    """A process's cache of the names it looked up or registered: ``(namespace, name) ->
    ActorInfo``, read like a dict.

    Indexed by actor id and by address, so forgetting an ended actor (``forget_actor``) costs
    O(names of that actor) and forgetting a lost worker (``forget_address``) O(names cached at
    that address): ending one agent among 100,000 cached names no longer walks them all.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], ActorInfo] = {}
        # An actor's key, or a set of its keys in the rare case it has several: a worker that
        # caches 100,000 names keeps no set per name.
        self._keys_of: dict[ActorId, tuple[str, str] | set[tuple[str, str]]] = {}
        self._at: dict[str, set[ActorId]] = {}

    def __repr__(self) -> str:
        return f"<NameCache names={len(self._by_key)} addresses={len(self._at)}>"

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __getitem__(self, key: tuple[str, str]) -> ActorInfo:
        return self._by_key[key]

    def get(self, key: tuple[str, str]) -> ActorInfo | None:
        return self._by_key.get(key)

    def __setitem__(self, key: tuple[str, str], info: ActorInfo) -> None:
        old = self._by_key.get(key)
        if old is not None:
            self._drop(key, old)
        self._by_key[key] = info
        keys = self._keys_of.get(info.actor_id)
        if keys is None:
            self._keys_of[info.actor_id] = key
        elif isinstance(keys, set):
            keys.add(key)
        elif keys != key:
            self._keys_of[info.actor_id] = {keys, key}
        self._at.setdefault(info.address, set()).add(info.actor_id)

    def forget_actor(self, actor_id: ActorId) -> None:
        keys = self._keys_of.pop(actor_id, None)
        for key in () if keys is None else keys if isinstance(keys, set) else (keys,):
            info = self._by_key.pop(key, None)
            if info is not None:
                self._unplace(info)

    def forget_address(self, address: str) -> None:
        for actor_id in list(self._at.get(address, ())):
            self.forget_actor(actor_id)

    def _drop(self, key: tuple[str, str], info: ActorInfo) -> None:
        del self._by_key[key]
        keys = self._keys_of.get(info.actor_id)
        if isinstance(keys, set):
            keys.discard(key)
            if not keys:
                del self._keys_of[info.actor_id]
                self._unplace(info)
        elif keys == key:
            del self._keys_of[info.actor_id]
            self._unplace(info)

    def _unplace(self, info: ActorInfo) -> None:
        at = self._at.get(info.address)
        if at is not None:
            at.discard(info.actor_id)
            if not at:
                del self._at[info.address]
