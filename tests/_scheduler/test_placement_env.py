"""Placement with workers of several runtime environments (``.options(runtime_env=)``), as a
plain object: a caller's plain calls go only to workers of its own environment, a call that
names an environment only to that environment's workers, through suspensions and leaves.
"""

from __future__ import annotations

import random

import pytest

from actorgrid._protocol.ids import NodeId, WorkerId
from actorgrid._protocol.messages import WorkerInfo
from actorgrid._scheduler.demand import Demand, cpus
from actorgrid._scheduler.placement import NoWorkerError, Placement

NODE = NodeId(b"n" * 16)


def worker(i: int, env: str = "", gpus: float = 0.0) -> WorkerInfo:
    resources = (("GPU", gpus),) if gpus else ()
    wid = WorkerId(i.to_bytes(16, "big"))
    return WorkerInfo(wid, NODE, f"127.0.0.1:{10000 + i}", i, "h", 1.0, resources, env=env)


def test_plain_calls_stay_on_the_callers_env_and_env_calls_on_theirs() -> None:
    placement = Placement(random.Random(0))
    own = [worker(i) for i in range(3)]
    other = [worker(10 + i, env="k1") for i in range(2)]
    for w in own + other:
        placement.add(w)
    assert len(placement) == 3  # the other env's workers take no plain calls
    k1 = Demand.of(1.0, env="k1")
    for _ in range(50):
        assert placement.choose_for_task(cpus(1.0)) in own
        assert placement.choose_for_task(k1) in other
        assert placement.choose_for_actor(Demand.of(0.0, {"GPU": 0.0})) in own
    with pytest.raises(NoWorkerError, match="runtime_env k2"):
        placement.choose_for_task(Demand.of(1.0, env="k2"))


def test_env_workers_follow_suspensions_and_leaves() -> None:
    placement = Placement(random.Random(1))
    own, env = worker(1), worker(2, env="k1", gpus=1.0)
    placement.add(own)
    placement.add(env)
    k1_gpu = Demand.of(1.0, {"GPU": 1.0}, env="k1")
    assert placement.choose_for_task(k1_gpu) == env
    placement.set_suspended(env.worker_id, True)
    with pytest.raises(NoWorkerError):
        placement.choose_for_task(k1_gpu)
    placement.set_suspended(env.worker_id, False)
    assert placement.choose_for_task(k1_gpu) == env
    assert len(placement) == 1  # resumed among its env's workers, not the caller's
    placement.remove(env.worker_id)
    with pytest.raises(NoWorkerError):
        placement.choose_for_task(k1_gpu)
    assert placement.choose_for_task(cpus(1.0)) == own


def test_a_caller_of_an_env_has_its_plain_calls_on_that_env() -> None:
    placement = Placement(random.Random(2))
    placement.env = "mine"
    base, mine = worker(1), worker(2, env="mine")
    placement.add(base)
    placement.add(mine)
    assert {placement.choose_for_task(cpus(1.0)) for _ in range(20)} == {mine}
    # A demand of its own env by key is the same as a plain one.
    assert placement.choose_for_task(Demand.of(1.0, env="mine")) == mine
    assert not Demand.of(1.0, env="mine").fits(base)
