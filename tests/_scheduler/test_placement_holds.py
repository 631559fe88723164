"""Placement sees the resources that the actors it placed hold, until they end: a demand with
resources goes to a worker with room left for it. Plain objects, no processes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorgrid._protocol.ids import NodeId, WorkerId
from actorgrid._protocol.messages import WorkerInfo
from actorgrid._scheduler.demand import Demand
from actorgrid._scheduler.placement import NoWorkerError, Placement

NODE = NodeId(b"n" * 16)
HALF_AND_MORE = Demand.of(1, {"memory": 0.6})


def worker(i: int, memory: float = 1.0) -> WorkerInfo:
    return WorkerInfo(
        WorkerId(i.to_bytes(16, "big")),
        NODE,
        f"127.0.0.1:{10000 + i}",
        i,
        "h",
        1.0,
        (("memory", memory),),
    )


def placement_of(n: int, seed: int = 0) -> tuple[Placement, list[WorkerInfo]]:
    placement = Placement(random.Random(seed))
    workers = [worker(i) for i in range(n)]
    for w in workers:
        placement.add(w)
    return placement, workers


def test_a_second_holding_actor_goes_to_the_worker_with_room() -> None:
    for seed in range(50):
        placement, workers = placement_of(2, seed)
        busy = workers[1].worker_id
        placement.actors[busy] = 5  # it hosts more actors (that hold nothing)
        first = placement.choose_for_actor(HALF_AND_MORE, b"a1").worker_id
        assert first != busy
        # By actor counts alone the first's worker wins again; its memory says otherwise.
        second = placement.choose_for_actor(HALF_AND_MORE, b"a2").worker_id
        assert second == busy
        assert placement.holding == {first: {"memory": 0.6}, second: {"memory": 0.6}}


def test_tasks_asking_for_resources_avoid_a_worker_whose_actor_holds_them() -> None:
    placement, _ = placement_of(2)
    held = placement.choose_for_actor(HALF_AND_MORE, b"a1").worker_id
    for _ in range(100):
        assert placement.choose_for_task(HALF_AND_MORE).worker_id != held


def test_a_hold_ends_with_its_actor_and_with_its_worker() -> None:
    placement, workers = placement_of(2)
    first = placement.choose_for_actor(HALF_AND_MORE, b"a1").worker_id
    placement.release_actor(b"a1")
    placement.release_actor(b"a1")  # an ending reported twice changes nothing
    assert placement.holding == {}
    a = placement.choose_for_actor(HALF_AND_MORE, b"a2").worker_id
    b = placement.choose_for_actor(HALF_AND_MORE, b"a3").worker_id
    assert {a, b} == {w.worker_id for w in workers}
    # No room anywhere: it waits (in the caller's backlog) for a holder to end.
    with pytest.raises(NoWorkerError, match="held by actors this process placed"):
        placement.choose_for_actor(HALF_AND_MORE, b"a4")
    freed: list[WorkerId] = []
    placement.on_room = lambda info: freed.append(info.worker_id)
    placement.release_actor(b"a3")
    assert freed == [b]  # what waits is placed again, there
    assert placement.choose_for_actor(HALF_AND_MORE, b"a4").worker_id == b
    placement.remove(a)  # its worker left: its holds went with it
    assert a not in placement.holding and first in {a, b}
    assert placement.choose_for_task(Demand.of(1, {"memory": 0.3})).worker_id == b


def test_a_new_incarnation_moves_the_hold() -> None:
    placement, _ = placement_of(2)
    old = placement.choose_for_actor(HALF_AND_MORE, b"a1").worker_id
    new = placement.choose_for_actor(HALF_AND_MORE, b"a1").worker_id  # placed again
    assert placement.holding == {new: {"memory": 0.6}}
    assert new != old  # both had room again: the one with fewer actors placed won


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 9)), max_size=40),
    n=st.integers(1, 16),
    seed=st.integers(0, 2**16),
)
def test_holds_match_the_live_actors_and_no_worker_holds_twice_while_one_has_room(
    steps: list[tuple[bool, int]], n: int, seed: int
) -> None:
    placement, _ = placement_of(n, seed)
    live: dict[bytes, WorkerId] = {}
    for place, k in steps:
        actor = bytes([k])
        if place:  # placed, or placed again (a new incarnation)
            try:
                live[actor] = placement.choose_for_actor(HALF_AND_MORE, actor).worker_id
            except NoWorkerError:
                live.pop(actor, None)  # its last incarnation's hold is gone; it waits
                assert len(live) >= n  # only when every worker holds one
            else:
                assert len(live) <= n
        else:
            placement.release_actor(actor)
            live.pop(actor, None)
        expected: dict[WorkerId, float] = {}
        for wid in live.values():
            expected[wid] = expected.get(wid, 0.0) + 0.6
        held = {w: h["memory"] for w, h in placement.holding.items()}
        assert held.keys() == expected.keys()
        assert all(abs(held[w] - expected[w]) < 1e-9 for w in held)
        if len(live) <= n:  # one worker each: none holds two while another has room
            assert all(h <= 0.6 + 1e-9 for h in held.values())
