"""Each GPU belongs to one worker at a time, base workers and runtime environments' workers
alike (the node's GPU ledger, ``_scheduler/gpus.py`` and ``_node/gpuslots.py``).

Real processes: an embedded cluster (two workers, two declared GPUs: this machine needs
none) in this process, and a second driver, with a runtime_env of its own, in a subprocess.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psutil
import pytest

import actorgrid as ag

START_TIMEOUT_S = 90.0  # a bound for starts on a loaded 2-core machine, not a wait
T = TypeVar("T")

_OTHER = """
import json, os, sys
import actorgrid as ag

@ag.remote(num_gpus=1)
class GpuUser:
    def visible(self):
        return os.environ.get("CUDA_VISIBLE_DEVICES"), ag.get_gpu_ids(), os.getpid()

ag.init(address=sys.argv[1], secret=bytes.fromhex(sys.argv[2]),
        runtime_env={"env_vars": {"WHO": "other"}})
users = [GpuUser.remote() for _ in range(2)]
print(json.dumps(ag.get([u.visible.remote() for u in users], timeout=120)), flush=True)
sys.stdin.readline()  # until the test closes it
"""


@ag.remote
def pid_and_gpus() -> tuple[int, str | None, list[Any]]:
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"), ag.get_gpu_ids()


@ag.remote(num_gpus=1)
class BaseGpuUser:
    def visible(self) -> tuple[int, str | None]:
        return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _gpus_of_live_workers(cluster: ag.Cluster) -> dict[int, tuple[str, ...]]:
    """Every worker of the cluster (any driver's, any environment's) and its GPUs."""
    return {w.pid: w.gpu_ids for w in cluster.status().workers if w.gpu_ids}


@pytest.mark.slow  # two drivers' workers, each started twice, on 2 loaded cores
@pytest.mark.timeout(240)
def test_base_and_env_workers_never_hold_one_gpu_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="actorgrid.node")
    caplog.set_level(logging.WARNING, logger="actorgrid.runtime")
    secret = os.urandom(32)
    cluster = ag.init(
        num_workers=2,
        secret=secret,
        resources={"GPU": 2},
        pulse_interval=0.2,
        pending_warning_s=0.5,
    )
    family = [p for w in cluster.workers() for p in psutil.Process(w.pid).children()]
    other: subprocess.Popen[str] | None = None
    try:
        base = {w.pid: w.gpu_ids for w in cluster.status().workers}
        assert sorted(base.values()) == [("0",), ("1",)]
        # This driver's actor holds one base worker's GPU.
        holder = BaseGpuUser.remote()
        holder_pid, holder_gpu = ag.get(holder.visible.remote(), timeout=START_TIMEOUT_S)
        assert base[holder_pid] == (holder_gpu,)

        # Another driver's environment: its workers come first, and take the GPUs of base
        # workers (which are closed and start again without one), but never one in use: its
        # second worker waits for the holder's GPU, and the node says why and what frees it.
        other = subprocess.Popen(
            [sys.executable, "-c", _OTHER, cluster.address, secret.hex()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert other.stdout is not None
        wait_for(
            lambda: f"GPU {holder_gpu} by base worker slot" in caplog.text,
            START_TIMEOUT_S, "the warning that the env worker waits for the holder's GPU",
        )  # fmt: skip
        assert f"(pid {holder_pid}), where a live actor or a running call holds it" in caplog.text
        assert "ag.kill" in caplog.text
        # The holder lives on, on its worker, with its GPU.
        assert ag.get(holder.visible.remote(), timeout=START_TIMEOUT_S) == (holder_pid, holder_gpu)
        ag.kill(holder)  # its GPU is handed over to the environment's worker
        seen = json.loads(other.stdout.readline())
        assert sorted((cuda, ids) for cuda, ids, _ in seen) == [("0", [0]), ("1", [1])]
        env_pids = {pid for _, _, pid in seen}
        assert not env_pids & set(base)
        # Never the same GPU in two live workers: the head lists each worker's GPUs.
        held = wait_for(
            lambda: (g := _gpus_of_live_workers(cluster)) and set(g) == env_pids and g,
            START_TIMEOUT_S, "the env workers alone to hold the GPUs",
        )  # fmt: skip
        assert sorted(held.values()) == [("0",), ("1",)]
        plain = ag.get(pid_and_gpus.remote(), timeout=START_TIMEOUT_S)
        assert plain[1:] == ("", [])  # a base worker without a GPU sees none

        # A base call that needs a GPU waits while none is free, and the node says why.
        ref = pid_and_gpus.options(num_gpus=1).remote()
        # Absence: nothing can give a GPU back while the other driver lives; 2 s is ample
        # for a call that could run to run.
        ready, _ = ag.wait([ref], timeout=2.0)
        assert not ready
        assert "base worker slot" in caplog.text and "starts without its 1 GPU(s)" in caplog.text
        # This driver's pending warning says where the GPUs are, not that the cluster has none.
        text = wait_for(
            lambda: next(
                (r.getMessage() for r in caplog.records if "needs 1 CPU, GPU=1" in r.getMessage()),
                None,
            ),
            START_TIMEOUT_S, "the pending warning",
        )  # fmt: skip
        assert "offer GPU=0 in all" in text
        assert "the workers of another driver's runtime_env may hold it" in text

        # The other driver leaves: its environment's workers stop, their GPUs come back.
        assert other.stdin is not None
        other.stdin.close()
        other.wait(timeout=START_TIMEOUT_S)
        pid, cuda, ids = ag.get(ref, timeout=START_TIMEOUT_S)
        assert cuda in ("0", "1") and ids == [int(cuda)] and pid not in env_pids
        held = wait_for(
            lambda: (g := _gpus_of_live_workers(cluster)) and len(g) == 2 and g,
            START_TIMEOUT_S, "both GPUs back with base workers",
        )  # fmt: skip
        assert sorted(held.values()) == [("0",), ("1",)] and not set(held) & env_pids
    finally:
        if other is not None:
            if other.poll() is None:
                other.kill()
                other.wait(timeout=30)
            for pipe in (other.stdin, other.stdout):
                if pipe is not None:
                    pipe.close()
        ag.shutdown()
        alive = psutil.wait_procs(family, timeout=30)[1]
        assert not alive, f"processes outlived the cluster: {alive}"


@ag.remote(resources={"camera": 1})
class CameraUser:
    def where(self) -> tuple[int, str | None]:
        return os.getpid(), os.environ.get("WHO")


@pytest.mark.timeout(240)
def test_a_custom_resource_is_held_by_one_worker_at_a_time_across_runtime_envs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One worker, one camera: a runtime_env's worker stands beside the base worker with the
    # same share. Both offering the camera would let two actors hold it at once.
    caplog.set_level(logging.WARNING, logger="actorgrid.node")
    cluster = ag.init(num_workers=1, resources={"camera": 1}, pulse_interval=0.2)
    family = [p for w in cluster.workers() for p in psutil.Process(w.pid).children()]
    try:
        base = CameraUser.remote()
        base_pid, _ = ag.get(base.where.remote(), timeout=START_TIMEOUT_S)
        other = CameraUser.options(runtime_env={"env_vars": {"WHO": "env"}}).remote()
        waiting = other.where.remote()
        wait_for(
            lambda: "of runtime_env" in caplog.text and "starts without its camera=1" in caplog.text,
            START_TIMEOUT_S, "the warning that the env worker waits for the camera",
        )  # fmt: skip
        assert f"by base worker slot 0 (pid {base_pid})" in caplog.text
        # Absence: the env worker is up without the camera; 2 s is ample for an actor that
        # could be created to answer.
        ready, _ = ag.wait([waiting], timeout=2.0)
        assert not ready
        assert cluster.status().used.get("camera") == 1.0
        assert ag.get(base.where.remote(), timeout=START_TIMEOUT_S) == (base_pid, None)
        ag.kill(base)  # the camera is handed over to the env's worker
        pid, who = ag.get(waiting, timeout=START_TIMEOUT_S)
        assert who == "env" and pid != base_pid
        assert cluster.status().used.get("camera") == 1.0
        ag.kill(other)
    finally:
        ag.shutdown()
        alive = psutil.wait_procs(family, timeout=30)[1]
        assert not alive, f"processes outlived the cluster: {alive}"
