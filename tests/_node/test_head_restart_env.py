"""A restarted head rebuilds its runtime-environment and job tables from the reports of the
processes that reconnect (drivers ship their environments again, a job's driver says which
job it is, nodes say which environments they have workers of, and those nobody claims are
released), as it rebuilds membership.

Real processes: ``actorgrid up`` (the head), ``actorgrid node`` (two workers), a driver with
a runtime_env in this process, a second driver of another env that dies while the head is
away, a job submitted with ``actorgrid submit --no-wait``, a node that joins afterwards. The head
is SIGKILLed and started again with the same command line (the helpers of
``test_head_restart``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from _node.test_head_restart import PULSE_S, START_TIMEOUT_S, UpCluster, _wait_for, up_cluster

import actorgrid as ag
from actorgrid._node.envhead import ORPHAN_ENV_GRACE_S

__all__ = ["up_cluster"]  # the fixture, imported for the tests here

_JOB = """
import os, time
import actorgrid as ag
from actorgrid._node.envhead import ORPHAN_ENV_GRACE_S

ag.init()
print("job ready", flush=True)
while not os.path.exists("go"):
    time.sleep(0.05)
print("job goes on after the head restart", flush=True)
time.sleep(600)
"""


_OTHER = """
import sys, time
import actorgrid as ag
from actorgrid._node.envhead import ORPHAN_ENV_GRACE_S

@ag.remote
def mark():
    import os
    return os.environ.get("MARK")

ag.init(address=sys.argv[1], secret=bytes.fromhex(sys.argv[2]),
        runtime_env={"env_vars": {"MARK": "b"}})
print(ag.get(mark.remote(), timeout=60), flush=True)
time.sleep(600)
"""


@ag.remote
def mark() -> str | None:
    return os.environ.get("MARK")


def _jobs(cluster: UpCluster) -> dict[str, dict[str, object]]:
    listed = cluster.cli("jobs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {j["job_id"]: j for j in json.loads(listed.stdout)}


def _job_if_up(cluster: UpCluster, job_id: str) -> dict[str, object] | None:
    """The job as the head lists it; None while the head is not up yet."""
    listed = cluster.cli("jobs", "list", "--json")
    if listed.returncode != 0:
        return None
    found: dict[str, object] | None = {j["job_id"]: j for j in json.loads(listed.stdout)}.get(
        job_id
    )
    return found


def _family(pid: int) -> set[int]:
    try:
        return {c.pid for c in psutil.Process(pid).children()}
    except psutil.NoSuchProcess:
        return set()


@pytest.mark.timeout(300)  # two head starts, three nodes' worth of workers, on 2 loaded cores
def test_a_restarted_head_gets_its_envs_and_jobs_back_from_who_reconnects(
    up_cluster: UpCluster,
) -> None:
    up_cluster.up()
    up_cluster.start_node()
    _wait_for(lambda: "joined the head" in up_cluster.node_output(), START_TIMEOUT_S, "the node")
    # Its two base workers (it says it joined before they are all started).
    base = _wait_for(lambda: len(w := up_cluster.node_workers()) == 2 and w, START_TIMEOUT_S,
                     "the node's two base workers")  # fmt: skip
    cluster = ag.init(
        address=up_cluster.address,
        secret=up_cluster.secret(),
        pulse_interval=PULSE_S,
        runtime_env={"env_vars": {"MARK": "env"}},
    )
    assert ag.get(mark.remote(), timeout=START_TIMEOUT_S) == "env"
    env_workers = up_cluster.node_workers() - base
    assert len(env_workers) == 2
    (up_cluster.folder / "job.py").write_text(_JOB)
    submitted = up_cluster.cli("submit", "--no-wait", "--", sys.executable, "job.py")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    up_cluster.roots.append(int(str(_jobs(up_cluster)[job_id]["pid"])))  # cleaned up with it
    _wait_for(lambda: "job ready" in up_cluster.cli("jobs", "logs", job_id).stdout,
              START_TIMEOUT_S, "the job's driver")  # fmt: skip

    # A second driver, of another environment, dies while the head is away: nobody claims
    # its environment from the new head, which releases it after a grace period.
    other = subprocess.Popen(
        [sys.executable, "-c", _OTHER, up_cluster.address, up_cluster.secret().hex()],
        cwd=up_cluster.folder, env=up_cluster.env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    up_cluster.roots.append(other.pid)
    assert other.stdout is not None and other.stdout.readline().strip() == "b"
    other_workers = up_cluster.node_workers() - base - env_workers
    assert len(other_workers) == 2

    quick = up_cluster.cli("submit", "--", sys.executable, "-c", "print('quick job done')")
    assert quick.returncode == 0 and "quick job done" in quick.stdout, quick.stderr
    quick_id = _wait_for(
        lambda: next((j for j, v in _jobs(up_cluster).items() if v["state"] == "succeeded"), None),
        START_TIMEOUT_S, "the quick job listed",
    )  # fmt: skip

    up_cluster.kill_and_restart_head()
    other.kill()
    other.wait(timeout=30)
    other.stdout.close()
    # The job's driver reconnects and says which job it is: the new head lists it again.
    job = _wait_for(lambda: _job_if_up(up_cluster, job_id), START_TIMEOUT_S, "the job back")
    assert job["state"] == "running"
    # Its output, from before the restart and after, is still there for `jobs logs`.
    assert "job ready" in up_cluster.cli("jobs", "logs", job_id).stdout
    (up_cluster.folder / "go").touch()
    # A job that ended before the restart: the new head never ran it, its file has its output.
    assert "quick job done" in up_cluster.cli("jobs", "logs", str(quick_id)).stdout
    _wait_for(lambda: "goes on after" in up_cluster.cli("jobs", "logs", job_id).stdout,
              START_TIMEOUT_S, "the job's output after the restart")  # fmt: skip
    assert ag.get(mark.remote(), timeout=START_TIMEOUT_S) == "env"

    # The driver shipped its environment to the new head again: a node that joins now gets
    # workers of it too, and the driver's calls can use them.
    secret_file = up_cluster.cluster_file.with_name("cluster.secret")
    with (up_cluster.folder / "node2.out").open("wb") as out:
        node2 = up_cluster._popen(
            [
                sys.executable, "-m", "actorgrid.cli", "node", "--address", up_cluster.address,
                "--secret-file", str(secret_file), "--num-workers", "1",
                "--pulse-interval", str(PULSE_S),
            ],
            cwd=up_cluster.folder, out=out,
        )  # fmt: skip
    up_cluster.roots.append(node2.pid)
    _wait_for(lambda: len(cluster.workers()) == 3, START_TIMEOUT_S, "the new node's env worker")
    # The third is the new node's worker of this env. (The node may have started workers of
    # other envs the head still holds, e.g. the orphaned one within its grace period.)
    assert {w.pid for w in cluster.workers()} & _family(node2.pid)

    # The orphaned environment was released: its workers stopped.
    _wait_for(lambda: not (up_cluster.node_workers() & other_workers),
              ORPHAN_ENV_GRACE_S + START_TIMEOUT_S, "the orphaned env's workers to stop")  # fmt: skip

    # The new head counts the driver among the environment's users: when it leaves, the
    # environment's workers stop, the base ones stay.
    ag.shutdown()
    _wait_for(lambda: not (up_cluster.node_workers() & env_workers), START_TIMEOUT_S,
              "the env's workers to stop")  # fmt: skip
    assert up_cluster.node_workers() == base

    # The rejoined job can be stopped from the new head.
    stopped = up_cluster.cli("jobs", "stop", job_id)
    assert stopped.returncode == 0, stopped.stderr
    assert _jobs(up_cluster)[job_id]["state"] == "stopped"
    node2.kill()
    node2.wait(timeout=30)
    assert (
        not Path(f"/proc/{job['pid']}").exists()
        or psutil.Process(int(str(job["pid"]))).status() == psutil.STATUS_ZOMBIE
    )
