"""Placement, the caller-side choice of a worker, as a plain object: no processes, no sockets.

Randomness comes from a seeded ``random.Random`` so every run sees the same choices.
"""

from __future__ import annotations

import collections
import random
import time

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actorgrid._protocol.ids import NodeId, WorkerId
from actorgrid._protocol.messages import WorkerInfo
from actorgrid._scheduler.placement import NoWorkerError, Placement

NODE = NodeId(b"n" * 16)


def worker(i: int, num_cpus: float = 1.0) -> WorkerInfo:
    return WorkerInfo(
        WorkerId(i.to_bytes(16, "big")), NODE, f"127.0.0.1:{10000 + i}", i, "h", num_cpus
    )


def placement_with(*cpus: float, seed: int = 0) -> tuple[Placement, list[WorkerInfo]]:
    placement = Placement(random.Random(seed))
    workers = [worker(i, c) for i, c in enumerate(cpus)]
    for w in workers:
        placement.add(w)
    return placement, workers


# --- eligibility ------------------------------------------------------------------------------------


def test_never_picks_a_worker_without_enough_cpus() -> None:
    placement, workers = placement_with(1, 1, 4, 1, 1, 1, 1, 2)
    big = {w.worker_id for w in workers if w.num_cpus >= 2}
    for _ in range(2000):
        assert placement.choose_for_task(2).worker_id in big
        assert placement.choose_for_actor(3).worker_id == workers[2].worker_id


def test_a_single_eligible_worker_among_many_is_found() -> None:
    # Random probes will usually miss the one big worker; the fallback scan must not.
    placement, workers = placement_with(*([1.0] * 200 + [8.0]))
    for _ in range(200):
        assert placement.choose_for_task(8).worker_id == workers[-1].worker_id


def test_fractional_and_zero_cpu_requests() -> None:
    placement, workers = placement_with(0.5, 1)
    ids = {w.worker_id for w in workers}
    assert {placement.choose_for_task(0).worker_id for _ in range(200)} == ids
    assert {placement.choose_for_task(0.5).worker_id for _ in range(200)} == ids
    assert {placement.choose_for_task(0.75).worker_id for _ in range(200)} == {workers[1].worker_id}


def test_no_workers_is_a_clear_error() -> None:
    placement = Placement(random.Random(0))
    with pytest.raises(NoWorkerError, match="no worker is connected") as info:
        placement.choose_for_task(1)
    assert "ag.init()" in str(info.value)
    with pytest.raises(NoWorkerError, match="no worker is connected"):
        placement.choose_for_actor(0)


def test_too_large_a_request_is_a_clear_error() -> None:
    placement, _ = placement_with(1, 2, 0.5)
    with pytest.raises(NoWorkerError) as info:
        placement.choose_for_task(3)
    message = str(info.value)
    assert "num_cpus=3" in message
    assert "largest worker has 2" in message
    assert ".options()" in message
    with pytest.raises(NoWorkerError, match=r"num_cpus=2\.5"):
        placement.choose_for_actor(2.5)
    assert sum(placement.actors.values()) == 0  # a refused actor is not counted


def test_two_workers_with_equal_load_both_get_work() -> None:
    # Two distinct candidates every time: never the same worker sampled twice.
    placement, workers = placement_with(1, 1)
    picked = collections.Counter(placement.choose_for_task(1).worker_id for _ in range(400))
    assert set(picked) == {w.worker_id for w in workers}
    assert min(picked.values()) > 100


def test_a_busy_local_worker_sends_new_tasks_elsewhere() -> None:
    # A task running on worker 0 starts a child: worker 0's own CPUs are taken, so the
    # child goes to the idle worker 1 every time, though this caller has nothing there.
    placement, workers = placement_with(1, 1)
    placement.local = workers[0].worker_id
    busy = 1.0
    placement.local_load = lambda: busy
    assert {placement.choose_for_task(1).worker_id for _ in range(200)} == {workers[1].worker_id}
    busy = 0.0  # idle again: both are candidates
    assert {placement.choose_for_task(1).worker_id for _ in range(200)} == {
        w.worker_id for w in workers
    }


def test_the_largest_worker_that_takes_work() -> None:
    placement, workers = placement_with(1, 4, 2)
    assert placement.largest() == 4
    placement.set_suspended(workers[1].worker_id, True)
    assert placement.largest() == 2
    assert Placement().largest() == 0


# --- membership bookkeeping --------------------------------------------------------------------------


def _check_consistent(placement: Placement) -> None:
    order = placement._order
    assert len(placement) == len(order) == len(set(order))
    assert placement._index == {wid: i for i, wid in enumerate(order)}
    assert set(placement.workers) == set(order)
    assert set(placement.load) == set(order)
    assert set(placement.actors) == set(order)


def test_remove_and_add_keep_the_bookkeeping_consistent() -> None:
    placement, workers = placement_with(1, 1, 1, 1, 1)
    placement.remove(workers[1].worker_id)  # from the middle
    placement.remove(workers[4].worker_id)  # the last one
    placement.remove(workers[4].worker_id)  # twice: a no-op
    placement.remove(WorkerId(b"?" * 16))  # unknown: a no-op
    _check_consistent(placement)
    assert len(placement) == 3
    chosen = {placement.choose_for_task(1).worker_id for _ in range(500)}
    assert chosen == {workers[i].worker_id for i in (0, 2, 3)}
    placement.add(workers[1])
    _check_consistent(placement)
    assert len(placement) == 4


def test_adding_a_known_worker_updates_it_in_place() -> None:
    placement, workers = placement_with(1, 1)
    placement.started(workers[0].worker_id)
    bigger = WorkerInfo(workers[0].worker_id, NODE, "127.0.0.1:1", 99, "h", 4.0)
    placement.add(bigger)
    _check_consistent(placement)
    assert len(placement) == 2
    assert placement.workers[bigger.worker_id] is bigger
    assert placement.load[bigger.worker_id] == 1  # its load is kept
    assert placement.choose_for_task(4) is bigger


def test_removed_worker_load_is_forgotten() -> None:
    placement, workers = placement_with(1, 1)
    wid = workers[0].worker_id
    placement.started(wid)
    placement.remove(wid)
    placement.started(wid)  # a late report for a worker that left: ignored
    placement.finished(wid)
    _check_consistent(placement)
    placement.add(workers[0])
    assert placement.load[wid] == 0


def test_finished_never_goes_below_zero() -> None:
    placement, workers = placement_with(1)
    wid = workers[0].worker_id
    placement.finished(wid)
    assert placement.load[wid] == 0


def test_membership_changes_take_constant_time() -> None:
    # 200k adds and removes in random order: about a second of CPU when each is O(1), many
    # minutes if removal scanned the list (2e10 comparisons). CPU time, not wall time, so a
    # loaded machine that deschedules the test does not count against it.
    n = 200_000
    placement = Placement(random.Random(0))
    workers = [worker(i) for i in range(n)]
    rng = random.Random(1)
    start = time.process_time()
    for w in workers:
        placement.add(w)
    for i in rng.sample(range(n), n):
        placement.remove(workers[i].worker_id)
    elapsed = time.process_time() - start
    assert len(placement) == 0
    assert placement._index == {}
    assert elapsed < 30, f"{2 * n} membership changes took {elapsed:.1f} s of CPU"


# --- balance ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_tasks_spread_evenly_across_workers(seed: int) -> None:
    placement, workers = placement_with(1, 1, 1, 1, seed=seed)
    counts: collections.Counter[WorkerId] = collections.Counter()
    for _ in range(1000):
        chosen = placement.choose_for_task(1)
        placement.started(chosen.worker_id)
        counts[chosen.worker_id] += 1
    assert set(counts) == {w.worker_id for w in workers}
    assert max(counts.values()) - min(counts.values()) <= 25, counts
    assert placement.load == counts


def test_choices_avoid_the_busier_worker() -> None:
    placement, workers = placement_with(1, 1, seed=3)
    busy, idle = workers[0].worker_id, workers[1].worker_id
    for _ in range(50):
        placement.started(busy)
    # Two independent samples both land on the busy worker a quarter of the time; otherwise
    # the idle one wins.
    picks = collections.Counter(placement.choose_for_task(1).worker_id for _ in range(400))
    assert picks[idle] >= 250, picks
    for _ in range(50):
        placement.finished(busy)
    # Equal load: both are chosen about equally.
    picks = collections.Counter(placement.choose_for_task(1).worker_id for _ in range(400))
    assert min(picks[busy], picks[idle]) >= 120, picks


def test_actors_spread_evenly_across_workers() -> None:
    placement, _ = placement_with(1, 1, 1, 1, seed=7)
    counts = collections.Counter(placement.choose_for_actor(0).worker_id for _ in range(400))
    assert max(counts.values()) - min(counts.values()) <= 10, counts
    assert placement.actors == counts
    assert sum(placement.load.values()) == 0  # actors are not task load


# --- stateful ---------------------------------------------------------------------------------------


class PlacementMachine(RuleBasedStateMachine):
    """Random membership changes and choices, checked against a set of live workers."""

    def __init__(self) -> None:
        super().__init__()
        self.placement = Placement(random.Random(0))
        self.live: dict[WorkerId, WorkerInfo] = {}

    @rule(i=st.integers(0, 15), cpus=st.sampled_from([0.5, 1.0, 2.0, 4.0]))
    def add(self, i: int, cpus: float) -> None:
        info = worker(i, cpus)
        self.placement.add(info)
        self.live[info.worker_id] = info

    @rule(i=st.integers(0, 15))
    def remove(self, i: int) -> None:
        wid = worker(i).worker_id
        self.placement.remove(wid)
        self.live.pop(wid, None)

    @rule(cpus=st.sampled_from([0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0]), actor=st.booleans())
    def choose(self, cpus: float, actor: bool) -> None:
        eligible = {wid for wid, info in self.live.items() if info.num_cpus >= cpus}
        choose = self.placement.choose_for_actor if actor else self.placement.choose_for_task
        if not eligible:
            with pytest.raises(NoWorkerError):
                choose(cpus)
            return
        chosen = choose(cpus)
        assert chosen.worker_id in eligible
        assert chosen == self.live[chosen.worker_id]
        if not actor:
            self.placement.started(chosen.worker_id)

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        wid = data.draw(st.sampled_from(sorted(self.live)))
        before = self.placement.load[wid]
        self.placement.finished(wid)
        assert self.placement.load[wid] == max(0, before - 1)

    @invariant()
    def consistent(self) -> None:
        _check_consistent(self.placement)
        assert set(self.placement.workers) == set(self.live)
        assert all(v >= 0 for v in self.placement.load.values())


TestPlacementMachine = PlacementMachine.TestCase
TestPlacementMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
