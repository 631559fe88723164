"""The reference table: objects are freed exactly when nothing can reach them any more."""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actorgrid._protocol.ids import ObjectId
from actorgrid._scheduler.refcount import (
    AddBorrower,
    BorrowerAdded,
    BorrowerLost,
    BorrowerReleased,
    Command,
    Free,
    HoldAcked,
    LocalRefAdded,
    LocalRefDropped,
    Receipt,
    RefReceived,
    RefSent,
    RefTable,
    Release,
)

X = ObjectId(b"x" * 16)


def test_an_object_never_sent_is_freed_when_its_last_local_entry_goes() -> None:
    owner = RefTable("o")
    assert owner.handle(LocalRefAdded(X, "o")) == []
    assert owner.handle(LocalRefAdded(X, "o")) == []
    assert owner.handle(LocalRefDropped(X)) == []
    assert owner.handle(LocalRefDropped(X)) == [Free(X)]
    assert X not in owner


def test_a_ref_in_flight_holds_the_object_until_the_receiver_is_counted() -> None:
    owner, worker = RefTable("o"), RefTable("w")
    owner.handle(LocalRefAdded(X, "o"))
    owner.handle(RefSent(X, "o", 1))
    assert owner.handle(LocalRefDropped(X)) == []  # the driver dropped its ref: still held
    commands = worker.handle(RefReceived(X, "o", "o", 1, new_local=True))
    assert commands == [Receipt("o", X, "o", 1, borrows=True)]
    assert owner.handle(HoldAcked(X, "o", 1, "w")) == []  # now borrowed by w
    assert owner.borrowers(X) == {"w": 1}
    assert worker.handle(LocalRefDropped(X)) == [Release("o", X)]
    assert owner.handle(BorrowerReleased(X, "w")) == [Free(X)]


def test_a_borrower_that_passes_the_ref_on_forwards_the_new_borrower_before_releasing() -> None:
    a = RefTable("a")
    a.handle(RefReceived(X, "o", "o", 1, new_local=True))
    a.handle(RefSent(X, "o", 7))
    assert a.handle(LocalRefDropped(X)) == []  # its hold keeps its borrow
    commands = a.handle(HoldAcked(X, "o", 7, "b"))
    assert commands == [AddBorrower("o", X, "b"), Release("o", X)]


def test_a_release_that_overtakes_its_add_does_not_free_the_object_early() -> None:
    owner = RefTable("o")
    owner.handle(LocalRefAdded(X, "o"))
    owner.handle(RefSent(X, "o", 1))
    owner.handle(HoldAcked(X, "o", 1, "a"))  # a borrows
    assert owner.handle(BorrowerReleased(X, "b")) == []  # b's release came first: -1
    assert owner.handle(BorrowerAdded(X, "b")) == []  # then a's forwarded add: 0
    owner.handle(LocalRefDropped(X))
    assert owner.handle(BorrowerReleased(X, "a")) == [Free(X)]


def test_a_borrower_that_dies_releases_its_borrows() -> None:
    owner = RefTable("o")
    owner.handle(LocalRefAdded(X, "o"))
    owner.handle(RefSent(X, "o", 1))
    owner.handle(HoldAcked(X, "o", 1, "w"))
    owner.handle(LocalRefDropped(X))
    assert owner.handle(BorrowerLost("somebody else")) == []
    assert owner.handle(BorrowerLost("w")) == [Free(X)]
    assert owner.handle(BorrowerReleased(X, "w")) == []  # late news of a freed object


def test_a_receipt_before_its_ref_sent_and_a_second_receipt_hold_nothing() -> None:
    owner = RefTable("o")
    owner.handle(LocalRefAdded(X, "o"))
    owner.handle(HoldAcked(X, "o", 5, None))  # handled before its RefSent
    owner.handle(RefSent(X, "o", 5))
    owner.handle(RefSent(X, "o", 6))
    owner.handle(HoldAcked(X, "o", 6, None))
    owner.handle(HoldAcked(X, "o", 6, None))  # a result unpickled twice
    assert owner.handle(LocalRefDropped(X)) == [Free(X)]


def test_a_ref_pickled_and_unpickled_in_one_process_is_its_own_receipt() -> None:
    owner = RefTable("o")
    owner.handle(LocalRefAdded(X, "o"))
    owner.handle(RefSent(X, "o", 1))
    assert owner.handle(RefReceived(X, "o", "o", 1, new_local=False)) == []
    assert owner.handle(LocalRefDropped(X)) == [Free(X)]


PROCESSES = ("p0", "p1", "p2", "p3")


class RefProtocol(RuleBasedStateMachine):
    """Processes pass refs over FIFO links (one per ordered pair, as TCP connections are) in
    any interleaving; the model knows what every process holds and what every link carries."""

    def __init__(self) -> None:
        super().__init__()
        self.tables = {p: RefTable(p) for p in PROCESSES}
        self.links: dict[tuple[str, str], deque[tuple[Any, ...]]] = {}
        self.local: dict[tuple[str, ObjectId], int] = {}  # live local entries
        self.owner: dict[ObjectId, str] = {}
        self.freed: set[ObjectId] = set()
        self.token = 0

    # --- the model's view ----------------------------------------------------------------

    def reachable(self, object_id: ObjectId) -> bool:
        if any(n > 0 for (_, o), n in self.local.items() if o == object_id):
            return True
        return any(
            m[0] == "ref" and m[1] == object_id for link in self.links.values() for m in link
        )

    def held(self) -> list[tuple[str, ObjectId]]:
        return sorted(k for k, n in self.local.items() if n > 0)

    def busy_links(self) -> list[tuple[str, str]]:
        return sorted(k for k, v in self.links.items() if v)

    def post(self, src: str, dst: str, message: tuple[Any, ...]) -> None:
        self.links.setdefault((src, dst), deque()).append(message)

    def run(self, process: str, commands: list[Command]) -> None:
        for c in commands:
            if isinstance(c, Free):
                assert self.owner[c.object_id] == process, "freed by a process not its owner"
                assert c.object_id not in self.freed, "freed twice"
                assert not self.reachable(c.object_id), "freed while still reachable"
                self.freed.add(c.object_id)
            elif isinstance(c, Receipt):
                borrower = process if c.borrows else None
                self.post(process, c.sender, ("receipt", c.object_id, c.owner, c.token, borrower))
            elif isinstance(c, AddBorrower):
                self.post(process, c.owner, ("add", c.object_id, c.borrower))
            elif isinstance(c, Release):
                self.post(process, c.owner, ("release", c.object_id, process))

    # --- rules ---------------------------------------------------------------------------

    @rule(owner=st.sampled_from(PROCESSES))
    def create(self, owner: str) -> None:
        object_id = ObjectId(len(self.owner).to_bytes(16, "big"))
        self.owner[object_id] = owner
        self.local[owner, object_id] = 1
        self.run(owner, self.tables[owner].handle(LocalRefAdded(object_id, owner)))

    @precondition(lambda self: self.held())
    @rule(data=st.data(), to=st.sampled_from(PROCESSES))
    def send(self, data: st.DataObject, to: str) -> None:
        process, object_id = data.draw(st.sampled_from(self.held()))
        self.token += 1
        owner = self.owner[object_id]
        self.run(process, self.tables[process].handle(RefSent(object_id, owner, self.token)))
        self.post(process, to, ("ref", object_id, owner, process, self.token))

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        process, object_id = data.draw(st.sampled_from(self.held()))
        self.local[process, object_id] -= 1
        self.run(process, self.tables[process].handle(LocalRefDropped(object_id)))

    @precondition(lambda self: self.busy_links())
    @rule(data=st.data(), extra_entry=st.booleans())
    def deliver(self, data: st.DataObject, extra_entry: bool) -> None:
        src, dst = data.draw(st.sampled_from(self.busy_links()))
        self.deliver_one(src, dst, extra_entry)

    def deliver_one(self, src: str, dst: str, extra_entry: bool = False) -> None:
        message = self.links[src, dst].popleft()
        table = self.tables[dst]
        kind, object_id = message[0], message[1]
        if kind == "ref":
            _, _, owner, sender, token = message
            assert object_id not in self.freed, "a ref arrived for a freed object"
            # A process makes a new entry when it has none (or, racing, a second one).
            new_local = self.local.get((dst, object_id), 0) == 0 or extra_entry
            if new_local:
                self.local[dst, object_id] = self.local.get((dst, object_id), 0) + 1
            event: Any = RefReceived(object_id, owner, sender, token, new_local)
        elif kind == "receipt":
            _, _, owner, token, borrower = message
            event = HoldAcked(object_id, owner, token, borrower)
        elif kind == "add":
            event = BorrowerAdded(object_id, message[2])
        else:
            event = BorrowerReleased(object_id, message[2])
        self.run(dst, table.handle(event))

    @invariant()
    def freed_objects_are_unreachable(self) -> None:
        for object_id in self.freed:
            assert not self.reachable(object_id)

    def teardown(self) -> None:
        # Quiesce: deliver everything in flight, then every object is freed exactly when
        # nothing holds it.
        while busy := self.busy_links():
            self.deliver_one(*busy[0])
        for object_id in self.owner:
            assert (object_id in self.freed) == (not self.reachable(object_id)), object_id
        for process, table in self.tables.items():
            # Nothing lingers: a table knows what its process holds, or owns and others hold.
            live = {o for (p, o), n in self.local.items() if p == process and n > 0}
            live |= {o for o, p in self.owner.items() if p == process and self.reachable(o)}
            assert len(table) == len(live), (process, table)


RefProtocol.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
test_ref_protocol = RefProtocol.TestCase
