"""The owner state machine's actor part: calls to the actors a process created, their
restarts and kills, driven the way the runtime's shell drives them (the loop's direct
``call_submitted``, ``CallSubmitted``, and ``CallSent`` for calls another thread sent
straight to an address that may be stale), with answers, losses and cancels in any order a
network allows, stale ones included."""

from __future__ import annotations

import itertools
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actorgrid._protocol.ids import ActorId, ObjectId
from actorgrid._scheduler import owner as owner_module
from actorgrid._scheduler.owner import (
    ActorAdded,
    ActorDead,
    ActorEnded,
    ActorKilled,
    ActorRestarted,
    ActorRestartFailed,
    CallSent,
    CallSubmitted,
    CancelRequested,
    Command,
    OwnerState,
    Resolve,
    RestartActor,
    ResultArrived,
    SendCall,
    SendCancel,
    Why,
    WorkerGone,
)

ME = "me:1"
WORKERS = ("w:1", "w:2", "w:3")


def test_a_reply_for_a_call_resolved_already_makes_no_row_again() -> None:
    owner, a, c = OwnerState(ME), ActorId(b"a" * 16), ObjectId(b"c" * 16)
    owner.handle(ActorAdded(a, "w:1"))
    assert owner.call_submitted(c, a, 0) == "w:1"
    assert owner.handle(CancelRequested(c, force=True)) == [
        SendCancel(c, "w:1", True),
        Resolve(c, Why.CANCELLED),
    ]
    assert owner.handle(ResultArrived(c, ok=True)) == []  # the late reply of the killed run
    assert not owner.answered(c)
    assert len(owner) == 0


def test_a_call_sent_as_its_actor_died_waits_for_the_restart_and_goes_last() -> None:
    owner, a = OwnerState(ME), ActorId(b"a" * 16)
    first, sent = ObjectId(b"1" * 16), ObjectId(b"2" * 16)
    owner.handle(ActorAdded(a, "w:1", max_restarts=1))
    assert owner.call_submitted(first, a, 1) == "w:1"
    assert owner.handle(WorkerGone("w:1")) == [RestartActor(a)]
    # Another thread sent it to w:1 as w:1 died; the state hears of it only now.
    assert owner.handle(CallSent(sent, a, "w:1", 1)) == []
    assert owner.handle(ActorRestarted(a, "w:2")) == [
        SendCall(first, "w:2", True),
        SendCall(sent, "w:2", True),
    ]


@given(
    ends=st.lists(
        st.sampled_from(["killed", "ended", "worker_died", "restart_failed"]),
        min_size=1,
        max_size=40,
    ),
    cap=st.integers(min_value=1, max_value=6),
)
def test_after_many_create_kill_cycles_the_tables_stay_under_the_cap(
    ends: list[str], cap: int
) -> None:
    # The cap is made small so that a few cycles pass it (DEAD_REMEMBERED is read per death).
    with mock.patch.object(owner_module, "DEAD_REMEMBERED", cap):
        owner, dead, n = OwnerState(ME), [], itertools.count(1)
        for i, end in enumerate(ends):
            a, address = ActorId(next(n).to_bytes(16, "big")), f"w:{i}"
            owner.handle(ActorAdded(a, address, 1 if end == "restart_failed" else 0))
            c = ObjectId(next(n).to_bytes(16, "big"))
            assert owner.call_submitted(c, a, -1) == address
            if end == "killed":
                owner.handle(ActorKilled(a))
                owner.handle(ResultArrived(c, ok=True))  # calls in flight get their answers
            elif end == "ended":
                owner.handle(ActorEnded(a))
                owner.handle(ResultArrived(c, ok=False))
            elif end == "worker_died":
                assert owner.handle(WorkerGone(address)) == [
                    Resolve(c, Why.ACTOR_DIED),
                    ActorDead(a),
                ]
            else:
                assert owner.handle(WorkerGone(address)) == [RestartActor(a)]
                assert owner.handle(ActorRestartFailed(a)) == [Resolve(c, Why.ACTOR_DIED)]
            dead.append(a)
            alive, tombstones = owner.statistics()
            assert alive == 0 and tombstones == min(len(dead), cap)
            assert len(owner) == 0
        # A call to a dead actor whose tombstone is kept fails at once, never sent; the older
        # ones are no longer this state's (the shell sends those, and their worker answers).
        for a in dead[-cap:]:
            assert owner.owns_actor(a)
            c = ObjectId(next(n).to_bytes(16, "big"))
            assert owner.call_submitted(c, a, 1) is None
            assert owner.handle(CallSubmitted(c, a, 1)) == [Resolve(c, Why.ACTOR_DIED)]
        assert not any(owner.owns_actor(a) for a in dead[:-cap])


class ActorOwnerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.owner = OwnerState(ME)
        self.ids = itertools.count()
        self.seq = itertools.count()
        # Actors: "alive" (with where), "restarting" or "dead"; their incarnation number.
        self.status: dict[ActorId, str] = {}
        self.where: dict[ActorId, str] = {}
        self.incarnation: dict[ActorId, int] = {}
        self.restart_limit: dict[ActorId, int] = {}
        self.restarts: dict[ActorId, int] = {}
        # Calls: their actor, submission number and retry limit.
        self.actor_of: dict[ObjectId, ActorId] = {}
        self.number: dict[ObjectId, int] = {}
        self.retry_limit: dict[ObjectId, int] = {}
        self.flying: dict[ObjectId, str] = {}
        self.resolved: dict[ObjectId, Why] = {}
        self.cancelled: set[ObjectId] = set()
        self.ever_sent: set[ObjectId] = set()
        self.resent: dict[ObjectId, int] = {}  # sent again after a loss
        self.free: dict[ObjectId, int] = {}  # of those losses, sends never written
        self.sent_to: dict[tuple[ActorId, int], list[int]] = {}  # numbers, in sending order

    def _id(self) -> bytes:
        return next(self.ids).to_bytes(16, "big")

    def _sent(self, c: ObjectId, address: str) -> None:
        self.ever_sent.add(c)
        self.flying[c] = address
        a = self.actor_of[c]
        self.sent_to.setdefault((a, self.incarnation[a]), []).append(self.number[c])

    def _run(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, Resolve):
                c = command.call_id
                assert c not in self.resolved, f"{c!r} resolved twice"
                self.resolved[c] = command.why
                self.flying.pop(c, None)
            elif isinstance(command, SendCall):
                c = command.call_id
                assert c not in self.cancelled, "a cancelled call was sent again"
                assert c not in self.resolved, "a resolved call was sent again"
                a = self.actor_of[c]
                assert self.status[a] == "alive" and self.where[a] == command.address
                if c in self.ever_sent:  # (queued while its actor restarted: its first send)
                    self.resent[c] = self.resent.get(c, 0) + 1
                self._sent(c, command.address)
            elif isinstance(command, RestartActor):
                a = command.actor_id
                assert self.status[a] == "alive"
                self.restarts[a] += 1
                self.status[a] = "restarting"
            elif isinstance(command, ActorDead):
                self.status[command.actor_id] = "dead"
            elif not isinstance(command, SendCancel):
                raise AssertionError(f"unexpected command {command!r}")

    def _new_call(self, a: ActorId, retries: int) -> ObjectId:
        c = ObjectId(self._id())
        self.actor_of[c], self.number[c], self.retry_limit[c] = a, next(self.seq), retries
        return c

    @rule(where=st.sampled_from(WORKERS), restarts=st.sampled_from([0, 1, 2, -1]))
    def create_actor(self, where: str, restarts: int) -> None:
        a = ActorId(self._id())
        self.status[a], self.where[a], self.incarnation[a] = "alive", where, 0
        self.restart_limit[a], self.restarts[a] = restarts, 0
        self._run(self.owner.handle(ActorAdded(a, where, restarts)))

    @precondition(lambda self: self.status)
    @rule(data=st.data(), retries=st.sampled_from([0, 1, -1]), direct=st.booleans())
    def call(self, data: Any, retries: int, direct: bool) -> None:
        a = data.draw(st.sampled_from(sorted(self.status)))
        c = self._new_call(a, retries)
        dead = self.status[a] == "dead"
        if direct:
            address = self.owner.call_submitted(c, a, retries)
            assert (address is not None) == (self.status[a] == "alive")
            if address is not None:
                assert address == self.where[a]
                self._sent(c, address)
                return
        commands = self.owner.handle(CallSubmitted(c, a, retries))
        if dead:  # fails at once, never sent
            assert commands == [Resolve(c, Why.ACTOR_DIED)]
        self._run(commands)

    @precondition(lambda self: self.status)
    @rule(
        data=st.data(),
        retries=st.sampled_from([0, 1, -1]),
        where=st.sampled_from(WORKERS),
        direct=st.booleans(),
    )
    def call_sent_by_a_thread(self, data: Any, retries: int, where: str, direct: bool) -> None:
        # Sent to ``where``, which its actor may have left, and told to the state after. A
        # send to where it no longer lives may have been written before that worker died: it
        # counts as a run, like any send lost with its worker.
        a = data.draw(st.sampled_from(sorted(self.status)))
        c = self._new_call(a, retries)
        alive_there = self.status[a] == "alive" and self.where[a] == where
        self.ever_sent.add(c)
        if alive_there:
            self._sent(c, where)
        if direct:  # the shell's fast path first; the event when it declines
            assert self.owner.call_sent(c, a, where, retries) == alive_there
            if alive_there:
                return
        commands = self.owner.handle(CallSent(c, a, where, retries))
        if self.status[a] == "dead":
            assert commands == [Resolve(c, Why.ACTOR_DIED)]
        self._run(commands)

    @precondition(lambda self: self.flying)
    @rule(data=st.data(), ok=st.booleans())
    def answer(self, data: Any, ok: bool) -> None:
        c = data.draw(st.sampled_from(sorted(self.flying)))
        self._run(self.owner.handle(ResultArrived(c, ok)))
        assert self.resolved[c] is (Why.VALUE if ok else Why.ERROR)

    @precondition(lambda self: self.resolved)
    @rule(data=st.data(), ok=st.booleans(), direct=st.booleans())
    def stale_answer(self, data: Any, ok: bool, direct: bool) -> None:
        c = data.draw(st.sampled_from(sorted(self.resolved)))
        before = len(self.owner)
        if direct:
            assert not self.owner.answered(c)
        else:
            assert self.owner.handle(ResultArrived(c, ok)) == []
        assert not self.owner.pending(c) and len(self.owner) == before

    @rule(where=st.sampled_from(WORKERS), written=st.booleans())
    def worker_gone(self, where: str, written: bool) -> None:
        for c, at in list(self.flying.items()):
            if at == where:
                del self.flying[c]
                if not written:
                    self.free[c] = self.free.get(c, 0) + 1
        self._run(self.owner.handle(WorkerGone(where, written)))

    @precondition(lambda self: self.actor_of)
    @rule(data=st.data(), force=st.booleans())
    def cancel(self, data: Any, force: bool) -> None:
        c = data.draw(st.sampled_from(sorted(self.actor_of)))
        if c not in self.resolved:
            self.cancelled.add(c)
        self._run(self.owner.handle(CancelRequested(c, force)))

    @precondition(lambda self: "restarting" in self.status.values())
    @rule(data=st.data(), where=st.sampled_from(WORKERS), ok=st.booleans())
    def restart_answer(self, data: Any, where: str, ok: bool) -> None:
        a = data.draw(
            st.sampled_from(sorted(k for k, v in self.status.items() if v == "restarting"))
        )
        if ok:
            self.status[a], self.where[a] = "alive", where
            self.incarnation[a] += 1
            self._run(self.owner.handle(ActorRestarted(a, where)))
        else:
            self.status[a] = "dead"
            self._run(self.owner.handle(ActorRestartFailed(a)))

    @precondition(lambda self: self.status)
    @rule(data=st.data())
    def kill(self, data: Any) -> None:
        a = data.draw(st.sampled_from(sorted(self.status)))
        if self.status[a] != "dead":
            self.status[a] = "dead"
        self._run(self.owner.handle(ActorKilled(a)))

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def the_owner_keeps_exactly_the_unresolved_calls(self) -> None:
        assert len(self.owner) == len(self.actor_of) - len(self.resolved)

    @invariant()
    def restarts_never_exceed_max_restarts(self) -> None:
        for a, n in self.restarts.items():
            limit = self.restart_limit[a]
            assert limit < 0 or n <= limit

    @invariant()
    def a_call_is_sent_again_at_most_max_task_retries_times_after_it_may_have_run(self) -> None:
        for c, n in self.resent.items():
            limit = self.retry_limit[c]
            assert limit < 0 or n - self.free.get(c, 0) <= limit, (c, n, limit)

    @invariant()
    def each_incarnation_gets_its_calls_in_the_order_they_were_made(self) -> None:
        for numbers in self.sent_to.values():
            assert numbers == sorted(numbers)

    @invariant()
    def a_call_dies_with_its_actor_only_when_it_may_not_be_sent_again(self) -> None:
        for c, why in self.resolved.items():
            if why is Why.ACTOR_DIED:
                a = self.actor_of[c]
                assert self.status[a] == "dead" or self.retry_limit[c] >= 0

    def teardown(self) -> None:
        # Every call ends: all workers go, restarts fail; each call was resolved once.
        for where in WORKERS:
            self._run(self.owner.handle(WorkerGone(where, True)))
        for a in [k for k, v in self.status.items() if v == "restarting"]:
            self.status[a] = "dead"
            self._run(self.owner.handle(ActorRestartFailed(a)))
        assert len(self.owner) == 0
        assert set(self.resolved) == set(self.actor_of)


ActorOwnerMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
test_actor_owner_machine = ActorOwnerMachine.TestCase
