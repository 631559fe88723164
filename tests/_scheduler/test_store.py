"""The node store's decisions: capacity, eviction of cached copies, spilling of primaries."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actorgrid._scheduler.store import (
    Command,
    Created,
    Delete,
    Evict,
    Freed,
    OwnerGone,
    Read,
    Spill,
    SpillDone,
    StoreState,
)


def test_a_store_under_capacity_moves_nothing() -> None:
    store = StoreState(100)
    assert store.handle(Created("a", 40)) == []
    assert store.handle(Created("b", 60)) == []
    assert store.statistics().used == 100


def test_cached_copies_are_evicted_before_any_primary_is_spilled() -> None:
    store = StoreState(100)
    store.handle(Created("p", 50))
    store.handle(Created("c1", 20, primary=False))
    store.handle(Created("c2", 20, primary=False))
    store.handle(Read("c1"))  # c2 is now the least recently used cached copy
    assert store.handle(Created("p2", 20)) == [Evict("c2")]
    assert store.where("c2") is None and store.where("c1") == "memory"


def test_primaries_spill_oldest_first_and_are_read_from_disk_afterwards() -> None:
    store = StoreState(100)
    store.handle(Created("old", 60))
    store.handle(Created("new", 30))
    assert store.handle(Created("newest", 30)) == [Spill("old")]
    assert store.where("old") == "memory"  # until the copy is done
    assert store.handle(SpillDone("old")) == []
    assert store.where("old") == "disk"
    stats = store.statistics()
    assert (stats.used, stats.spilled, stats.spilled_bytes) == (60, 1, 60)
    assert store.handle(Freed("old")) == [Delete("old")]
    assert store.where("old") is None


def test_an_object_freed_while_it_spills_is_deleted_when_the_spill_ends() -> None:
    store = StoreState(10)
    assert store.handle(Created("a", 20)) == [Spill("a")]  # larger than the whole store
    assert store.handle(Freed("a")) == []
    assert store.handle(SpillDone("a")) == [Delete("a")]
    assert store.statistics().used == 0


def test_a_failed_spill_keeps_the_object_in_memory() -> None:
    store = StoreState(10)
    store.handle(Created("a", 20))
    assert store.handle(SpillDone("a", ok=False)) == []
    assert store.where("a") == "memory"
    assert store.handle(Created("b", 1)) == [Spill("a")]  # tried again


def test_a_capacity_that_is_not_positive_is_refused_with_the_option_name() -> None:
    try:
        StoreState(0)
    except ValueError as exc:
        assert "object_store_memory" in str(exc)
    else:
        raise AssertionError("StoreState(0) was accepted")


NAMES = st.sampled_from([f"o{i}" for i in range(8)])


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = StoreState(100)
        self.memory: dict[str, tuple[int, bool]] = {}  # what the shell has in memory
        self.disk: set[str] = set()
        self.spilling: set[str] = set()
        self.freed: set[str] = set()  # freed and not created again
        self.deleted: list[str] = []
        self.owner: dict[str, int] = {}

    def run(self, commands: list[Command]) -> None:
        for c in commands:
            assert c.name not in self.freed or isinstance(c, Delete), c
            if isinstance(c, Spill):
                assert c.name in self.memory and self.memory[c.name][1], "only primaries spill"
                assert c.name not in self.spilling
                self.spilling.add(c.name)
            elif isinstance(c, Evict):
                assert c.name in self.memory and not self.memory[c.name][1], "only cached evict"
                del self.memory[c.name]
            else:
                self.deleted.append(c.name)
                self.memory.pop(c.name, None)
                self.disk.discard(c.name)

    @rule(name=NAMES, size=st.integers(1, 80), primary=st.booleans(), owner=st.integers(0, 2))
    def create(self, name: str, size: int, primary: bool, owner: int) -> None:
        if name in self.memory or name in self.disk or name in self.spilling:
            return
        self.freed.discard(name)
        self.memory[name] = (size, primary)
        self.owner[name] = owner
        self.run(self.store.handle(Created(name, size, primary, owner)))

    @rule(name=NAMES)
    def free(self, name: str) -> None:
        known = name in self.memory or name in self.disk or name in self.spilling
        before = self.deleted.count(name)
        self.run(self.store.handle(Freed(name)))
        if known and name not in self.spilling:
            assert self.deleted.count(name) == before + 1
        if known:
            self.freed.add(name)

    @rule(owner=st.integers(1, 2))
    def owner_gone(self, owner: int) -> None:
        owned = [
            n
            for n, o in self.owner.items()
            if o == owner and n not in self.freed and (n in self.memory or n in self.disk)
        ]
        before = {n: self.deleted.count(n) for n in owned}
        self.run(self.store.handle(OwnerGone(owner)))
        for name in owned:
            if name not in self.spilling:
                assert self.deleted.count(name) == before[name] + 1, name
            self.freed.add(name)

    @rule(name=NAMES)
    def read(self, name: str) -> None:
        self.run(self.store.handle(Read(name)))

    @rule(name=NAMES, ok=st.booleans())
    def spill_done(self, name: str, ok: bool) -> None:
        if name not in self.spilling:
            assert self.store.handle(SpillDone(name, ok)) == []  # a stray report moves nothing
            return
        self.spilling.discard(name)
        before = self.deleted.count(name)
        commands = self.store.handle(SpillDone(name, ok))
        if name in self.freed:
            assert commands[:1] == [Delete(name)], "freed while spilling: deleted at the end"
            assert self.deleted.count(name) == before
        elif ok:
            del self.memory[name]
            self.disk.add(name)
        self.run(commands)

    @invariant()
    def used_is_what_memory_holds(self) -> None:
        assert self.store.used == sum(size for size, _ in self.memory.values())

    @invariant()
    def memory_fits_unless_everything_is_leaving(self) -> None:
        leaving = sum(self.memory[n][0] for n in self.spilling if n in self.memory)
        staying = [n for n in self.memory if n not in self.spilling]
        if self.store.used - leaving > self.store.capacity:
            # Only when a failed spill left a primary behind: the next creation retries.
            assert all(self.memory[n][1] for n in staying)

    @invariant()
    def where_agrees(self) -> None:
        for name in self.memory:
            assert self.store.where(name) == "memory"
        for name in self.disk:
            assert self.store.where(name) == "disk"


StoreMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
test_store_machine = StoreMachine.TestCase
