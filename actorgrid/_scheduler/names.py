"""The cluster's name registry: atomic get-or-create of actor names per namespace."""

from __future__ import annotations

import attrs

from .._protocol.ids import ActorId
from .._protocol.messages import ActorInfo

__all__ = ["DEFAULT_NAMESPACE", "NameRegistry", "RegisterResult"]

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

    def __len__(self) -> int:
        return len(self._by_name)

    def register(self, actor: ActorInfo, get_if_exists: bool) -> RegisterResult:
        if not actor.name:
            return RegisterResult(None, False, "an actor needs a non-empty name to register")
        key = (actor.namespace or DEFAULT_NAMESPACE, actor.name)
        existing = self._by_name.get(key)
        if existing is not None and existing.actor_id == actor.actor_id:
            self._by_name[key] = actor  # a restarted actor: same id, new address
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
        return RegisterResult(actor, True)

    def lookup(self, name: str, namespace: str | None) -> ActorInfo | None:
        return self._by_name.get((namespace or DEFAULT_NAMESPACE, name))

    def actor_ended(self, actor_id: ActorId) -> ActorInfo | None:
        key = self._by_actor.pop(actor_id, None)
        return None if key is None else self._by_name.pop(key, None)

    def address_gone(self, address: str) -> list[ActorInfo]:
        """Free the names of every actor that lived at ``address`` (its process is gone)."""
        gone = [info for info in self._by_name.values() if info.address == address]
        for info in gone:
            self.actor_ended(info.actor_id)
        return gone

    def names(self) -> list[ActorInfo]:
        return list(self._by_name.values())
