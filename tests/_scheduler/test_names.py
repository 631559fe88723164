"""NameRegistry, the head's atomic get-or-create of actor names, as a plain object, checked
against a dict model by a Hypothesis state machine (names, restarts at a new address, the
processes that claimed them), plus a few worked examples."""

from __future__ import annotations

import itertools

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from actorgrid._protocol.ids import ActorId
from actorgrid._protocol.messages import ActorInfo
from actorgrid._protocol.namebatch import of_kind
from actorgrid._scheduler.names import DEFAULT_NAMESPACE, NameRegistry

_ids = itertools.count(1)


def actor(
    name: str | None, namespace: str | None = None, address: str = "127.0.0.1:1"
) -> ActorInfo:
    return ActorInfo(
        ActorId(next(_ids).to_bytes(16, "big")), address, "class", "Cls", name, namespace
    )


# --- examples -----------------------------------------------------------------------------------------


def test_register_lookup_and_namespaces() -> None:
    registry = NameRegistry()
    a = actor("a")
    result = registry.register(a, get_if_exists=False)
    assert (result.actor, result.created, result.error) == (a, True, None)
    assert registry.lookup("a", None) == a
    assert registry.lookup("a", DEFAULT_NAMESPACE) == a
    assert registry.lookup("a", "other") is None
    other = actor("a", "other")
    assert registry.register(other, get_if_exists=False).created
    assert registry.lookup("a", "other") == other
    assert len(registry) == 2


def test_taken_name_without_get_if_exists_is_an_error_naming_it() -> None:
    registry = NameRegistry()
    first = actor("shared", "ns")
    registry.register(first, get_if_exists=False)
    result = registry.register(actor("shared", "ns"), get_if_exists=False)
    assert result.actor == first
    assert not result.created
    assert result.error is not None
    assert "'shared'" in result.error
    assert "'ns'" in result.error
    assert "get_if_exists" in result.error
    reuse = registry.register(actor("shared", "ns"), get_if_exists=True)
    assert (reuse.actor, reuse.created, reuse.error) == (first, False, None)


def test_empty_name_is_refused() -> None:
    registry = NameRegistry()
    for name in (None, ""):
        result = registry.register(actor(name), get_if_exists=True)
        assert result.actor is None
        assert not result.created
        assert result.error is not None
    assert len(registry) == 0


def test_ended_actor_frees_its_name() -> None:
    registry = NameRegistry()
    a = actor("x")
    registry.register(a, get_if_exists=False)
    assert registry.actor_ended(a.actor_id) == a
    assert registry.actor_ended(a.actor_id) is None
    assert registry.lookup("x", None) is None
    b = actor("x")
    assert registry.register(b, get_if_exists=False).created


def test_refused_actor_ending_does_not_free_the_holder() -> None:
    registry = NameRegistry()
    holder, loser = actor("x"), actor("x")
    registry.register(holder, get_if_exists=False)
    registry.register(loser, get_if_exists=True)
    assert registry.actor_ended(loser.actor_id) is None
    assert registry.lookup("x", None) == holder


def test_address_gone_frees_every_name_there() -> None:
    registry = NameRegistry()
    here = [actor(f"h{i}", address="10.0.0.1:5") for i in range(3)]
    there = actor("t", address="10.0.0.2:5")
    for a in [*here, there]:
        registry.register(a, get_if_exists=False)
    assert sorted(registry.address_gone("10.0.0.1:5"), key=lambda a: a.name) == here
    assert registry.names() == [there]
    assert registry.address_gone("10.0.0.1:5") == []


def test_a_gone_worker_holds_the_names_of_actors_that_come_back_until_released() -> None:
    registry = NameRegistry()
    gone = "10.0.0.1:5"
    plain = actor("plain", address=gone)
    owned = attrs.evolve(actor("owned", address=gone), max_restarts=1)
    orphan = attrs.evolve(actor("orphan", address=gone), max_restarts=-1)
    detached = attrs.evolve(actor("detached", address=gone), max_restarts=2, detached=True)
    registry.register(plain, get_if_exists=False, claimer="driver")
    registry.register(owned, get_if_exists=False, claimer="driver")
    registry.register(orphan, get_if_exists=False, claimer="left")
    registry.register(detached, get_if_exists=False)
    registry.claimer_gone("left")  # nobody is left to restart the orphan
    freed, held = registry.worker_gone(gone)
    assert sorted(a.name or "" for a in freed) == ["orphan", "plain"]
    assert sorted(a.name or "" for a in held) == ["detached", "owned"]
    # Held: a lookup finds it where it was, until its next incarnation registers it again.
    assert registry.lookup("owned", None) == owned
    assert registry.lookup("plain", None) is None
    moved = attrs.evolve(owned, address="10.0.0.2:5", max_restarts=0)
    assert registry.register(moved, get_if_exists=False, claimer="driver").created
    assert not registry.release_if_at(owned.actor_id, gone)  # (it came back: kept)
    assert registry.lookup("owned", None) == moved
    assert registry.release_if_at(detached.actor_id, gone)  # not back in time: freed
    assert registry.lookup("detached", None) is None
    assert registry.worker_gone("10.0.0.2:5") == ([moved], [])  # no restarts left


def test_a_gone_claimer_hands_back_only_its_own_held_claims() -> None:
    registry = NameRegistry()
    mine, theirs, ended = actor("mine"), actor("theirs"), actor("ended")
    registry.register(mine, get_if_exists=False, claimer="driver-1")
    registry.register(theirs, get_if_exists=False, claimer="driver-2")
    registry.register(ended, get_if_exists=False, claimer="driver-1")
    registry.actor_ended(ended.actor_id)
    # A get_if_exists that found the name taken is no claim of its own.
    registry.register(actor("theirs"), get_if_exists=True, claimer="driver-1")
    assert registry.claimer_gone("driver-1") == [mine]
    assert registry.claimer_gone("driver-1") == []  # handed back once
    assert registry.lookup("mine", None) == mine  # the caller decides whether to free it
    assert registry.claimer_gone("driver-2") == [theirs]


def test_a_restart_moves_the_name_to_its_new_address_and_owner() -> None:
    registry = NameRegistry()
    old = actor("svc", address="127.0.0.1:1")
    registry.register(old, get_if_exists=False, claimer="driver")
    new = attrs.evolve(old, address="127.0.0.1:2")
    assert registry.register(new, get_if_exists=False, claimer="restarter").created
    assert registry.address_gone("127.0.0.1:1") == []
    assert registry.claimer_gone("driver") == []
    assert registry.claimer_gone("restarter") == [new]
    assert registry.address_gone("127.0.0.1:2") == [new]
    assert len(registry) == 0


# --- stateful -----------------------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c"])
NAMESPACES = st.sampled_from([None, DEFAULT_NAMESPACE, "ns1", "ns2"])
ADDRESSES = st.sampled_from(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
CLAIMERS = st.sampled_from(["driver-1", "driver-2", "worker-1"])


class NameRegistryMachine(RuleBasedStateMachine):
    """The registry against a dict from (namespace, name) to the actor holding it."""

    proposed = Bundle("proposed")

    def __init__(self) -> None:
        super().__init__()
        self.registry = NameRegistry()
        self.model: dict[tuple[str, str], ActorInfo] = {}
        self.claims: dict[bytes, str] = {}  # actor id -> the live claimer of its name

    @rule(
        target=proposed,
        name=NAMES,
        namespace=NAMESPACES,
        address=ADDRESSES,
        get_if_exists=st.booleans(),
        claimer=CLAIMERS,
    )
    def register(
        self, name: str, namespace: str | None, address: str, get_if_exists: bool, claimer: str
    ) -> ActorInfo:
        info = actor(name, namespace, address)
        key = (namespace or DEFAULT_NAMESPACE, name)
        result = self.registry.register(info, get_if_exists, claimer)
        holder = self.model.get(key)
        if holder is None:
            assert (result.actor, result.created, result.error) == (info, True, None)
            self.model[key] = info
            self.claims[info.actor_id] = claimer
        else:
            assert result.actor == holder
            assert not result.created
            if get_if_exists:
                assert result.error is None
            else:
                assert result.error is not None
                assert repr(name) in result.error
        return info

    @rule(target=proposed, name=NAMES, namespace=NAMESPACES, address=ADDRESSES, claimer=CLAIMERS)
    def claim(self, name: str, namespace: str | None, address: str, claimer: str) -> ActorInfo:
        # A batched claim (ClaimNames): register without get_if_exists, holder or None.
        info = actor(name, namespace, address)
        key = (namespace or DEFAULT_NAMESPACE, name)
        holder = self.model.get(key)
        assert self.registry.claim(info, claimer) == holder
        if holder is None:
            self.model[key] = info
            self.claims[info.actor_id] = claimer
        return info

    @rule(target=proposed, name=NAMES, namespace=NAMESPACES, address=ADDRESSES, claimer=CLAIMERS)
    def claim_kind(self, name: str, namespace: str | None, address: str, claimer: str) -> ActorInfo:
        # A ClaimNames's claim, kept as its kind and id: the same actor comes back out.
        kind = actor("first-of-its-kind", namespace, address)
        info = of_kind(kind, actor(None).actor_id, name)
        key = (namespace or DEFAULT_NAMESPACE, name)
        holder = self.model.get(key)
        assert self.registry.claim_kind(kind, info.actor_id, name, claimer) == (holder is None)
        if holder is None:
            self.model[key] = info
            self.claims[info.actor_id] = claimer
        return info

    @rule(name=NAMES, namespace=NAMESPACES)
    def lookup(self, name: str, namespace: str | None) -> None:
        expected = self.model.get((namespace or DEFAULT_NAMESPACE, name))
        assert self.registry.lookup(name, namespace) == expected

    @rule(info=consumes(proposed))
    def actor_ended(self, info: ActorInfo) -> None:
        key = (info.namespace or DEFAULT_NAMESPACE, info.name)
        holder = self.model.get(key)
        holds = holder is not None and holder.actor_id == info.actor_id
        assert self.registry.actor_ended(info.actor_id) == (holder if holds else None)
        if holds:
            del self.model[key]
            self.claims.pop(info.actor_id, None)

    @rule(info=proposed, address=ADDRESSES, claimer=CLAIMERS)
    def restart(self, info: ActorInfo, address: str, claimer: str) -> None:
        key = (info.namespace or DEFAULT_NAMESPACE, info.name)
        holder = self.model.get(key)
        if holder is None or holder.actor_id != info.actor_id:
            return  # only the actor holding a name is restarted under it
        moved = attrs.evolve(holder, address=address)
        assert self.registry.register(moved, False, claimer).created
        self.model[key] = moved
        self.claims[moved.actor_id] = claimer

    @rule(claimer=CLAIMERS)
    def claimer_gone(self, claimer: str) -> None:
        expected = [v for v in self.model.values() if self.claims.get(v.actor_id) == claimer]
        claimed = self.registry.claimer_gone(claimer)
        assert sorted(claimed, key=lambda a: a.actor_id) == sorted(
            expected, key=lambda a: a.actor_id
        )
        for info in expected:
            del self.claims[info.actor_id]

    @rule(info=proposed)
    def actor_ended_twice(self, info: ActorInfo) -> None:
        # An ActorEnded may be repeated (e.g. kill and normal exit race): the second is a no-op.
        self.actor_ended(info)
        assert self.registry.actor_ended(info.actor_id) is None

    @rule(address=ADDRESSES)
    def address_gone(self, address: str) -> None:
        expected = {k: v for k, v in self.model.items() if v.address == address}
        gone = self.registry.address_gone(address)
        assert sorted(gone, key=lambda a: a.actor_id) == sorted(
            expected.values(), key=lambda a: a.actor_id
        )
        for key, info in expected.items():
            del self.model[key]
            self.claims.pop(info.actor_id, None)

    @invariant()
    def matches_model(self) -> None:
        assert len(self.registry) == len(self.model)
        assert sorted(self.registry.names(), key=lambda a: a.actor_id) == sorted(
            self.model.values(), key=lambda a: a.actor_id
        )

    @invariant()
    def indexes_hold_only_live_names(self) -> None:
        # No leak: every index entry is a name held now (so a long-lived head stays small).
        live = {v.actor_id for v in self.model.values()}
        indexes = (self.registry._by_address, self.registry._by_claimer)
        indexed = set().union(*(g.members(k) for g in indexes for k in g.groups()))
        assert indexed <= live
        for groups in indexes:  # stale ids are dropped as they pile up: no list outgrows
            for key, ids in groups._ids.items():  # twice its live members (plus some)
                assert len(ids) <= 2 * len(groups.members(key)) + 16 + 1
        assert set(self.registry._claimer) == set(self.claims) <= live


TestNameRegistry = NameRegistryMachine.TestCase
TestNameRegistry.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
