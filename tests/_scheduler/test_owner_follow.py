"""The owner state machine's following part (``_scheduler/owner_follow.py``): calls made
through borrowed handles to actors owned by other processes, followed across their restarts,
and the restarts of coroutine actors this process started. Driven the way the runtime's shell
drives it: calls go straight to the address a handle knows until one is lost with its worker;
then the state holds them while the head is asked where the actor lives now."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actorgrid._protocol.ids import ActorId, ObjectId
from actorgrid._scheduler.owner import (
    ActorLocated,
    ActorNotLocated,
    CancelRequested,
    Command,
    CoroutineLost,
    CoroutineRestarted,
    CoroutineRestartFailed,
    FollowedCallLost,
    FollowedCallSubmitted,
    LocateActor,
    OwnerState,
    Resolve,
    RestartCoroutine,
    SendCoroutine,
    SendFollowed,
    Why,
)
from actorgrid._scheduler.owner_follow import MOVED_REMEMBERED

ME = "me:1"


def _id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def test_calls_made_while_an_actor_is_looked_for_follow_the_lost_ones_in_order() -> None:
    owner, b = OwnerState(ME), ActorId(_id(1))
    lost, later = ObjectId(_id(2)), ObjectId(_id(3))
    assert owner.handle(FollowedCallLost(lost, b, "w:1", written=False)) == [LocateActor(b, "w:1")]
    assert owner.follow.route(b, "w:1") is None
    assert owner.handle(FollowedCallSubmitted(later, b, "w:1", 0)) == []
    assert owner.handle(ActorLocated(b, "w:2")) == [
        SendFollowed(lost, "w:2", 0),
        SendFollowed(later, "w:2", 0),
    ]
    # Every handle in this process now sends there, whatever address it holds.
    assert owner.follow.route(b, "w:1") == "w:2"
    assert len(owner) == 0


def test_a_call_that_may_have_run_is_sent_again_only_under_its_retries() -> None:
    owner, b = OwnerState(ME), ActorId(_id(1))
    ran, retried = ObjectId(_id(2)), ObjectId(_id(3))
    assert owner.handle(FollowedCallLost(ran, b, "w:1", written=True, max_retries=0)) == [
        LocateActor(b, "w:1"),
        Resolve(ran, Why.ACTOR_DIED),
    ]
    assert owner.handle(FollowedCallLost(retried, b, "w:1", written=True, max_retries=2)) == []
    assert owner.handle(ActorLocated(b, "w:2")) == [SendFollowed(retried, "w:2", 1)]


def test_a_call_to_an_actor_that_may_not_restart_fails_at_once_and_none_is_looked_for() -> None:
    owner, b, c = OwnerState(ME), ActorId(_id(1)), ObjectId(_id(2))
    lost = FollowedCallLost(c, b, "w:1", written=False, restartable=False)
    assert owner.handle(lost) == [Resolve(c, Why.ACTOR_DIED)]
    assert not owner.follow.active


def test_the_actors_found_elsewhere_are_remembered_up_to_a_cap() -> None:
    owner = OwnerState(ME)
    for n in range(MOVED_REMEMBERED + 10):
        b = ActorId(_id(n))
        owner.handle(FollowedCallLost(ObjectId(_id(n)), b, "old", written=False))
        owner.handle(ActorLocated(b, "new"))
    assert owner.follow.route(ActorId(_id(0)), "old") == "old"  # forgotten: the oldest
    assert owner.follow.route(ActorId(_id(MOVED_REMEMBERED + 9)), "old") == "new"
    assert "moved=4096" in repr(owner.follow)


def test_a_coroutine_actor_cancelled_while_it_restarts_is_never_started_again() -> None:
    owner, a, c = OwnerState(ME), ActorId(_id(1)), ObjectId(_id(2))
    assert owner.handle(CoroutineLost(c, a, max_restarts=1)) == [RestartCoroutine(c)]
    assert owner.pending(c)
    assert owner.handle(CancelRequested(c)) == [Resolve(c, Why.CANCELLED)]
    assert owner.handle(CoroutineRestarted(c, "w:2")) == []
    assert owner.handle(CoroutineLost(ObjectId(_id(3)), a, max_restarts=0)) == [
        Resolve(ObjectId(_id(3)), Why.ACTOR_DIED)
    ]


class FollowMachine(RuleBasedStateMachine):
    """Actors owned elsewhere (their owner restarts them at a new address when their worker
    dies, under their max_restarts) reached through handles in this process; and coroutine
    actors this process started."""

    def __init__(self) -> None:
        super().__init__()
        self.owner = OwnerState(ME)
        self.ids = itertools.count(1)
        self.seq = itertools.count()
        # Actors owned elsewhere: where they live (None: dead for good), what a handle here
        # holds, restarts left, whether they may restart at all, addresses that died.
        self.loc: dict[ActorId, str | None] = {}
        self.handle_at: dict[ActorId, str] = {}
        self.restarts_left: dict[ActorId, int] = {}
        self.restartable: dict[ActorId, bool] = {}
        self.dead_addresses: set[str] = set()
        self.looking: dict[ActorId, str] = {}  # LocateActor in progress, from that address
        # Calls: actor, number (order made), retry limit; in flight (sent on by the state or
        # the shell) with the sends they have left; how they ended.
        self.actor_of: dict[ObjectId, ActorId] = {}
        self.number: dict[ObjectId, int] = {}
        self.retry_limit: dict[ObjectId, int] = {}
        self.flying: dict[ObjectId, str] = {}  # insertion order: sending order
        self.left: dict[ObjectId, int] = {}
        self.ran_again: dict[ObjectId, int] = {}  # sent again after a loss that may have run
        self.may_have_run: set[ObjectId] = set()
        self.resolved: dict[ObjectId, Why] = {}
        self.cancelled: set[ObjectId] = set()
        self.sent_to: dict[str, list[int]] = {}  # address -> call numbers in sending order
        # Coroutine actors: their call, restarts left and made, and state.
        self.co_actor: dict[ObjectId, ActorId] = {}
        self.co_left: dict[ObjectId, int] = {}
        self.co_limit: dict[ObjectId, int] = {}
        self.co_restarts: dict[ObjectId, int] = {}
        self.co_state: dict[ObjectId, str] = {}  # running, restarting, over

    def _new(self) -> bytes:
        return _id(next(self.ids))

    def _fly(self, c: ObjectId, address: str, left: int) -> None:
        self.flying[c] = address
        self.left[c] = left
        self.sent_to.setdefault(address, []).append(self.number[c])

    def _run(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, Resolve):
                c = command.call_id
                assert c not in self.resolved, f"{c!r} resolved twice"
                self.resolved[c] = command.why
                if c in self.co_state:
                    self.co_state[c] = "over"
            elif isinstance(command, SendFollowed):
                c = command.call_id
                assert c not in self.resolved and c not in self.cancelled
                if c in self.may_have_run:
                    self.may_have_run.discard(c)
                    self.ran_again[c] = self.ran_again.get(c, 0) + 1
                self._fly(c, command.address, command.max_retries)
            elif isinstance(command, LocateActor):
                b = command.actor_id
                assert b not in self.looking, "an actor looked for twice at once"
                self.looking[b] = command.address
            elif isinstance(command, RestartCoroutine):
                c = command.call_id
                assert self.co_state[c] == "running"
                self.co_state[c] = "restarting"
                self.co_restarts[c] += 1
                self.co_left[c] -= 1 if self.co_left[c] > 0 else 0
            elif isinstance(command, SendCoroutine):
                c = command.call_id
                assert c not in self.resolved and c not in self.cancelled
                self.co_state[c] = "running"
            else:
                raise AssertionError(f"unexpected command {command!r}")

    # --- actors owned elsewhere ----------------------------------------------------------

    @rule(restarts=st.sampled_from([0, 1, 2, -1]))
    def borrow_a_handle(self, restarts: int) -> None:
        b = ActorId(self._new())
        address = f"{b.hex()[-4:]}@0"
        self.loc[b], self.handle_at[b] = address, address
        self.restarts_left[b], self.restartable[b] = restarts, restarts != 0

    @precondition(lambda self: self.loc)
    @rule(data=st.data(), retries=st.sampled_from([0, 1, -1]), event=st.booleans())
    def call(self, data: Any, retries: int, event: bool) -> None:
        b = data.draw(st.sampled_from(sorted(self.loc)))
        c = ObjectId(self._new())
        self.actor_of[c], self.number[c], self.retry_limit[c] = b, next(self.seq), retries
        follow = self.owner.follow
        if not follow.active:  # the hot path: the state is not asked
            self._fly(c, self.handle_at[b], retries)
            return
        if event:  # the shell may also feed the event for any call while following
            self._run(self.owner.handle(FollowedCallSubmitted(c, b, self.handle_at[b], retries)))
            return
        address = follow.route(b, self.handle_at[b])
        if address is None:
            assert self.owner.handle(FollowedCallSubmitted(c, b, self.handle_at[b], retries)) == []
            return
        self.handle_at[b] = address  # the handle learns where its actor lives now
        self._fly(c, address, retries)

    @precondition(lambda self: any(v is not None for v in self.loc.values()))
    @rule(data=st.data())
    def its_worker_dies(self, data: Any) -> None:
        b = data.draw(st.sampled_from(sorted(k for k, v in self.loc.items() if v is not None)))
        address = self.loc[b]
        assert address is not None
        self.dead_addresses.add(address)
        if self.restarts_left[b] != 0:  # its owner restarts it elsewhere
            self.restarts_left[b] -= 1 if self.restarts_left[b] > 0 else 0
            n = int(address.split("@")[1]) + 1
            self.loc[b] = f"{address.split('@')[0]}@{n}"
        else:
            self.loc[b] = None

    @precondition(lambda self: any(a in self.dead_addresses for a in self.flying.values()))
    @rule(data=st.data(), written=st.lists(st.booleans(), min_size=1, max_size=8))
    def a_dead_link_closes(self, data: Any, written: list[bool]) -> None:
        dead = sorted({a for a in self.flying.values() if a in self.dead_addresses})
        address = data.draw(st.sampled_from(dead))
        lost = [c for c, a in self.flying.items() if a == address]  # in sending order
        for i, c in enumerate(lost):
            del self.flying[c]
            ran = written[i % len(written)]
            if ran:
                self.may_have_run.add(c)
            b = self.actor_of[c]
            event = FollowedCallLost(c, b, address, ran, self.left[c], self.restartable[b])
            self._run(self.owner.handle(event))

    @precondition(lambda self: self.looking)
    @rule(data=st.data(), gives_up=st.booleans())
    def the_head_answers(self, data: Any, gives_up: bool) -> None:
        b = data.draw(st.sampled_from(sorted(self.looking)))
        where = self.loc[b]
        if where is None or where == self.looking[b]:
            gives_up = True  # dead for good: never found elsewhere
        del self.looking[b]
        if gives_up:  # (or the head was away for the whole RELOCATE_TIMEOUT_S)
            self._run(self.owner.handle(ActorNotLocated(b)))
        else:
            assert where is not None
            self._run(self.owner.handle(ActorLocated(b, where)))

    @precondition(lambda self: any(a not in self.dead_addresses for a in self.flying.values()))
    @rule(data=st.data())
    def an_answer_comes(self, data: Any) -> None:
        alive = sorted(c for c, a in self.flying.items() if a not in self.dead_addresses)
        c = data.draw(st.sampled_from(alive))
        del self.flying[c]
        assert c not in self.resolved
        self.resolved[c] = Why.VALUE  # the shell resolves a call it sent on with its answer
        assert not self.owner.pending(c)

    @precondition(lambda self: self.actor_of or self.co_actor)
    @rule(data=st.data())
    def cancel(self, data: Any) -> None:
        c = data.draw(st.sampled_from(sorted([*self.actor_of, *self.co_actor])))
        held = self.owner.pending(c)
        commands = self.owner.handle(CancelRequested(c))
        if held:
            assert commands == [Resolve(c, Why.CANCELLED)]
            self.cancelled.add(c)
        else:
            assert commands == []  # in flight (the shell cancels it there) or resolved
        self._run(commands)

    # --- coroutine actors ----------------------------------------------------------------

    @rule(restarts=st.sampled_from([0, 1, 2, -1]))
    def start_a_coroutine_actor(self, restarts: int) -> None:
        c = ObjectId(self._new())
        self.co_actor[c] = ActorId(self._new())
        self.co_left[c], self.co_limit[c], self.co_restarts[c] = restarts, restarts, 0
        self.co_state[c] = "running"

    @precondition(lambda self: "running" in self.co_state.values())
    @rule(data=st.data(), ends=st.booleans())
    def a_coroutine_actors_worker_dies_or_it_ends(self, data: Any, ends: bool) -> None:
        running = sorted(c for c, s in self.co_state.items() if s == "running")
        c = data.draw(st.sampled_from(running))
        if ends:
            self.co_state[c] = "over"
            assert c not in self.resolved
            self.resolved[c] = Why.VALUE
            return
        left = self.co_left[c]
        commands = self.owner.handle(CoroutineLost(c, self.co_actor[c], left))
        if left == 0:
            assert commands == [Resolve(c, Why.ACTOR_DIED)]
        self._run(commands)

    def _restart_answerable(self) -> list[ObjectId]:
        # Also one cancelled meanwhile: its answer comes all the same, and changes nothing.
        candidates = [c for c, s in self.co_state.items() if s == "restarting"]
        return sorted({*candidates, *(c for c in self.cancelled if c in self.co_state)})

    @precondition(lambda self: self._restart_answerable())
    @rule(data=st.data(), ok=st.booleans())
    def a_restart_is_answered(self, data: Any, ok: bool) -> None:
        c = data.draw(st.sampled_from(self._restart_answerable()))
        if ok:
            commands = self.owner.handle(CoroutineRestarted(c, "w:new"))
        else:
            commands = self.owner.handle(CoroutineRestartFailed(c))
        if self.co_state[c] != "restarting":
            assert commands == []
        self._run(commands)

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def each_address_gets_its_calls_in_the_order_they_were_made(self) -> None:
        for numbers in self.sent_to.values():
            assert numbers == sorted(numbers)

    @invariant()
    def a_call_that_may_have_run_is_sent_again_at_most_max_task_retries_times(self) -> None:
        for c, n in self.ran_again.items():
            limit = self.retry_limit[c]
            assert limit < 0 or n <= limit, (c, n, limit)

    @invariant()
    def a_coroutine_actor_restarts_at_most_max_restarts_times(self) -> None:
        for c, n in self.co_restarts.items():
            assert self.co_limit[c] < 0 or n <= self.co_limit[c]

    @invariant()
    def the_state_holds_exactly_the_waiting_calls(self) -> None:
        waiting = [c for c in self.actor_of if self.owner.pending(c)]
        for c in waiting:
            assert c not in self.resolved and c not in self.flying

    def teardown(self) -> None:
        # Every actor's worker dies and the head answers; every call then ends exactly once.
        for _ in range(50):
            if not (self.flying or self.looking or "restarting" in self.co_state.values()):
                break
            for b in sorted(self.loc):
                if self.loc[b] is not None:
                    self.dead_addresses.add(self.loc[b])  # type: ignore[arg-type]
                    self.loc[b] = None
            for address in sorted({a for a in self.flying.values()}):
                for c in [c for c, a in self.flying.items() if a == address]:
                    del self.flying[c]
                    b = self.actor_of[c]
                    event = FollowedCallLost(c, b, address, True, self.left[c], True)
                    self._run(self.owner.handle(event))
            for b in sorted(self.looking):
                del self.looking[b]
                self._run(self.owner.handle(ActorNotLocated(b)))
            for c in sorted(c for c, s in self.co_state.items() if s == "restarting"):
                self._run(self.owner.handle(CoroutineRestartFailed(c)))
        for c in sorted(c for c, s in self.co_state.items() if s == "running"):
            self.resolved[c] = Why.VALUE  # (it ends)
        assert len(self.owner) == 0
        assert set(self.resolved) == set(self.actor_of) | set(self.co_actor)


FollowMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=40, deadline=None)
test_follow_machine = FollowMachine.TestCase
