"""The node's GPU ledger: each GPU belongs to one worker at a time (no processes)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actorgrid._scheduler.backlog import ClusterPicture, describe_wait
from actorgrid._scheduler.demand import Demand
from actorgrid._scheduler.gpus import GpuLedger, Grant, Revoke


def test_a_gpu_comes_back_when_its_worker_ends_and_goes_to_who_waits() -> None:
    ledger = GpuLedger(["0", "1"])
    assert ledger.claim("base-0", 1, yields=True) == (("0",), [])
    assert ledger.claim("base-1", 1, yields=True) == (("1",), [])
    assert ledger.claim("base-2", 1, yields=True) == (None, [])  # waits, revokes nothing
    assert ledger.release("base-0") == [Grant("base-2", ("0",))]
    ledger.check()


def test_env_workers_and_base_workers_draw_from_one_ledger() -> None:
    ledger = GpuLedger(["0", "1"])
    ledger.claim("base-0", 1, yields=True)
    ledger.claim("base-1", 1, yields=True)
    # An environment's worker: no GPU is free, so a base worker is asked to give its back.
    assert ledger.claim("env-0", 1, yields=False) == (None, [Revoke("base-0")])
    # Its replacement waits behind the environment's claim, and revokes nothing.
    assert ledger.release("base-0") == [Grant("env-0", ("0",))]
    assert ledger.claim("base-0 again", 1, yields=True) == (None, [])
    assert ledger.claim("env-1", 1, yields=False) == (None, [Revoke("base-1")])
    assert ledger.release("base-1") == [Grant("env-1", ("1",))]
    # The environment is released: the base workers get their GPUs back.
    assert ledger.release("env-0") == [Grant("base-0 again", ("0",))]
    assert ledger.release("env-1") == []
    assert ledger.free == ["1"]
    ledger.check()


def test_a_claim_larger_than_the_node_is_refused() -> None:
    ledger = GpuLedger(["0"])
    try:
        ledger.claim("w", 2, yields=True)
    except ValueError as exc:
        assert "2 GPUs on a node of 1" in str(exc)
    else:
        raise AssertionError("a claim of 2 GPUs on a node of 1 was accepted")


def test_a_gpu_in_use_is_not_revoked_and_the_claim_waits_until_it_is_free() -> None:
    ledger = GpuLedger(["0", "1"])
    ledger.claim("base-0", 1, yields=True)
    ledger.claim("base-1", 1, yields=True)
    assert ledger.set_busy("base-0", True) == []  # an actor there holds GPU 0
    # The environment's worker takes base-1's GPU, whose worker is free; not base-0's.
    assert ledger.claim("env-0", 1, yields=False) == (None, [Revoke("base-1")])
    assert ledger.release("base-1") == [Grant("env-0", ("1",))]
    assert ledger.claim("env-1", 1, yields=False) == (None, [])  # waits: GPU 0 is in use
    assert ledger.busy_blockers() == {"base-0": ("0",)}
    assert ledger.set_busy("base-0", True) == []  # still in use: nothing changes
    assert ledger.set_busy("base-0", False) == [Revoke("base-0")]  # its actor ended
    assert ledger.busy_blockers() == {}
    assert ledger.release("base-0") == [Grant("env-1", ("0",))]
    ledger.check()


def test_the_pending_warning_says_the_gpus_are_held_by_another_runtime_envs_workers() -> None:
    # The node's two GPUs went to another driver's runtime_env workers: this caller's workers
    # offer none, which is not "the cluster has no GPU".
    cluster = ClusterPicture(
        alive=2, offered={"CPU": 2.0}, largest_share={}, elsewhere={"GPU": 2.0, "CPU": 2.0}
    )
    text = describe_wait({("task", Demand.of(1, {"GPU": 1})): 1}, 12.0, cluster)
    assert "1 task needs 1 CPU, GPU=1" in text
    assert "offer GPU=0 in all, while other workers" in text and "hold GPU=2" in text
    assert "one worker process at a time" in text and "runtime_env" in text
    assert "start a node that offers it" not in text
    # A driver does not see other drivers' runtime_env workers: it says that they may hold it.
    unseen = ClusterPicture(alive=2, offered={"CPU": 2.0}, largest_share={})
    text = describe_wait({("task", Demand.of(1, {"GPU": 1})): 1}, 12.0, unseen)
    assert "offer GPU=0 in all" in text and "start a node that offers it" in text
    assert "the workers of another driver's runtime_env may hold it" in text


class LedgerMachine(RuleBasedStateMachine):
    """Workers of two kinds claim and release at random, and their GPUs are put to use and
    freed at random; the node closes each revoked worker (as the shell does) at some later
    step."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger = GpuLedger(["0", "1", "2", "3"])
        self.next = 0
        self.live: dict[int, tuple[str, ...] | None] = {}  # worker: its GPUs, None: waits
        self.to_close: set[int] = set()
        self.busy: set[int] = set()  # holders whose GPUs a live actor or a call holds

    def _revoked(self, revokes: list[Revoke]) -> None:
        for revoke in revokes:
            assert self.live[revoke.holder] is not None, "a waiting worker was revoked"
            assert revoke.holder not in self.to_close, "a worker revoked twice"
            assert revoke.holder not in self.busy, "a GPU in use was revoked"
            self.to_close.add(revoke.holder)

    def _apply(self, grants: list[Grant]) -> None:
        for grant in grants:
            assert self.live[grant.holder] is None, "a grant to a worker that was not waiting"
            self.live[grant.holder] = grant.ids

    @rule(count=st.integers(1, 3), yields=st.booleans())
    def start_a_worker(self, count: int, yields: bool) -> None:
        holder, self.next = self.next, self.next + 1
        ids, revokes = self.ledger.claim(holder, count, yields=yields)
        self.live[holder] = ids
        assert ids is None or len(ids) == count
        self._revoked(revokes)
        if yields:
            assert not revokes, "a base worker's claim revoked another"

    @precondition(lambda self: any(ids is not None for ids in self.live.values()))
    @rule(data=st.data(), busy=st.booleans())
    def its_gpus_are_put_to_use_or_freed(self, data: st.DataObject, busy: bool) -> None:
        holding = sorted(h for h, ids in self.live.items() if ids is not None)
        holder = data.draw(st.sampled_from(holding))
        if busy:
            self.busy.add(holder)
        else:
            self.busy.discard(holder)
        self._revoked(self.ledger.set_busy(holder, busy))

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def a_worker_ends(self, data: st.DataObject) -> None:
        holder = data.draw(st.sampled_from(sorted(self.live)))
        del self.live[holder]
        self.to_close.discard(holder)
        self.busy.discard(holder)
        self._apply(self.ledger.release(holder))

    @precondition(lambda self: self.to_close)
    @rule(data=st.data())
    def a_revoked_worker_closes(self, data: st.DataObject) -> None:
        holder = data.draw(st.sampled_from(sorted(self.to_close)))
        if holder in self.busy:
            return  # its worker waits until nothing holds its GPUs (yield_gpus)
        self.to_close.discard(holder)
        del self.live[holder]
        self._apply(self.ledger.release(holder))

    @invariant()
    def no_gpu_is_held_by_two_live_workers(self) -> None:
        self.ledger.check()
        seen = [g for ids in self.live.values() if ids for g in ids]
        assert len(seen) == len(set(seen))
        assert {h: ids for h, ids in self.live.items() if ids} == self.ledger.held

    @invariant()
    def an_env_claim_that_waits_has_what_it_needs_coming(self) -> None:
        ledger = self.ledger
        wanted = sum(n for w, n in ledger.waiting.items() if not ledger.yields[w])
        coming = len(ledger.free) + sum(len(ledger.held[h]) for h in ledger.revoked)
        env_held = sum(len(ids) for h, ids in ledger.held.items() if not ledger.yields[h])
        in_use = sum(
            len(ids) for h, ids in ledger.busy_blockers().items() if h not in ledger.revoked
        )
        # Everything not held by environment workers, nor in use on a base worker, is free
        # or on its way back: a claim waits only for GPUs in use, and gets them once freed.
        assert coming >= min(wanted, len(ledger.ids) - env_held - in_use)
        assert ledger.busy == {h for h in self.busy if h in ledger.held}


LedgerMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
test_gpu_ledger = LedgerMachine.TestCase
