"""A head that dies is restarted on its address, and the cluster carries on (issue 15).

Real processes: ``actorgrid up`` (the head), ``actorgrid node`` (the workers), a driver in
this process and a second driver in a subprocess. The head is SIGKILLed in the middle of a
map and started again with the same command line (as a service manager would): the map
finishes, the node and its workers rejoin under their identity, and the new head knows the
names and the detached actor again (a new driver finds them by name, with their state).

The head's decisions on a rejoin (``_scheduler/rejoin.py``) are tested here too, without a
network.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import actorgrid as ag
from actorgrid._protocol.ids import new_actor_id, new_node_id, new_object_id, new_worker_id
from actorgrid._protocol.messages import (
    ActorInfo,
    CreateActor,
    Payload,
    RejoinWorker,
    WorkerInfo,
)
from actorgrid._scheduler.detached import DetachedTable
from actorgrid._scheduler.names import NameRegistry
from actorgrid._scheduler.rejoin import FenceTable, restore_worker

PULSE_S = 0.5
# A start or a join on a loaded 2-core machine takes a few seconds; this is a bound, not a wait.
START_TIMEOUT_S = 60.0


# --- the head's decisions ---------------------------------------------------------------------


def _worker(address: str = "10.0.0.2:4000") -> WorkerInfo:
    return WorkerInfo(new_worker_id(), new_node_id(), address, 1, "h2", 1.0)


def _actor(address: str, name: str | None, *, detached: bool = False) -> ActorInfo:
    return ActorInfo(
        new_actor_id(), address, "class", "Keeper", name, None, detached=detached, max_restarts=-1
    )


def test_the_head_that_declared_a_node_dead_refuses_it_back_and_a_new_head_does_not() -> None:
    node = new_node_id()
    same_head, restarted_head = FenceTable(), FenceTable()
    same_head.declare_dead(node, "its link closed: no pulse for 5 s")
    why = same_head.refusal(node, "node n1")
    assert why is not None
    assert "declared dead by this head (its link closed: no pulse for 5 s)" in why
    assert "join as a new node" in why
    assert restarted_head.refusal(node, "node n1") is None


def test_the_fence_memory_is_bounded_oldest_first() -> None:
    fences = FenceTable(capacity=2)
    first, second, third = new_worker_id(), new_worker_id(), new_worker_id()
    for ident in (first, second, third):
        fences.declare_dead(ident, "gone")
    assert len(fences) == 2
    assert fences.refusal(first, "w") is None
    assert fences.refusal(third, "w") is not None


def test_a_rejoining_worker_gives_back_its_names_and_detached_actors() -> None:
    worker = _worker()
    named = _actor(worker.address, "ring-0")
    keeper = _actor(worker.address, "keeper", detached=True)
    unnamed = _actor(worker.address, None)
    create = CreateActor(new_object_id(), keeper, b"cls", b"code", Payload(b"args"), 1)
    names, detached = NameRegistry(), DetachedTable()
    taken = _actor("10.0.0.3:4000", "taken")
    names.register(taken, False)
    clash = _actor(worker.address, "taken")
    report = RejoinWorker(1, worker, (named, keeper, unnamed, clash), (create,))

    lost = restore_worker(report, names, detached)

    assert names.lookup("ring-0", None) == named
    assert names.lookup("keeper", None) == keeper
    assert names.lookup("taken", None) == taken  # the name stays with who took it meanwhile
    assert len(lost) == 1 and "'taken'" in lost[0] and "keeps running" in lost[0]
    # The head restarts the detached actor if its worker goes later.
    assert detached.address_gone(worker.address) == [create]


# --- a real cluster ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@ag.remote
def slow_square(i: int) -> int:
    time.sleep(0.05)
    return i * i


@ag.remote
class Keeper:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n

    def pid(self) -> int:
        return os.getpid()


_SECOND_DRIVER = """
import json, sys
import actorgrid as ag

ag.init(address=sys.argv[1], secret=bytes.fromhex(sys.argv[2]))
found = {}
for name in ("keeper", "counter"):
    try:
        found[name] = ag.get(ag.get_actor(name).incr.remote(), timeout=60)
    except ag.NameNotFoundError:
        found[name] = None
print(json.dumps(found), flush=True)
ag.shutdown()
"""


class UpCluster:
    """``actorgrid up`` with no workers of its own, and one ``actorgrid node`` with two."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cluster_file = folder / "cluster.json"
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "ACTORGRID_CLUSTER_FILE": str(self.cluster_file),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("ACTORGRID_ADDRESS", None)
        self.env.pop("ACTORGRID_SECRET", None)
        self.roots: list[int] = []  # every process tree this test started
        self.node: subprocess.Popen[bytes] | None = None
        self.head_again: subprocess.Popen[bytes] | None = None

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "actorgrid.cli", *argv],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def head_pid(self) -> int:
        sidecar = json.loads(self.cluster_file.with_name("cluster.processes.json").read_text())
        return int(sidecar["head"]["pid"])

    def secret(self) -> bytes:
        return ag.ClusterFile.load(self.cluster_file).secret

    def up(self) -> None:
        up = self.cli(
            "up", "--num-workers", "0", "--port", str(self.port),
            "--pulse-interval", str(PULSE_S),
        )  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        self.roots.append(self.head_pid())

    def start_node(self) -> None:
        secret_file = self.cluster_file.with_name("cluster.secret")
        with (self.folder / "node.out").open("wb") as out:
            self.node = self._popen(
            [
                sys.executable, "-m", "actorgrid.cli", "node", "--address", self.address,
                "--secret-file", str(secret_file), "--num-workers", "2",
                "--pulse-interval", str(PULSE_S),
            ],
            cwd=self.folder, out=out,
        )  # fmt: skip
        self.roots.append(self.node.pid)

    def second_driver(self) -> dict[str, int | None]:
        """What a driver that never knew the old head finds by name (and each call's count)."""
        run = subprocess.run(
            [sys.executable, "-c", _SECOND_DRIVER, self.address, self.secret().hex()],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        found: dict[str, int | None] = json.loads(run.stdout)
        return found

    def node_output(self) -> str:
        return (self.folder / "node.out").read_text(errors="replace")

    def node_workers(self) -> set[int]:
        assert self.node is not None
        return {p.pid for p in psutil.Process(self.node.pid).children()}

    def kill_and_restart_head(self) -> None:
        pid = self.head_pid()
        head = psutil.Process(pid)
        argv, cwd = head.cmdline(), head.cwd()
        head.kill()
        head.wait(timeout=10)
        with (self.folder / "head-again.log").open("wb") as out:
            self.head_again = self._popen(argv, cwd=cwd, out=out)
        self.roots.append(self.head_again.pid)

    def _popen(self, argv: list[str], *, cwd: str | Path, out: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def all_pids(self) -> list[int]:
        pids = []
        for root in self.roots:
            try:
                proc = psutil.Process(root)
                pids += [root, *(c.pid for c in proc.children(recursive=True))]
            except psutil.NoSuchProcess:
                pass
        return pids


@pytest.fixture
def up_cluster(tmp_path: Path, processes) -> Iterator[UpCluster]:
    cluster = UpCluster(tmp_path)
    try:
        yield cluster
    finally:
        ag.shutdown()
        pids = cluster.all_pids()
        processes.add(pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for popen in (cluster.node, cluster.head_again):
            if popen is not None:
                popen.wait(timeout=10)
        processes.wait_gone()


def test_a_head_killed_mid_map_and_restarted_gets_its_nodes_names_and_detached_actors_back(
    up_cluster: UpCluster,
) -> None:
    up_cluster.up()
    up_cluster.start_node()
    _wait_for(lambda: "joined the head" in up_cluster.node_output(), START_TIMEOUT_S, "the node")
    cluster = ag.init(
        address=up_cluster.address, secret=up_cluster.secret(), pulse_interval=PULSE_S
    )
    _wait_for(lambda: len(cluster.workers()) == 2, START_TIMEOUT_S, "both workers")
    keeper = Keeper.options(name="keeper", lifetime="detached", max_restarts=-1).remote()
    counter = Keeper.options(name="counter", max_restarts=1).remote()
    assert ag.get([keeper.incr.remote(), counter.incr.remote()], timeout=START_TIMEOUT_S) == [1, 1]
    workers_before = up_cluster.node_workers()
    assert ag.get(keeper.pid.remote(), timeout=START_TIMEOUT_S) in workers_before

    refs = [slow_square.remote(i) for i in range(200)]
    assert ag.get(refs[0], timeout=START_TIMEOUT_S) == 0  # the map is under way
    up_cluster.kill_and_restart_head()

    assert ag.get(refs, timeout=120) == [i * i for i in range(200)]
    # The node kept its workers (nothing was fenced) and rejoined the new head with them.
    _wait_for(
        lambda: "rejoined the head" in up_cluster.node_output(), START_TIMEOUT_S, "the rejoin"
    )
    assert up_cluster.node_workers() == workers_before
    # Its log says what happened, each line with the time, the role, the pid and the level.
    assert up_cluster.node is not None
    lost = re.compile(
        rf"^\d{{4}}-\d\d-\d\d [\d:,]+ node\[{up_cluster.node.pid}\] WARNING actorgrid.node: "
        rf"lost the head at {re.escape(up_cluster.address)} \(.+\); reconnecting",
        re.MULTILINE,
    )
    assert lost.search(up_cluster.node_output()), up_cluster.node_output()
    # A driver that never knew the old head finds both names on the new one, and the actors
    # kept their state.
    assert up_cluster.second_driver() == {"keeper": 2, "counter": 2}
    # This driver's handles still work, and the new head knows it owns "counter": when it
    # leaves, "counter" ends with it, while the detached "keeper" stays.
    assert ag.get(counter.incr.remote(), timeout=START_TIMEOUT_S) == 3
    ag.shutdown()
    after = _wait_for(
        lambda: (found := up_cluster.second_driver())["counter"] is None and found,
        START_TIMEOUT_S,
        "the owned actor to end with its owner",
    )
    assert (after["keeper"] or 0) >= 3  # each look counts one more call on it
