"""The cluster's name registry: atomic get-or-create of actor names per namespace.

Every name is held by one actor (``ActorInfo``: id and address). The registry also remembers,
for each name, the *claimer*: the process that registered it (an opaque hashable key, the
head's link to that process), until that process is gone. A claim whose creator dies before
the actor exists would otherwise hold the name for good, so ``claimer_gone(key)`` hands back
the names that process claimed; the caller (the head) asks their workers which actors exist
and frees the others with ``actor_ended``.

A name outlives its actor's process when the actor may come back under the same id
(``worker_gone``: restarts left, and someone to restart it): a lookup made while it restarts
finds it at its old address, and the sender waits for the new one (``_runtime/restartwait.py``,
handles follow on their own) rather than hearing that no such name exists. Its next
incarnation registers it again; the caller frees it (``release_if_at``) if none does within
RESTART_HOLD_S.

Costs: ``register``, ``lookup``, ``actor_ended`` are O(1); ``address_gone(address)``,
``worker_gone(address)`` and ``claimer_gone(key)`` are O(names at that address / claimed by
that key), through an index each: no operation walks every name.
"""

from __future__ import annotations

from collections.abc import Hashable

import attrs

from .._protocol.ids import ActorId
from .._protocol.messages import ActorInfo
from .._protocol.namebatch import kind_of, of_kind
from .groups import Groups

__all__ = [
    "DEFAULT_NAMESPACE",
    "RESTART_HOLD_S",
    "CachedName",
    "NameCache",
    "NameRegistry",
    "RegisterResult",
]

DEFAULT_NAMESPACE = "default"
# How long the name of an actor whose process died is held for its next incarnation (as long
# as a send by name waits for a restarting actor: restartwait.RESTART_WAIT_S).
RESTART_HOLD_S = 60.0

# How the tables below hold a name: the bare name in the default namespace (most names: no
# tuple of its own per name, ~56 bytes each at 100,000 names), a (namespace, name) pair
# elsewhere. A namespace is never a bare name's rival: a str key never equals a tuple key.
_Key = str | tuple[str, str]


def _key(namespace: str | None, name: str) -> _Key:
    if not namespace or namespace == DEFAULT_NAMESPACE:
        return name
    return (namespace, name)


def _pair(key: _Key) -> tuple[str, str]:
    return (DEFAULT_NAMESPACE, key) if isinstance(key, str) else key


# What the registry holds for a name: its actor, or, for a name claimed in a batch
# (``claim_kind``: 100,000 in a row), the actor's kind (an ActorInfo shared by its batch,
# ``namebatch.kind_of``) and its id: a pair of 56 bytes, not an ActorInfo of 136 each. The
# ActorInfo is made again (``namebatch.of_kind``) when asked for.
_Held = ActorInfo | tuple[ActorInfo, ActorId]


def _info(key: _Key, held: _Held) -> ActorInfo:
    if isinstance(held, ActorInfo):
        return held
    kind, actor_id = held
    return of_kind(kind, actor_id, key if isinstance(key, str) else key[1])


@attrs.frozen
class RegisterResult:
    actor: ActorInfo | None  # the actor holding the name after the call
    created: bool  # True if the proposed actor got the name
    error: str | None = None


class NameRegistry:
    def __init__(self) -> None:
        self._by_name: dict[_Key, _Held] = {}
        self._by_actor: dict[ActorId, _Key] = {}
        self._claimer: dict[ActorId, Hashable] = {}
        # Lists, not a set per group: groups.py (~60 bytes less per name and index).
        self._by_address: Groups[str, ActorId] = Groups(self._is_at)
        self._by_claimer: Groups[Hashable, ActorId] = Groups(self._is_claimed_by)

    def _is_at(self, actor_id: ActorId, address: str) -> bool:
        key = self._by_actor.get(actor_id)
        held = None if key is None else self._by_name.get(key)
        if held is None:
            return False
        return (held if isinstance(held, ActorInfo) else held[0]).address == address

    def _is_claimed_by(self, actor_id: ActorId, claimer: Hashable) -> bool:
        held = self._claimer.get(actor_id)
        return held is not None and held == claimer

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
        key = _key(actor.namespace, actor.name)
        held = self._by_name.get(key)
        existing = None if held is None else _info(key, held)
        if existing is not None and existing.actor_id == actor.actor_id:
            # A restarted actor: same id, new address, perhaps a new owner (restarted by the
            # head, None: it stays its first claimer's, who still hears when it ends).
            if claimer is None:
                claimer = self._claimer.get(actor.actor_id)
            self._unindex(existing)
            self._by_name[key] = actor
            self._index(actor, claimer)
            return RegisterResult(actor, True)
        if existing is not None:
            if get_if_exists:
                return RegisterResult(existing, False)
            namespace, name = _pair(key)
            return RegisterResult(
                existing,
                False,
                f"the name {name!r} is already taken in namespace {namespace!r} by a live "
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
        key = _key(actor.namespace, actor.name or "")
        if not actor.name or key in self._by_name:
            return self.register(actor, False, claimer).actor or actor
        self._by_name[key] = actor
        self._by_actor[actor.actor_id] = key
        self._index(actor, claimer)
        return None

    def claim_kind(self, kind: ActorInfo, actor_id: ActorId, name: str, claimer: Hashable) -> bool:
        """``claim`` of the actor ``namebatch.of_kind(kind, actor_id, name)`` (a ClaimNames's),
        kept as (kind, id): True if it now holds its name; False, and nothing done, if the
        name is taken or empty (``register`` tells why)."""
        key = _key(kind.namespace, name)
        if not name or key in self._by_name:
            return False
        self._by_name[key] = (kind, actor_id)
        self._by_actor[actor_id] = key
        self._by_address.add(kind.address, actor_id)
        self._claimer[actor_id] = claimer
        self._by_claimer.add(claimer, actor_id)
        return True

    def lookup(self, name: str, namespace: str | None) -> ActorInfo | None:
        key = _key(namespace, name)
        held = self._by_name.get(key)
        return None if held is None else _info(key, held)

    def get(self, actor_id: ActorId) -> ActorInfo | None:
        """The named actor with this id, if it still holds its name."""
        key = self._by_actor.get(actor_id)
        if key is None:
            return None
        held = self._by_name.get(key)
        return None if held is None else _info(key, held)

    def claimer(self, actor_id: ActorId) -> Hashable | None:
        """The process that claimed the name ``actor_id`` holds, while it is there."""
        return self._claimer.get(actor_id)

    def actor_ended(self, actor_id: ActorId) -> ActorInfo | None:
        """Free the name of ``actor_id`` (no effect if it holds none)."""
        key = self._by_actor.pop(actor_id, None)
        if key is None:
            return None
        held = self._by_name.pop(key, None)
        if held is None:
            return None
        info = _info(key, held)
        self._unindex(info)
        return info

    def address_gone(self, address: str) -> list[ActorInfo]:
        """Free the names of every actor that lived at ``address`` (its process is gone)."""
        gone = [self.get(aid) for aid in self._by_address.members(address)]
        for info in gone:
            if info is not None:
                self.actor_ended(info.actor_id)
        return [info for info in gone if info is not None]

    def worker_gone(self, address: str) -> tuple[list[ActorInfo], list[ActorInfo]]:
        """The process at ``address`` is gone: the names it freed, and those it holds for the
        next incarnation of their actor, which registers them again under the same id. Held:
        an actor with restarts left (``max_restarts``) that is detached (the head restarts
        it) or whose claimer (its owner, which restarts it) is still here."""
        freed, held = [], []
        for info in [self.get(aid) for aid in self._by_address.members(address)]:
            if info is None:
                continue
            aid = info.actor_id
            if info.max_restarts != 0 and (info.detached or aid in self._claimer):
                held.append(info)
            else:
                self.actor_ended(aid)
                freed.append(info)
        return freed, held

    def release_if_at(self, actor_id: ActorId, address: str) -> bool:
        """Free the name of ``actor_id`` if it is still at ``address`` (held by
        ``worker_gone``, and not registered again since)."""
        info = self.get(actor_id)
        if info is None or info.address != address:
            return False
        self.actor_ended(actor_id)
        return True

    def claimer_gone(self, claimer: Hashable) -> list[ActorInfo]:
        """The names ``claimer`` registered that are still held; from now on they are nobody's
        claim. The caller frees those whose actor does not exist (``actor_ended``)."""
        ids = self._by_claimer.pop(claimer)
        claimed = []
        for aid in ids:
            self._claimer.pop(aid, None)
            info = self.get(aid)
            if info is not None:
                claimed.append(info)
        return claimed

    def names(self) -> list[ActorInfo]:
        return [_info(key, held) for key, held in self._by_name.items()]

    def _index(self, info: ActorInfo, claimer: Hashable | None) -> None:
        self._by_address.add(info.address, info.actor_id)
        if claimer is not None:
            self._claimer[info.actor_id] = claimer
            self._by_claimer.add(claimer, info.actor_id)

    def _unindex(self, info: ActorInfo) -> None:
        # (Every caller has indexed ``info`` before: each add is matched by one remove.)
        self._by_address.remove(info.address, info.actor_id)
        claimer = self._claimer.pop(info.actor_id, None)
        if claimer is not None:
            self._by_claimer.remove(claimer, info.actor_id)


class CachedName:
    """What a name cache holds of an actor it looked up: its id and its kind (``of``: an
    ActorInfo with no id nor name, shared by every cached actor of the same kind, i.e. of
    ``namebatch.kind_of``), not an ActorInfo of its own (136 bytes, with its own copy of the
    name). A worker that sent to 70,000 agents by name keeps one of these each (48 bytes).

    Reads like an ActorInfo for what a send needs (``actor_id``, ``address``, ``kind``):
    the full ActorInfo is made again (``NameCache.get``) only where one is needed."""

    __slots__ = ("actor_id", "of")

    def __init__(self, of: ActorInfo, actor_id: ActorId) -> None:
        self.of = of
        self.actor_id = actor_id

    @property
    def address(self) -> str:
        return self.of.address

    @property
    def kind(self) -> str:
        return self.of.kind

    def __repr__(self) -> str:
        return f"<CachedName {self.of.label} {self.actor_id.hex()} at {self.of.address}>"


# What a name cache holds for a name: the ActorInfo a creator holds anyway (its handle's),
# or a CachedName for one it looked up.
Held = ActorInfo | CachedName


class NameCache:
    """A process's cache of the names it looked up or registered: ``(namespace, name) ->
    ActorInfo``, read like a dict.

    Indexed by actor id and by address, so forgetting an ended actor (``forget_actor``) costs
    O(names of that actor) and forgetting a lost worker (``forget_address``) O(names cached at
    that address): ending one agent among 100,000 cached names no longer walks them all.

    Small per name (issue 13: a worker caches every name its agents sent to): a looked-up
    actor is kept as a CachedName (``cache``), its kind shared; ``held`` reads an entry as it
    is (the send path: no ActorInfo made per message), ``get`` as an ActorInfo.
    """

    def __init__(self) -> None:
        # Keyed by ``_key``: the bare name in the default namespace.
        self._by_key: dict[_Key, Held] = {}
        # An actor's key, or a set of its keys in the rare case it has several: a worker that
        # caches 100,000 names keeps no set per name.
        self._keys_of: dict[ActorId, _Key | set[_Key]] = {}
        self._at: Groups[str, ActorId] = Groups(self._is_at)
        # The kinds of the CachedNames (``namebatch.kind_of`` -> an ActorInfo of that kind
        # with no id nor name): a few per address, dropped with their address.
        self._kinds: dict[tuple[object, ...], ActorInfo] = {}

    def _is_at(self, actor_id: ActorId, address: str) -> bool:
        keys = self._keys_of.get(actor_id)
        for key in () if keys is None else keys if isinstance(keys, set) else (keys,):
            held = self._by_key.get(key)
            if held is not None and held.address == address:
                return True
        return False

    def __repr__(self) -> str:
        return (
            f"<NameCache names={len(self._by_key)} addresses={len(self._at)} "
            f"kinds={len(self._kinds)}>"
        )

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and _key(*key) in self._by_key

    def __getitem__(self, key: tuple[str, str]) -> ActorInfo:
        info = self.get(key)
        if info is None:
            raise KeyError(key)
        return info

    def held(self, namespace: str, name: str) -> Held | None:
        """What the cache holds for ``name`` in ``namespace``, as it is (an ActorInfo or a
        CachedName: both have ``actor_id``, ``address`` and ``kind``). Every send by name
        comes here: ``_key`` inlined (a str's hash is cached, a tuple's is not)."""
        if namespace == DEFAULT_NAMESPACE:
            return self._by_key.get(name)
        return self._by_key.get(_key(namespace, name))

    def get(self, key: tuple[str, str]) -> ActorInfo | None:
        namespace, name = key
        held = self.held(namespace, name)
        if held is None or type(held) is ActorInfo:
            return held
        assert isinstance(held, CachedName)
        return of_kind(held.of, held.actor_id, name)

    def __setitem__(self, pair: tuple[str, str], info: ActorInfo) -> None:
        """Cache ``info`` itself: what its creator (or owner) holds anyway."""
        self._put(_key(*pair), info)

    def cache(
        self, pair: tuple[str, str], info: ActorInfo, actor_id: ActorId | None = None
    ) -> None:
        """Cache the actor ``info`` that a lookup found, as a CachedName: ``info`` itself
        (and its copy of the name) is not kept. ``actor_id``: its id as an object this
        process keeps anyway (an agent it hosts: its slot's), kept instead of ``info``'s."""
        kind = kind_of(info)
        of = self._kinds.get(kind)
        if of is None:
            of = self._kinds[kind] = of_kind(info, ActorId(b""), None)
        self._put(_key(*pair), CachedName(of, info.actor_id if actor_id is None else actor_id))

    def _put(self, key: _Key, held: Held) -> None:
        old = self._by_key.get(key)
        if old is not None:
            self._drop(key, old)
        self._by_key[key] = held
        keys = self._keys_of.get(held.actor_id)
        if keys is None:
            self._keys_of[held.actor_id] = key
        elif isinstance(keys, set):
            keys.add(key)
        elif keys != key:
            self._keys_of[held.actor_id] = {keys, key}
        self._at.add(held.address, held.actor_id)

    def info_of(self, actor_id: ActorId) -> ActorInfo | None:
        """What this cache holds of ``actor_id`` under one of its names, if any."""
        keys = self._keys_of.get(actor_id)
        for key in () if keys is None else keys if isinstance(keys, set) else (keys,):
            return self.get(_pair(key))
        return None

    def forget_actor(self, actor_id: ActorId) -> None:
        keys = self._keys_of.pop(actor_id, None)
        for key in () if keys is None else keys if isinstance(keys, set) else (keys,):
            held = self._by_key.pop(key, None)
            if held is not None:
                self._unplace(held)

    def forget_address(self, address: str) -> None:
        for actor_id in self._at.members(address):
            self.forget_actor(actor_id)
        # (O(kinds): a few per address)
        self._kinds = {k: of for k, of in self._kinds.items() if of.address != address}

    def _drop(self, key: _Key, held: Held) -> None:
        del self._by_key[key]
        keys = self._keys_of.get(held.actor_id)
        if isinstance(keys, set):
            keys.discard(key)
            if not keys:
                del self._keys_of[held.actor_id]
        elif keys == key:
            del self._keys_of[held.actor_id]
        self._unplace(held)

    def _unplace(self, held: Held) -> None:
        # One ``_at`` entry per cached key: each key's entry added once, removed once.
        self._at.remove(held.address, held.actor_id)
