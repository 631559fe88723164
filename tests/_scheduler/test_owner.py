"""The owner state machine: every call resolves once, retries and restarts keep their limits,
cancels stick, a restarted actor gets its calls in order, objects are freed exactly when the
last reference goes."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actorgrid._protocol.ids import ActorId, ObjectId
from actorgrid._scheduler.owner import (
    ActorAdded,
    ActorDead,
    ActorRestarted,
    ActorRestartFailed,
    CallSubmitted,
    CancelRequested,
    Command,
    LinkDropped,
    OwnerState,
    PlaceTask,
    Resolve,
    RestartActor,
    ResultArrived,
    SendCall,
    SendCancel,
    TaskPlaced,
    TaskSubmitted,
    Why,
    WorkerGone,
)
from actorgrid._scheduler.refcount import (
    AddBorrower,
    BorrowerLost,
    BorrowerReleased,
    Free,
    HoldAcked,
    LeaseExpired,
    LocalRefAdded,
    LocalRefDropped,
    RefReceived,
    RefSent,
    Release,
)

ME = "me:1"
WORKERS = ("w:1", "w:2")
_ids = itertools.count()


def _oid() -> ObjectId:
    return ObjectId(next(_ids).to_bytes(16, "big"))


def _aid() -> ActorId:
    return ActorId(next(_ids).to_bytes(16, "big"))


def test_a_task_whose_worker_dies_is_placed_again_until_its_retries_run_out() -> None:
    owner, t = OwnerState(ME), _oid()
    assert owner.handle(TaskSubmitted(t, max_retries=1)) == [PlaceTask(t)]
    owner.handle(TaskPlaced(t, "w:1"))
    assert owner.handle(WorkerGone("w:1")) == [PlaceTask(t, retry=True)]
    owner.handle(TaskPlaced(t, "w:2"))
    assert owner.handle(WorkerGone("w:2")) == [Resolve(t, Why.WORKER_DIED)]
    assert not owner.pending(t)


def test_a_task_never_written_to_its_dead_worker_is_placed_again_for_free() -> None:
    owner, t = OwnerState(ME), _oid()
    owner.handle(TaskSubmitted(t, max_retries=0))
    owner.handle(TaskPlaced(t, "w:1"))
    assert owner.handle(WorkerGone("w:1", written=False)) == [PlaceTask(t, retry=True)]


def test_a_dropped_link_to_a_live_worker_fails_only_its_own_calls_and_keeps_the_actor() -> None:
    owner, a, t = OwnerState(ME), _aid(), _oid()
    c1, c2, after = _oid(), _oid(), _oid()
    owner.handle(ActorAdded(a, "w:1", max_restarts=0))
    owner.handle(CallSubmitted(c1, a, max_retries=3))
    owner.handle(CallSubmitted(c2, a))
    owner.handle(TaskSubmitted(t, max_retries=1))
    owner.handle(TaskPlaced(t, "w:1"))
    assert owner.handle(CallSubmitted(after, a)) == [SendCall(after, "w:1")]  # the new link
    assert owner.handle(LinkDropped("w:1", (c2, t, c1))) == [
        Resolve(c1, Why.LINK_DROPPED),  # in submission order; may have run: not re-sent
        Resolve(c2, Why.LINK_DROPPED),
        PlaceTask(t, retry=True),
    ]
    assert owner.pending(after)  # sent on the new link: still in flight
    late = _oid()
    assert owner.handle(CallSubmitted(late, a)) == [SendCall(late, "w:1")]  # still alive


def test_calls_to_a_restarting_actor_wait_and_reach_the_new_incarnation_in_order() -> None:
    owner, a = OwnerState(ME), _aid()
    c1, c2, c3 = _oid(), _oid(), _oid()
    owner.handle(ActorAdded(a, "w:1", max_restarts=1))
    assert owner.handle(CallSubmitted(c1, a, max_retries=1)) == [SendCall(c1, "w:1")]
    owner.handle(CallSubmitted(c2, a, max_retries=0))
    assert owner.handle(WorkerGone("w:1")) == [RestartActor(a), Resolve(c2, Why.ACTOR_DIED)]
    assert owner.handle(CallSubmitted(c3, a)) == []  # queued behind c1
    assert owner.handle(ActorRestarted(a, "w:2")) == [
        SendCall(c1, "w:2", retry=True),
        SendCall(c3, "w:2", retry=True),
    ]
    # Its one restart is spent: the next death is its last.
    assert owner.handle(WorkerGone("w:2")) == [
        Resolve(c1, Why.ACTOR_DIED),
        Resolve(c3, Why.ACTOR_DIED),
        ActorDead(a),
    ]
    late = _oid()
    assert owner.handle(CallSubmitted(late, a)) == [Resolve(late, Why.ACTOR_DIED)]


def test_calls_in_flight_to_a_dead_actor_are_sent_again_in_the_order_they_were_made() -> None:
    owner, a = OwnerState(ME), _aid()
    calls = [_oid() for _ in range(6)]
    owner.handle(ActorAdded(a, "w:1", max_restarts=-1))
    for c in calls:
        owner.handle(CallSubmitted(c, a, max_retries=-1))
    assert owner.handle(WorkerGone("w:1")) == [RestartActor(a)]
    assert owner.handle(ActorRestarted(a, "w:2")) == [SendCall(c, "w:2", True) for c in calls]


def test_a_cancelled_call_is_resolved_once_and_never_sent_again() -> None:
    owner, t = OwnerState(ME), _oid()
    owner.handle(TaskSubmitted(t, max_retries=-1))
    owner.handle(TaskPlaced(t, "w:1"))
    assert owner.handle(CancelRequested(t)) == [SendCancel(t, "w:1", False)]
    assert owner.handle(WorkerGone("w:1")) == [Resolve(t, Why.CANCELLED)]
    assert owner.handle(ResultArrived(t, ok=True)) == []


def test_a_worker_that_leaves_ends_its_borrows_and_frees_what_only_it_held() -> None:
    owner, x = OwnerState(ME), _oid()
    owner.handle(LocalRefAdded(x, ME))
    owner.handle(RefSent(x, ME, 1))
    owner.handle(HoldAcked(x, ME, 1, "w:1"))
    assert owner.handle(LocalRefDropped(x)) == []  # w:1 still borrows it
    assert owner.handle(WorkerGone("w:1")) == []  # its link, not yet its death
    assert owner.handle(BorrowerLost("w:1")) == [Free(x)]


def test_a_hold_whose_receipt_never_comes_ends_with_its_lease() -> None:
    owner, x = OwnerState(ME), _oid()
    owner.handle(LocalRefAdded(x, ME))
    owner.handle(RefSent(x, ME, 1))  # into a task that is cancelled before it runs
    assert owner.handle(LocalRefDropped(x)) == []
    assert owner.handle(LeaseExpired(x, 1)) == [Free(x)]


def test_a_receipt_in_time_makes_the_lease_moot() -> None:
    owner, x = OwnerState(ME), _oid()
    owner.handle(LocalRefAdded(x, ME))
    owner.handle(RefSent(x, ME, 1))
    owner.handle(HoldAcked(x, ME, 1, "w:1"))
    assert owner.handle(LocalRefDropped(x)) == []
    assert owner.handle(LeaseExpired(x, 1)) == []  # w:1 borrows it: that is what holds it
    assert owner.handle(BorrowerReleased(x, "w:1")) == [Free(x)]


def test_a_receipt_later_than_its_lease_for_a_freed_object_changes_nothing() -> None:
    # A task cancelled before it ran: its argument's hold went with its lease and the object
    # was freed; the receipt the task's worker sends at last must not make the row again.
    owner, x = OwnerState(ME), _oid()
    owner.handle(LocalRefAdded(x, ME))
    owner.handle(RefSent(x, ME, 1))
    owner.handle(LeaseExpired(x, 1))
    assert owner.handle(LocalRefDropped(x)) == [Free(x)]
    assert owner.handle(HoldAcked(x, ME, 1, "w:1")) == []
    assert x not in owner.refs
    assert owner.handle(BorrowerReleased(x, "w:1")) == []  # never freed twice


def test_a_borrower_forwards_a_late_receipt_without_keeping_a_row() -> None:
    borrower, x = OwnerState("b:1"), _oid()
    borrower.handle(RefReceived(x, ME, ME, 1, new_local=True))
    borrower.handle(RefSent(x, ME, 2))
    borrower.handle(LeaseExpired(x, 2))
    assert borrower.handle(LocalRefDropped(x)) == [Release(ME, x)]
    # The receiver borrows it: its owner is told (and counts it if the object is alive).
    assert borrower.handle(HoldAcked(x, ME, 2, "w:1")) == [AddBorrower(ME, x, "w:1")]
    assert x not in borrower.refs


class OwnerMachine(RuleBasedStateMachine):
    """Drives one OwnerState as its shell would (answering its commands in any order a
    network allows) and checks what users rely on."""

    def __init__(self) -> None:
        super().__init__()
        self.owner = OwnerState(ME)
        # Ids from a counter of this run: a replayed example makes the same ones.
        self.ids = itertools.count()
        self.resolved: dict[ObjectId, int] = {}
        self.limits: dict[ObjectId, int] = {}  # task -> max_retries
        self.placed: dict[ObjectId, int] = {}  # task -> placements after a failure
        self.free: dict[ObjectId, int] = {}  # of those, after a send never written
        self.submitted: set[ObjectId] = set()
        self.unplaced: list[ObjectId] = []  # PlaceTask to answer
        self.flying: dict[ObjectId, str] = {}  # call -> where the shell sent it
        self.cancelled: set[ObjectId] = set()
        self.actors: dict[ActorId, str | None] = {}  # None: restart asked
        self.restart_limit: dict[ActorId, int] = {}
        self.restarts: dict[ActorId, int] = {}
        self.incarnation: dict[ActorId, int] = {}
        self.order: dict[tuple[ActorId, int], list[int]] = {}  # sent, by submission number
        self.submitted_as: dict[ObjectId, tuple[ActorId, int]] = {}
        self.seq = itertools.count()
        # One object's references: local entries, holds in flight, borrowers.
        self.x = self.oid()
        self.local = 0
        self.holds: set[int] = set()
        self.expired: set[int] = set()  # tokens whose lease ran out before their receipt
        self.borrowers: dict[str, int] = {}
        self.freed = 0
        self.ever = False
        self.tokens = itertools.count(1)

    def oid(self) -> ObjectId:
        return ObjectId(next(self.ids).to_bytes(16, "big"))

    def _run(self, commands: list[Command]) -> None:
        for c in commands:
            if isinstance(c, Resolve):
                self.resolved[c.call_id] = self.resolved.get(c.call_id, 0) + 1
                assert self.resolved[c.call_id] == 1, f"{c.call_id!r} resolved twice"
                self.flying.pop(c.call_id, None)
                if c.call_id in self.unplaced:
                    self.unplaced.remove(c.call_id)
            elif isinstance(c, PlaceTask):
                assert c.call_id not in self.cancelled, "a cancelled task was placed again"
                assert c.call_id not in self.resolved
                if c.retry:
                    self.placed[c.call_id] += 1
                self.flying.pop(c.call_id, None)
                self.unplaced.append(c.call_id)
            elif isinstance(c, SendCall):
                assert c.call_id not in self.cancelled, "a cancelled call was sent again"
                assert c.call_id not in self.resolved
                self.flying[c.call_id] = c.address
                actor, n = self.submitted_as[c.call_id]
                self.order.setdefault((actor, self.incarnation[actor]), []).append(n)
            elif isinstance(c, RestartActor):
                self.restarts[c.actor_id] += 1
                self.actors[c.actor_id] = None
            elif isinstance(c, Free):
                assert c.object_id == self.x
                self.freed += 1
            elif isinstance(c, (SendCancel, ActorDead)):
                pass
            else:
                raise AssertionError(f"unexpected command {c!r}")

    @rule(retries=st.sampled_from([0, 1, 2, -1]))
    def submit_task(self, retries: int) -> None:
        t = self.oid()
        self.limits[t], self.placed[t], self.free[t] = retries, 0, 0
        self.submitted.add(t)
        self._run(self.owner.handle(TaskSubmitted(t, retries)))

    @precondition(lambda self: self.unplaced)
    @rule(data=st.data(), where=st.sampled_from(WORKERS))
    def place(self, data: Any, where: str) -> None:
        t = data.draw(st.sampled_from(self.unplaced))
        self.unplaced.remove(t)
        self.flying[t] = where
        self._run(self.owner.handle(TaskPlaced(t, where)))

    @rule(where=st.sampled_from(WORKERS), restarts=st.sampled_from([0, 1, 2]))
    def create_actor(self, where: str, restarts: int) -> None:
        a = ActorId(next(self.ids).to_bytes(16, "big"))
        self.actors[a], self.restart_limit[a], self.restarts[a] = where, restarts, 0
        self.incarnation[a] = 0
        self._run(self.owner.handle(ActorAdded(a, where, restarts)))

    @precondition(lambda self: self.actors)
    @rule(data=st.data(), retries=st.sampled_from([0, 1, -1]))
    def call_actor(self, data: Any, retries: int) -> None:
        a = data.draw(st.sampled_from(sorted(self.actors)))
        c = self.oid()
        self.submitted_as[c] = (a, next(self.seq))
        self.submitted.add(c)
        self._run(self.owner.handle(CallSubmitted(c, a, retries)))

    @precondition(lambda self: self.flying)
    @rule(data=st.data(), ok=st.booleans(), retryable=st.booleans())
    def answer(self, data: Any, ok: bool, retryable: bool) -> None:
        c = data.draw(st.sampled_from(sorted(self.flying)))
        self._run(self.owner.handle(ResultArrived(c, ok, retryable)))

    @rule(where=st.sampled_from(WORKERS), written=st.booleans())
    def worker_gone(self, where: str, written: bool) -> None:
        if not written:
            for t, at in self.flying.items():
                if at == where and t in self.free:
                    self.free[t] += 1
        self._run(self.owner.handle(WorkerGone(where, written)))

    @rule(where=st.sampled_from(WORKERS))
    def borrower_died(self, where: str) -> None:
        self.borrowers.pop(where, None)
        self._run(self.owner.handle(BorrowerLost(where)))

    @precondition(lambda self: self.resolved or self.flying or self.unplaced)
    @rule(data=st.data(), force=st.booleans())
    def cancel(self, data: Any, force: bool) -> None:
        known = sorted(set(self.resolved) | set(self.flying) | set(self.unplaced))
        c = data.draw(st.sampled_from(known))
        if c not in self.resolved:
            self.cancelled.add(c)
        self._run(self.owner.handle(CancelRequested(c, force)))

    @precondition(lambda self: any(v is None for v in self.actors.values()))
    @rule(data=st.data(), where=st.sampled_from(WORKERS), ok=st.booleans())
    def restart_answer(self, data: Any, where: str, ok: bool) -> None:
        a = data.draw(st.sampled_from(sorted(k for k, v in self.actors.items() if v is None)))
        if ok:
            self.actors[a] = where
            self.incarnation[a] += 1
            self._run(self.owner.handle(ActorRestarted(a, where)))
        else:
            del self.actors[a]
            self._run(self.owner.handle(ActorRestartFailed(a)))

    # --- one object's references ---------------------------------------------------------

    @precondition(lambda self: not self.freed)
    @rule()
    def add_local(self) -> None:
        self.local += 1
        self.ever = True
        self._run(self.owner.handle(LocalRefAdded(self.x, ME)))

    @precondition(lambda self: self.local)
    @rule()
    def drop_local(self) -> None:
        self.local -= 1
        self._run(self.owner.handle(LocalRefDropped(self.x)))

    @precondition(lambda self: self.local and not self.freed)
    @rule()
    def send_ref(self) -> None:
        token = next(self.tokens)
        self.holds.add(token)
        self._run(self.owner.handle(RefSent(self.x, ME, token)))

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), borrower=st.sampled_from((None, *WORKERS)))
    def receipt(self, data: Any, borrower: str | None) -> None:
        token = data.draw(st.sampled_from(sorted(self.holds)))
        self.holds.discard(token)
        if borrower is not None:
            self.borrowers[borrower] = self.borrowers.get(borrower, 0) + 1
        self._run(self.owner.handle(HoldAcked(self.x, ME, token, borrower)))

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def lease_expires(self, data: Any) -> None:
        token = data.draw(st.sampled_from(sorted(self.holds)))
        self.holds.discard(token)
        self.expired.add(token)
        self._run(self.owner.handle(LeaseExpired(self.x, token)))

    @precondition(lambda self: self.expired)
    @rule(data=st.data(), borrower=st.sampled_from((None, *WORKERS)))
    def late_receipt(self, data: Any, borrower: str | None) -> None:
        # The receiver counts as a borrower only if the object is still alive.
        token = data.draw(st.sampled_from(sorted(self.expired)))
        self.expired.discard(token)
        if borrower is not None and not self.freed:
            self.borrowers[borrower] = self.borrowers.get(borrower, 0) + 1
        self._run(self.owner.handle(HoldAcked(self.x, ME, token, borrower)))

    @precondition(lambda self: self.borrowers)
    @rule(data=st.data())
    def release(self, data: Any) -> None:
        borrower = data.draw(st.sampled_from(sorted(self.borrowers)))
        self.borrowers[borrower] -= 1
        if not self.borrowers[borrower]:
            del self.borrowers[borrower]
        self._run(self.owner.handle(BorrowerReleased(self.x, borrower)))

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def retries_never_exceed_their_limit(self) -> None:
        for t, n in self.placed.items():
            limit = self.limits[t]
            assert limit < 0 or n - self.free[t] <= limit, (t, n, limit)

    @invariant()
    def restarts_never_exceed_max_restarts(self) -> None:
        for a, n in self.restarts.items():
            assert n <= self.restart_limit[a]

    @invariant()
    def a_restarted_actor_gets_its_calls_in_order(self) -> None:
        for sent in self.order.values():
            assert sent == sorted(sent)

    @invariant()
    def the_owner_keeps_exactly_the_unresolved_calls(self) -> None:
        assert len(self.owner) == len(self.submitted - set(self.resolved))

    @invariant()
    def an_object_is_freed_exactly_when_its_last_reference_goes(self) -> None:
        if self.local or self.holds or self.borrowers:
            assert self.freed == 0
        elif self.ever:
            assert self.freed == 1

    def teardown(self) -> None:
        # Every call ends: all workers go, restarts fail; then each call is resolved once.
        for where in WORKERS:
            self._run(self.owner.handle(WorkerGone(where, True)))
        for _ in range(10):
            for a in [k for k, v in self.actors.items() if v is None]:
                del self.actors[a]
                self._run(self.owner.handle(ActorRestartFailed(a)))
            for t in list(self.unplaced):
                self._run(self.owner.handle(CancelRequested(t)))
        assert len(self.owner) == 0


OwnerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_owner_machine = OwnerMachine.TestCase
