"""Pools follow the cluster: a node that joins gets an ActorPool instance between jobs (with
every update sent before it joined), and ``ag.Pool().processes`` counts its worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

import actorgrid as ag

SECRET = os.urandom(32)
CLUSTER_OPTIONS = {"num_workers": 1, "secret": SECRET}
DEADLINE_S = 60.0

_NODE = """
import functools, sys, trio
import actorgrid as ag

async def main():
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(
            ag.serve_node, sys.argv[1], secret=bytes.fromhex(sys.argv[2]), num_workers=1))
        print("joined", flush=True)

trio.run(main)
"""


class Learner:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def run(self, x: int) -> tuple[int, int, list[int]]:
        time.sleep(0.05)
        return x, os.getpid(), list(self.seen)

    def handle_update(self, value: int) -> None:
        self.seen.append(value)


@pytest.fixture
def second_node(cluster: ag.Cluster, processes: Any) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _NODE, cluster.address, SECRET.hex()],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    processes.add([proc.pid])
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "joined"
        processes.add(p.pid for p in psutil.Process(proc.pid).children(recursive=True))
        deadline = time.monotonic() + DEADLINE_S
        while len(cluster.workers()) < 2:
            assert time.monotonic() < deadline, "the second node's worker never showed up"
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=DEADLINE_S / 2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        processes.wait_gone()


def test_pools_grow_when_a_node_joins(cluster: ag.Cluster, request: pytest.FixtureRequest) -> None:
    with ag.ActorPool(Learner) as pool:
        assert pool.workers_count() == 1
        assert [x for x, _, _ in pool.map(range(3))] == [0, 1, 2]
        pool.update_workers(1)
        pool.update_workers(2)
        request.getfixturevalue("second_node")
        with ag.Pool() as stdlib_style:
            assert stdlib_style.processes == 2
        results = pool.map(range(10))
        assert pool.workers_count() == 2
        assert pool.nodes_count() == 2
        assert [x for x, _, _ in results] == list(range(10))
        # Every instance, the new one too, had every update before its first job.
        assert all(seen == [1, 2] for _, _, seen in results)
        assert len({pid for _, pid, _ in results}) == 2
