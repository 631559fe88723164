"""The node's GPU ledger: each GPU belongs to one worker at a time (no processes)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

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


class LedgerMachine(RuleBasedStateMachine):
    """Workers of two kinds claim and release at random; the node closes each revoked
    worker (as the shell does) at some later step."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger = GpuLedger(["0", "1", "2", "3"])
        self.next = 0
        self.live: dict[int, tuple[str, ...] | None] = {}  # worker: its GPUs, None: waits
        self.to_close: set[int] = set()

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
        for revoke in revokes:
            assert self.live[revoke.holder] is not None, "a waiting worker was revoked"
            assert revoke.holder not in self.to_close, "a worker revoked twice"
            self.to_close.add(revoke.holder)
        if yields:
            assert not revokes, "a base worker's claim revoked another"

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def a_worker_ends(self, data: st.DataObject) -> None:
        holder = data.draw(st.sampled_from(sorted(self.live)))
        del self.live[holder]
        self.to_close.discard(holder)
        self._apply(self.ledger.release(holder))

    @precondition(lambda self: self.to_close)
    @rule(data=st.data())
    def a_revoked_worker_closes(self, data: st.DataObject) -> None:
        holder = data.draw(st.sampled_from(sorted(self.to_close)))
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
        # Everything not held by environment workers is free or on its way back.
        assert coming >= min(wanted, len(ledger.ids) - env_held)


LedgerMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
test_gpu_ledger = LedgerMachine.TestCase
