"""Resources and placement on a real two-node cluster: an embedded head and node A (four
workers, two declared GPUs, label zone=a) in this process, and node B (`actorgrid node
--resources '{"camera": 1}' --labels zone=b`, one worker) in a subprocess.

This machine has no GPU: declared GPUs behave the same as detected ones (each owned by one
worker, whose CUDA_VISIBLE_DEVICES is set to it).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

import actorgrid as ag
from actorgrid._protocol.ids import NodeId

PULSE_S = 0.2
WARNING_S = 0.5
START_TIMEOUT_S = 60.0  # a bound for starts and joins on a loaded 2-core machine, not a wait
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class TwoNodes:
    def __init__(self, cluster: ag.Cluster, node_b: subprocess.Popen[str], secret: bytes) -> None:
        self.cluster = cluster
        self.secret = secret
        self.node_b = node_b
        nodes = cluster.nodes()
        self.a = next(n.node_id for n in nodes if n.labels.get("zone") == "a")
        self.b = next(n.node_id for n in nodes if n.labels.get("zone") == "b")

    def node_of(self, pid: int) -> NodeId:
        return next(w.node_id for w in self.cluster.workers() if w.pid == pid)


def _family(pid: int) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _start_node(
    folder: Path, cluster: ag.Cluster, secret: bytes, name: str, *flags: str
) -> subprocess.Popen[str]:
    secret_file = folder / "secret"
    secret_file.write_text(secret.hex())
    secret_file.chmod(0o600)
    out = folder / f"{name}.out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ACTORGRID_ADDRESS", None)
    with out.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "actorgrid.cli", "node", "--address", cluster.address,
             "--secret-file", str(secret_file), "--pulse-interval", str(PULSE_S), *flags],
            cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
    wait_for(
        lambda: "joined the head" in out.read_text() or proc.poll() is not None,
        START_TIMEOUT_S,
        f"{name} to join",
    )
    assert proc.poll() is None, f"{name} exited:\n{out.read_text()}"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    """Kill a node agent and its workers; fail if any of them outlives it."""
    family = _family(proc.pid)
    for p in family:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)
    alive = psutil.wait_procs(family, timeout=30)[1]
    assert not alive, f"processes outlived their node: {alive}"


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    secret = os.urandom(32)
    cluster = ag.init(
        num_workers=4,
        secret=secret,
        resources={"GPU": 2},
        labels={"zone": "a"},
        pulse_interval=PULSE_S,
        pending_warning_s=WARNING_S,
    )
    family = [p for w in cluster.workers() for p in _family(w.pid)]
    node_b = None
    try:
        folder = tmp_path_factory.mktemp("node_b")
        node_b = _start_node(
            folder, cluster, secret, "node_b",
            "--num-workers", "1", "--resources", '{"camera": 1}', "--labels", "zone=b",
        )  # fmt: skip
        wait_for(lambda: len(cluster.workers()) == 5, START_TIMEOUT_S, "node B's worker")
        yield TwoNodes(cluster, node_b, secret)
    finally:
        ag.shutdown()
        if node_b is not None:
            _stop(node_b)
        alive = psutil.wait_procs(family, timeout=30)[1]
        assert not alive, f"processes outlived the cluster: {alive}"


@ag.remote
def pid_and_gpus() -> tuple[int, str | None, list[Any]]:
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"), ag.get_gpu_ids()


@ag.remote
class Camera:
    def pid(self) -> int:
        return os.getpid()


@ag.remote
class GpuUser:
    def run(self, seconds: float) -> tuple[str | None, list[Any]]:
        time.sleep(seconds)
        return os.environ.get("CUDA_VISIBLE_DEVICES"), ag.get_gpu_ids()


def test_a_task_asking_for_a_camera_runs_only_on_the_node_that_has_one(two: TwoNodes) -> None:
    refs = [pid_and_gpus.options(resources={"camera": 1}).remote() for _ in range(6)]
    pids = {pid for pid, _, _ in ag.get(refs, timeout=START_TIMEOUT_S)}
    assert {two.node_of(pid) for pid in pids} == {two.b}


def test_two_actors_on_one_camera_wait_for_each_other(two: TwoNodes) -> None:
    first = Camera.options(resources={"camera": 1}).remote()
    assert two.node_of(ag.get(first.pid.remote(), timeout=START_TIMEOUT_S)) == two.b
    second = Camera.options(resources={"camera": 1}).remote()
    waiting = second.pid.remote()
    # The second actor is not created while the first holds the camera (it waits to be
    # placed: the one worker with a camera is full); a second is ample for one that could.
    ready, _ = ag.wait([waiting], timeout=1.0)
    assert ready == []
    used = wait_for(lambda: two.cluster.status().used.get("camera"), what="camera held")
    assert used == 1.0
    ag.kill(first)
    assert two.node_of(ag.get(waiting, timeout=START_TIMEOUT_S)) == two.b
    ag.kill(second)


def test_a_gpu_actor_pool_gets_one_instance_per_gpu_each_seeing_its_own(two: TwoNodes) -> None:
    with ag.ActorPool(GpuUser, num_gpus=1) as pool:
        assert pool.workers_count() == 2
        # Two jobs that take a while: each of the two idle instances takes one.
        seen = pool.map([0.5, 0.5])
    assert sorted(seen) == [("0", [0]), ("1", [1])]
    # Tasks asking for a GPU see one; the others see none at all.
    gpu = ag.get([pid_and_gpus.options(num_gpus=1).remote() for _ in range(4)], timeout=60)
    assert {(cuda, tuple(ids)) for _, cuda, ids in gpu} <= {("0", (0,)), ("1", (1,))}
    plain = ag.get(
        [pid_and_gpus.options(label_selector={"zone": "b"}).remote() for _ in range(2)],
        timeout=60,
    )
    assert {(cuda, tuple(ids)) for _, cuda, ids in plain} == {(None, ())}


def test_label_selectors_and_node_affinity(two: TwoNodes) -> None:
    def nodes_of(**options: Any) -> set[NodeId]:
        refs = [pid_and_gpus.options(**options).remote() for _ in range(8)]
        return {two.node_of(pid) for pid, _, _ in ag.get(refs, timeout=START_TIMEOUT_S)}

    assert nodes_of(label_selector={"zone": "b"}) == {two.b}
    assert nodes_of(label_selector={"zone": "!b"}) == {two.a}
    assert nodes_of(label_selector={"zone": "in(b,c)"}) == {two.b}
    assert nodes_of(scheduling_strategy=ag.NodeAffinity(two.a)) == {two.a}
    assert nodes_of(scheduling_strategy=ag.NodeAffinity(two.b.hex())) == {two.b}
    assert nodes_of(scheduling_strategy="SPREAD") == {two.a, two.b}
    gone = NodeId(b"\x00" * 16)
    assert len(nodes_of(scheduling_strategy=ag.NodeAffinity(gone, soft=True))) >= 1
    hard = pid_and_gpus.options(scheduling_strategy=ag.NodeAffinity(gone)).remote()
    with pytest.raises(ag.GetTimeoutError):
        ag.get(hard, timeout=0.5)
    ag.cancel(hard)


def test_run_on_each_node_and_worker(two: TwoNodes) -> None:
    by_node = ag.run_on_each_node(os.getpid, timeout=START_TIMEOUT_S)
    assert set(by_node) == {two.a, two.b}
    assert all(two.node_of(pid) == node for node, pid in by_node.items())
    by_worker = ag.run_on_each_worker(os.getpid, timeout=START_TIMEOUT_S)
    assert {w.worker_id: w.pid for w in two.cluster.workers()} == by_worker


def test_an_infeasible_request_waits_and_warns(
    two: TwoNodes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="actorgrid.runtime")
    ref = pid_and_gpus.options(resources={"unicorn": 1}).remote()
    with pytest.raises(ag.GetTimeoutError):
        ag.get(ref, timeout=WARNING_S)
    text = wait_for(
        lambda: next(
            (r.getMessage() for r in caplog.records if "unicorn=1" in r.getMessage()), None
        ),
        what="the pending warning",
    )
    assert "1 task needs 1 CPU, unicorn=1" in text
    assert "offer unicorn=0 in all" in text
    assert "GPU=2" in text and "camera=1" in text
    ag.cancel(ref)


def test_a_request_larger_than_any_one_workers_share_warns_why_and_what_to_do(
    two: TwoNodes, caplog: pytest.LogCaptureFixture
) -> None:
    # Node A has 2 GPUs in all, dealt one to each of two workers: num_gpus=2 fits the node's
    # total but no worker, and one call runs in one worker.
    caplog.set_level(logging.WARNING, logger="actorgrid.runtime")
    ref = pid_and_gpus.options(num_gpus=2).remote()
    with pytest.raises(ag.GetTimeoutError):
        ag.get(ref, timeout=WARNING_S)
    text = wait_for(
        lambda: next((r.getMessage() for r in caplog.records if "GPU=2" in r.getMessage()), None),
        what="the pending warning",
    )
    assert "no alive worker's share reaches GPU=2 (the largest is GPU=1" in text
    assert "lower num_gpus in .options() to at most GPU=1" in text
    assert "--num-workers N --num-cpus-per-worker C" in text
    ag.cancel(ref)


def test_status_shows_total_used_and_free_per_resource_and_node(two: TwoNodes) -> None:
    # GPU actors of earlier tests end in the background: their GPUs come back.
    status = wait_for(
        lambda: (st := two.cluster.status()).used.get("GPU", 0.0) == 0.0 and st,
        what="the GPUs of earlier tests' actors to be free",
    )
    assert status.total["GPU"] == 2.0
    assert status.total["camera"] == 1.0
    assert status.total["CPU"] == 5.0
    node_a = next(n for n in status.nodes if n.node_id == two.a)
    assert node_a.resources["GPU"] == 2.0 and node_a.free["GPU"] == 2.0
    assert node_a.labels["zone"] == "a" and node_a.labels["num_gpus"] == "2"
    assert node_a.num_cpus == 4.0 and node_a.memory > 0
    holder = GpuUser.options(num_gpus=1).remote()
    ag.get(holder.run.remote(0), timeout=START_TIMEOUT_S)
    status = two.cluster.status()
    node_a = next(n for n in status.nodes if n.node_id == two.a)
    assert node_a.used["GPU"] == 1.0 and node_a.free["GPU"] == 1.0
    assert status.used["GPU"] == 1.0
    ag.kill(holder)


@ag.remote
class Where:
    def run(self, seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()


def test_memory_is_held_like_any_resource(two: TwoNodes) -> None:
    workers = [w for w in two.cluster.status().workers if w.node_id == two.a]
    share = workers[0].resources["memory"]  # node A's memory, split over its four workers
    # Actors each holding 60% of a worker's memory share cannot share a worker; placement
    # counts what those it placed hold, so four of them, created back to back, go to node A's
    # four workers and all hold at once (none waits behind another on its worker).
    on_a = {"zone": "a"}
    actors = [Where.options(memory=0.6 * share, label_selector=on_a).remote() for _ in range(4)]
    try:
        pids = ag.get([a.run.remote(0) for a in actors], timeout=START_TIMEOUT_S)
        assert len(set(pids)) == 4
        held = wait_for(
            lambda: (
                (h := [w for w in two.cluster.status().workers if w.held.get("memory")])
                and len(h) == 4
                and h
            ),
            what="the four actors' workers holding memory in the status",
        )
        assert sorted(w.pid for w in held) == sorted(pids)
        assert all(w.held["memory"] == pytest.approx(0.6 * share) for w in held)
        # With one of them left, tasks asking as much run on the other three workers only
        # (by load alone, about one in four would go to its worker and wait there).
        for a in actors[1:]:
            ag.kill(a)
        refs = [
            pid_and_gpus.options(memory=0.6 * share, label_selector=on_a).remote()
            for _ in range(12)
        ]
        ran = {pid for pid, _, _ in ag.get(refs, timeout=START_TIMEOUT_S)}
        assert pids[0] not in ran and len(ran) >= 1
    finally:
        for a in actors:
            ag.kill(a)


def test_an_allocation_filter_places_instances_by_node_record(two: TwoNodes) -> None:
    seen: list[ag.NodeStatistics] = []

    def one_on_b(node: ag.NodeStatistics) -> int:
        seen.append(node)
        return 1 if node.labels.get("zone") == "b" else 0

    with ag.ActorPool(Where, allocate=one_on_b) as pool:
        assert pool.workers_count() == 1
        pids = pool.map([0.1, 0.1, 0.1])
    assert {two.node_of(pid) for pid in pids} == {two.b}
    record = next(n for n in seen if n.node_id == two.b)
    assert record.platform == sys.platform
    assert record.num_cpus == 1.0 and record.memory > 0 and record.resources["camera"] == 1.0


def _spans(seconds: float) -> tuple[int, float, float]:
    start = time.time()
    time.sleep(seconds)
    return os.getpid(), start, time.time()


def test_an_allocation_filter_on_ag_pool_bounds_chunks_per_node(two: TwoNodes) -> None:
    def two_on_a(node: ag.NodeStatistics) -> int:
        return 2 if node.labels.get("zone") == "a" else 0

    with ag.Pool(allocate=two_on_a) as pool:
        assert pool.processes == 2
        spans = pool.map(_spans, [0.3] * 8, chunksize=1)
    assert {two.node_of(pid) for pid, _, _ in spans} == {two.a}
    # Never more than two chunks at once: at each chunk's start, count those running.
    running = [sum(1 for _, s, e in spans if s <= start < e) for _, start, _ in spans]
    assert max(running) <= 2

    with ag.Pool(allocate=lambda n: 1 if n.labels.get("zone") == "b" else 0) as pool:
        pids = pool.map(_pid, range(4), chunksize=1)
    assert {two.node_of(pid) for pid in pids} == {two.b}
    with pytest.raises(ValueError, match="processes= or allocate="):
        ag.Pool(2, allocate=two_on_a)


def _pid(_: object) -> int:
    return os.getpid()


def test_run_on_each_node_subscribed_runs_on_nodes_that_join_later(
    two: TwoNodes, tmp_path: Path
) -> None:
    # The last test on the cluster: node C leaves it behind as a dead node.
    with ag.run_on_each_node(os.getpid, subscribe=True) as subscription:
        assert set(subscription.results(timeout=START_TIMEOUT_S)) == {two.a, two.b}
        node_c = _start_node(
            tmp_path, two.cluster, two.secret, "node_c", "--num-workers", "1", "--labels", "zone=c"
        )
        try:
            wait_for(lambda: len(subscription.refs) == 3, START_TIMEOUT_S, "node C's call")
            results = subscription.results(timeout=START_TIMEOUT_S)
            node_c_id = next(n for n in results if n not in (two.a, two.b))
            assert two.node_of(results[node_c_id]) == node_c_id
        finally:
            _stop(node_c)
    assert "closed" in repr(subscription)


def test_bad_placement_options_fail_at_options_and_say_what_is_accepted() -> None:
    with pytest.raises(ValueError, match="num_gpus must be a number >= 0"):
        pid_and_gpus.options(num_gpus=-1)
    with pytest.raises(ValueError, match="'SPREAD'"):
        pid_and_gpus.options(scheduling_strategy="PACK")
    with pytest.raises(ValueError, match="in\\(a,b\\)"):
        pid_and_gpus.options(label_selector={"zone": "!"})
    with pytest.raises(ValueError, match="num_gpus="):
        pid_and_gpus.options(resources={"GPU": 1})
    with pytest.raises(ValueError, match="full hex"):
        pid_and_gpus.options(scheduling_strategy=ag.NodeAffinity("node-1"))
