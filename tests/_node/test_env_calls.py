"""Runtime environments per call (``.options(runtime_env=...)``) and what env workers own.

Each test starts an embedded cluster of its own; the code a call ships lives only in a
temporary folder that neither this process nor the cluster's base workers have on their path,
so a worker that imports it got it through the package its node fetched from the head.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest
import trio
from conftest import ProcessWatch

import actorgrid as ag

GET_TIMEOUT_S = 90.0


def _module(root: Path) -> tuple[Path, str]:
    name = f"percall_{uuid.uuid4().hex[:8]}"
    work = root / "work"
    work.mkdir()
    (work / f"{name}.py").write_text("def answer():\n    return 42\n")
    return work, name


@ag.remote
def where(mod: str | None = None) -> dict[str, object]:
    import importlib

    return {
        "pid": os.getpid(),
        "answer": importlib.import_module(mod).answer() if mod else None,
        "greeting": os.environ.get("GREETING"),
        "cwd": os.getcwd(),
    }


@ag.remote
class Greeter:
    def greeting(self) -> tuple[int, str | None]:
        return os.getpid(), os.environ.get("GREETING")


async def test_a_call_with_its_own_runtime_env_runs_in_a_worker_of_that_env(
    tmp_path: Path,
) -> None:
    work, mod = _module(tmp_path)
    env = {"working_dir": str(work), "env_vars": {"GREETING": "per-call"}}
    async with ag.connect(num_workers=1) as cluster:
        base = set(cluster.node_pids)
        with trio.fail_after(GET_TIMEOUT_S):
            plain = await where.remote()
            shipped = await where.options(runtime_env=env).remote(mod)
            greeter = Greeter.options(runtime_env=env).remote()
            actor_pid, actor_greeting = await greeter.greeting.remote()
            again = await where.remote()  # plain calls stay on the base workers
        assert plain["pid"] in base and plain["greeting"] is None
        assert shipped["answer"] == 42 and shipped["greeting"] == "per-call"
        assert shipped["pid"] not in base and shipped["pid"] in cluster.node_pids
        assert not Path(str(shipped["cwd"])).is_relative_to(tmp_path)  # the shipped copy
        assert actor_greeting == "per-call" and actor_pid not in base
        assert again["pid"] in base and again["greeting"] is None
        # The driver knows the workers its calls use: its own, and the env's (one per slot).
        assert {w.pid for w in cluster.workers()} == base | {shipped["pid"]}


def _fails() -> None:
    raise ValueError("no licence server here")


async def test_a_call_whose_runtime_env_fails_raises_naming_the_hook() -> None:
    async with ag.connect(num_workers=1):
        with trio.fail_after(GET_TIMEOUT_S):
            ref = where.options(runtime_env={"worker_setup": _fails}).remote()
            with pytest.raises(ag.RuntimeEnvError) as info:
                await ref
            actor = Greeter.options(runtime_env={"worker_setup": _fails}).remote()
            with pytest.raises(ag.RuntimeEnvError):
                await actor.greeting.remote()
            assert (await where.remote())["greeting"] is None  # the cluster goes on
    message = str(info.value)
    assert "worker_setup failed" in message
    assert "ValueError: no licence server here" in message


def test_a_bad_per_call_runtime_env_fails_at_options() -> None:
    with pytest.raises(ag.RuntimeEnvError, match="unknown key"):
        where.options(runtime_env={"workdir": "."})
    with pytest.raises(ag.RuntimeEnvError, match="not a folder"):
        Greeter.options(runtime_env={"working_dir": "/no/such/folder"})


@ag.remote(num_gpus=1)
class GpuUser:
    def visible(self) -> tuple[str | None, list[int]]:
        return os.environ.get("CUDA_VISIBLE_DEVICES"), ag.get_gpu_ids()


@ag.remote(resources={"camera": 1})
def shoot() -> str | None:
    return os.environ.get("GREETING")


async def test_env_workers_get_their_share_of_gpus_and_custom_resources() -> None:
    env = {"env_vars": {"GREETING": "env"}}
    async with ag.connect(num_workers=2, resources={"GPU": 2, "camera": 1}, runtime_env=env):
        with trio.fail_after(GET_TIMEOUT_S):
            users = [GpuUser.remote() for _ in range(2)]
            seen = sorted([await u.visible.remote() for u in users])
            assert await shoot.remote() == "env"
        assert seen == [("0", [0]), ("1", [1])]


_CREATOR = """
import json, os, sys
import actorgrid as ag

@ag.remote
class Keeper:
    def where(self):
        return os.environ.get("MARK"), os.getpid()

with ag.init(address=sys.argv[1], runtime_env={"env_vars": {"MARK": "creator"}}):
    keeper = Keeper.options(name="keeper", lifetime="detached", max_restarts=2).remote()
    print(json.dumps(ag.get(keeper.where.remote(), timeout=60)), flush=True)
"""


async def _where_now(name: str, old_pid: int | None = None) -> tuple[str | None, int]:
    """What the named actor answers, once it answers from a process other than ``old_pid``
    (its restart takes a worker restart, so this polls, within a generous deadline)."""
    while True:
        try:
            handle = await ag.get_actor_async(name)
            mark, pid = await handle.where.remote()
            if pid != old_pid:
                return mark, pid
        except (ag.ActorDiedError, ag.NameNotFoundError):
            pass  # between its death and its restart
        await trio.sleep(0.2)


async def test_a_detached_actor_keeps_its_creators_env_after_it_leaves_and_on_restart(
    tmp_path: Path, processes: ProcessWatch
) -> None:
    secret = os.urandom(32)
    async with ag.connect(num_workers=1, secret=secret) as cluster:
        base = set(cluster.node_pids)
        script = tmp_path / "creator.py"
        script.write_text(_CREATOR)
        env = {**os.environ, "ACTORGRID_SECRET": secret.hex()}
        argv = [sys.executable, str(script), cluster.address]
        with trio.fail_after(GET_TIMEOUT_S):
            done = await trio.run_process(argv, env=env, cwd=tmp_path, capture_stdout=True)
        mark, pid = json.loads(done.stdout.decode().splitlines()[-1])
        assert mark == "creator" and pid not in base
        # The creator is gone: its environment stays while the detached actor lives.
        with trio.fail_after(GET_TIMEOUT_S):
            assert await _where_now("keeper") == ("creator", pid)
        processes.add([pid])
        os.kill(pid, signal.SIGKILL)
        # The head restarts it on a worker of the same environment, never a base one.
        with trio.fail_after(GET_TIMEOUT_S):
            mark, new_pid = await _where_now("keeper", old_pid=pid)
        assert mark == "creator" and new_pid not in base
        await ag.kill_async(await ag.get_actor_async("keeper"))
        # Its end releases the environment: its workers stop, the base ones stay.
        processes.add([new_pid])
        await trio.to_thread.run_sync(processes.wait_gone, [new_pid])
        # Every worker of the environment stops, also one its node was still starting (a
        # slot restarts a killed worker at once): poll, the node stops it once it is up.
        with trio.move_on_after(GET_TIMEOUT_S):
            while set(cluster.node_pids) != base:
                await trio.sleep(0.1)
        assert set(cluster.node_pids) == base
