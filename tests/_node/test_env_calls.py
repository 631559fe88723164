"""Runtime environments per call (``.options(runtime_env=...)``) and what env workers own.

Each test starts an embedded cluster of its own; the code a call ships lives only in a
temporary folder that neither this process nor the cluster's base workers have on their path,
so a worker that imports it got it through the package its node fetched from the head.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import trio

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
