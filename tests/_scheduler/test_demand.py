"""Demands, label selectors, placement by demand and the worker's resource ledger (pure)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorgrid._exceptions import NoWorkerError
from actorgrid._node.shares import worker_shares
from actorgrid._protocol.ids import NodeId, WorkerId
from actorgrid._protocol.messages import WorkerInfo
from actorgrid._scheduler.backlog import Backlog, ClusterPicture, describe_wait
from actorgrid._scheduler.demand import Demand, cpus, parse_label_selector
from actorgrid._scheduler.ledger import Ledger
from actorgrid._scheduler.placement import Placement


def _worker(
    n: int,
    node: int,
    *,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
) -> WorkerInfo:
    return WorkerInfo(
        WorkerId(bytes([n]) * 16),
        NodeId(bytes([node]) * 16),
        f"127.0.0.1:{9000 + n}",
        1000 + n,
        f"host{node}",
        1.0,
        tuple(sorted((resources or {}).items())),
        tuple(sorted((labels or {}).items())),
    )


def test_label_selectors_in_rays_spelling() -> None:
    labels = {"zone": "a", "rack": "3"}

    def matches(selector: dict[str, str]) -> bool:
        return all(t.matches(labels) for t in parse_label_selector(selector))

    assert matches({"zone": "a"})
    assert not matches({"zone": "b"})
    assert matches({"zone": "!b"})
    assert not matches({"zone": "!a"})
    assert matches({"rack": "in(2,3)"})
    assert not matches({"rack": "!in(2, 3)"})
    assert matches({"gpu_kind": "!a100"})  # a label the node lacks matches negative forms only
    assert not matches({"gpu_kind": "in(a100)"})
    with pytest.raises(ValueError, match="'a', '!a', 'in\\(a,b\\)'"):
        parse_label_selector({"zone": "in()"})


def test_a_plain_demand_is_interned_and_anything_more_is_not_plain() -> None:
    assert Demand.of(1.0) is cpus(1.0)
    assert Demand.of(1.0).plain
    assert not Demand.of(1.0, {"camera": 1}).plain
    assert Demand.of(1.0, {"camera": 0}).plain  # zero amounts ask for nothing
    camera = Demand.of(0.0, {"camera": 1})
    assert camera.fits(_worker(1, 1, resources={"camera": 1.0}))
    assert not camera.fits(_worker(2, 1))
    assert "camera=1" in camera.describe()


def test_placement_sends_a_resource_demand_only_to_the_workers_that_have_it() -> None:
    placement = Placement(random.Random(0))
    for n in range(20):
        placement.add(_worker(n, n % 4, resources={"camera": 1.0} if n == 7 else None))
    camera = Demand.of(0.0, {"camera": 1})
    assert {placement.choose_for_task(camera).worker_id for _ in range(50)} == {
        WorkerId(bytes([7]) * 16)
    }
    placement.remove(WorkerId(bytes([7]) * 16))
    with pytest.raises(NoWorkerError, match="camera=1"):
        placement.choose_for_task(camera)
    # A worker that joins later is listed for the demand already seen.
    placement.add(_worker(30, 2, resources={"camera": 2.0}))
    assert placement.choose_for_actor(camera).worker_id == WorkerId(bytes([30]) * 16)


def test_label_selector_affinity_and_spread() -> None:
    placement = Placement(random.Random(1))
    for n in range(9):
        placement.add(_worker(n, n % 3, labels={"zone": "abc"[n % 3]}))
    zone_b = Demand.of(1.0, labels=parse_label_selector({"zone": "b"}))
    assert {placement.choose_for_task(zone_b).node_id for _ in range(30)} == {
        NodeId(bytes([1]) * 16)
    }
    not_a = Demand.of(1.0, labels=parse_label_selector({"zone": "!a"}))
    assert {placement.choose_for_task(not_a).node_id for _ in range(60)} == {
        NodeId(bytes([1]) * 16),
        NodeId(bytes([2]) * 16),
    }
    node2 = NodeId(bytes([2]) * 16)
    assert placement.choose_for_task(Demand.of(1.0, node=node2)).node_id == node2
    missing = NodeId(bytes([9]) * 16)
    with pytest.raises(NoWorkerError):
        placement.choose_for_task(Demand.of(1.0, node=missing))
    soft = placement.choose_for_task(Demand.of(1.0, node=missing, soft=True))
    assert soft.worker_id in placement.workers
    # SPREAD takes the nodes in turn: every 3 consecutive calls cover all 3 nodes.
    spread = Demand.of(1.0, spread=True)
    chosen = [placement.choose_for_task(spread).node_id for _ in range(9)]
    for i in range(0, 9, 3):
        assert len(set(chosen[i : i + 3])) == 3


def test_a_suspended_worker_leaves_and_rejoins_the_demand_lists() -> None:
    placement = Placement(random.Random(2))
    gpu = _worker(1, 1, resources={"GPU": 1.0})
    placement.add(gpu)
    placement.add(_worker(2, 1))
    demand = Demand.of(0.0, {"GPU": 1})
    assert placement.choose_for_task(demand) == gpu
    placement.set_suspended(gpu.worker_id, True)
    with pytest.raises(NoWorkerError):
        placement.choose_for_task(demand)
    placement.set_suspended(gpu.worker_id, False)
    assert placement.choose_for_task(demand) == gpu


def test_the_backlog_hands_a_demand_only_to_a_worker_that_fits_it() -> None:
    backlog: Backlog[str] = Backlog()
    camera = Demand.of(0.0, {"camera": 1})
    backlog.add("cam", camera, "task", now=0.0)
    backlog.add("plain", 1.0, "task", now=0.0)
    assert backlog.take_fitting(_worker(1, 1)) == ["plain"]
    assert backlog.take_fitting(_worker(2, 1, resources={"camera": 1.0})) == ["cam"]


def test_the_warning_names_the_resource_and_what_the_cluster_has() -> None:
    counts = {("actor", Demand.of(0.0, {"unicorn": 1})): 2}
    text = describe_wait(
        counts, 12, ClusterPicture(alive=4, largest=1.0, offered={"CPU": 4.0, "GPU": 2.0})
    )
    assert "2 actors need 0 CPUs, unicorn=1" in text
    assert "offer unicorn=0 in all" in text
    assert "the cluster has CPU=4, GPU=2" in text
    assert "--resources" in text


def test_units_are_dealt_to_workers_and_gpus_one_per_worker() -> None:
    shares = worker_shares(
        4, {"CPU": 4, "GPU": 2, "camera": 1, "disk": 2.5, "memory": 8.0}, ["0", "1"]
    )
    assert [s[1] for s in shares] == [["0"], ["1"], [], []]
    assert [s[0].get("GPU", 0) for s in shares] == [1, 1, 0, 0]
    assert [s[0].get("camera", 0) for s in shares] == [1, 0, 0, 0]
    assert [s[0].get("disk", 0) for s in shares] == [1.5, 1, 0, 0]
    assert [s[0]["memory"] for s in shares] == [2.0] * 4
    # More GPUs than workers: a worker owns several.
    assert [s[1] for s in worker_shares(2, {"GPU": 3}, ["0", "1", "2"])] == [["0", "2"], ["1"]]


def test_the_ledger_grants_in_order_and_refuses_what_never_fits() -> None:
    ledger = Ledger({"camera": 1.0})
    assert ledger.request("a", (("camera", 1.0),))
    assert not ledger.request("b", (("camera", 1.0),))
    assert ledger.release("b") == []  # b gives up its place in line
    assert not ledger.request("c", (("camera", 1.0),))
    assert ledger.release("a") == ["c"]
    assert ledger.release("a") == []  # idempotent
    with pytest.raises(ValueError, match="never"):
        ledger.request("d", (("camera", 2.0),))


_NEEDS = st.lists(
    st.tuples(
        st.sampled_from(["GPU", "camera", "memory"]),
        st.sampled_from([0.25, 0.5, 1.0, 2.0]),
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda t: t[0],
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _NEEDS), max_size=40), st.randoms())
def test_the_ledger_never_over_commits(
    steps: list[tuple[bool, list[tuple[str, float]]]], rnd: random.Random
) -> None:
    total = {"GPU": 2.0, "camera": 1.0, "memory": 4.0}
    ledger = Ledger(total)
    keys: list[int] = []
    for i, (release, need) in enumerate(steps):
        if release and keys:
            ledger.release(keys.pop(rnd.randrange(len(keys))))
        else:
            try:
                ledger.request(i, tuple(sorted(need)))
            except ValueError:
                continue
            keys.append(i)
        held: dict[str, float] = {}
        for grant in ledger.holders.values():
            for name, amount in grant:
                held[name] = held.get(name, 0.0) + amount
        for name, amount in held.items():
            assert amount <= total[name] + 1e-9
            assert abs(ledger.used[name] - amount) < 1e-9
        # Nothing waits that could be granted now, first in line first.
        if ledger.waiting:
            first = next(iter(ledger.waiting.values()))
            assert any(ledger.used[k] + v > total[k] + 1e-9 for k, v in first)
