"""Runtime environments on real clusters: shipped code, variables, hooks, isolation.

Each test starts an embedded cluster of its own (``ag.connect(runtime_env=...)``), so the
code it ships lives only in a temporary folder that neither this process nor the cluster's
base workers have on their path: a worker that imports it got it through the package the
node fetched from the head.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psutil
import pytest
import trio
from conftest import ProcessWatch

import actorgrid as ag

GET_TIMEOUT_S = 60.0
LINE_TIMEOUT_S = 60.0


def _project(root: Path) -> tuple[Path, str, str]:
    """A working_dir with a module, a package for py_modules, and a log to exclude."""
    mod = f"shipped_{uuid.uuid4().hex[:8]}"
    pkg = f"pkg_{uuid.uuid4().hex[:8]}"
    work = root / "work"
    work.mkdir()
    (work / f"{mod}.py").write_text("import os\n\ndef where():\n    return __file__\n")
    (work / "debug.log").write_text("not shipped")
    (root / pkg).mkdir()
    (root / pkg / "__init__.py").write_text("ANSWER = 42\n")
    return work, mod, pkg


@ag.remote
def probe(mod: str, pkg: str) -> dict[str, object]:
    import importlib

    return {
        "module_file": importlib.import_module(mod).where(),
        "answer": importlib.import_module(pkg).ANSWER,
        "cwd": os.getcwd(),
        "log_shipped": os.path.exists("debug.log"),
        "greeting": os.environ.get("GREETING"),
        "secret": os.environ.get("ACTORGRID_SECRET"),
    }


@ag.remote
class Probe:
    def greeting(self) -> str | None:
        return os.environ.get("GREETING")


async def test_working_dir_py_modules_and_env_vars_reach_tasks_and_actors(
    tmp_path: Path,
) -> None:
    work, mod, pkg = _project(tmp_path)
    runtime_env = {
        "working_dir": str(work),
        "py_modules": [str(tmp_path / pkg)],
        "env_vars": {"GREETING": "hello"},
        "excludes": ["*.log"],
    }
    async with ag.connect(num_workers=1, runtime_env=runtime_env) as cluster:
        with trio.fail_after(GET_TIMEOUT_S):
            seen = await probe.remote(mod, pkg)
            actor = Probe.remote()
            assert await actor.greeting.remote() == "hello"
        assert seen["answer"] == 42
        assert seen["greeting"] == "hello"
        assert seen["secret"] is None  # env_vars add to the environment, never the secret
        assert seen["log_shipped"] is False  # excluded
        module_file = Path(str(seen["module_file"]))
        assert not module_file.is_relative_to(tmp_path)  # the shipped copy, not the source
        assert module_file.parent == Path(str(seen["cwd"]))  # working_dir is the cwd
        # The driver sees only its environment's workers, one per node slot.
        assert len(cluster.workers()) == 1
    # The node's cache of shipped packages lives in its session folder, gone with the node.
    assert not module_file.parent.exists()


def _fails_to_set_up() -> None:
    raise ValueError("no licence server at 10.0.0.1")


async def test_a_failing_worker_setup_is_a_clear_error_naming_hook_and_node(
    processes: ProcessWatch,
) -> None:
    pids_before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(ag.RuntimeEnvError) as info:
        async with ag.connect(num_workers=1, runtime_env={"worker_setup": _fails_to_set_up}):
            pytest.fail("the cluster started although worker_setup fails")
    message = str(info.value)
    assert "worker_setup failed" in message
    assert socket.gethostname() in message and "node " in message
    assert "ValueError: no licence server at 10.0.0.1" in message
    assert "not used" in message
    processes.add(p.pid for p in psutil.Process().children(recursive=True))
    processes.wait_gone(set(processes.alive()) - pids_before)


async def test_node_hooks_run_once_per_node_and_worker_setup_once_per_worker(
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.txt"

    def node_setup() -> None:
        with open(record, "a") as f:
            f.write("node_setup\n")

    def node_cleanup() -> None:
        with open(record, "a") as f:
            f.write("node_cleanup\n")

    def worker_setup() -> None:
        with open(record, "a") as f:
            f.write(f"worker_setup {os.getpid()}\n")
        os.environ["SET_UP_BY"] = str(os.getpid())

    @ag.remote
    def set_up_by() -> tuple[int, str | None]:
        return os.getpid(), os.environ.get("SET_UP_BY")

    runtime_env = {
        "node_setup": node_setup,
        "node_cleanup": node_cleanup,
        "worker_setup": worker_setup,
    }
    async with ag.connect(num_workers=2, runtime_env=runtime_env):
        with trio.fail_after(GET_TIMEOUT_S):
            results = [await set_up_by.remote() for _ in range(6)]
        # worker_setup ran in the very process that runs the tasks, before them.
        assert all(str(pid) == marker for pid, marker in results)
        lines = record.read_text().splitlines()
        assert lines.count("node_setup") == 1
        set_up = [int(x.split()[1]) for x in lines if x.startswith("worker_setup")]
        assert len(set_up) == len(set(set_up)) == 2  # once in each of the two workers
        assert {pid for pid, _ in results} <= set(set_up)
        assert "node_cleanup" not in lines
    assert record.read_text().splitlines().count("node_cleanup") == 1


_OTHER_DRIVER = """
import json, os, sys
import actorgrid as ag

@ag.remote
def mark():
    return os.environ.get("MARK"), os.getpid()

with ag.init(address=sys.argv[1], runtime_env={"env_vars": {"MARK": "driver-b"}}) as cluster:
    print(json.dumps({"seen": ag.get(mark.remote(), timeout=60),
                      "workers": [w.pid for w in cluster.workers()]}), flush=True)
    sys.stdin.readline()
"""


@ag.remote
def marker() -> tuple[str | None, int]:
    return os.environ.get("MARK"), os.getpid()


async def test_one_drivers_environment_does_not_reach_another_drivers_workers(
    tmp_path: Path, processes: ProcessWatch
) -> None:
    secret = os.urandom(32)
    async with ag.connect(num_workers=1, secret=secret) as cluster:
        base_pids = set(cluster.node_pids)
        script = tmp_path / "driver_b.py"
        script.write_text(textwrap.dedent(_OTHER_DRIVER))
        env = {**os.environ, "ACTORGRID_SECRET": secret.hex()}
        proc = subprocess.Popen(
            [sys.executable, str(script), cluster.address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        processes.add([proc.pid])
        try:
            with trio.fail_after(LINE_TIMEOUT_S):
                line = await trio.to_thread.run_sync(proc.stdout.readline)  # type: ignore[union-attr]
            other = json.loads(line)
            assert other["seen"][0] == "driver-b"
            env_worker = other["seen"][1]
            assert env_worker not in base_pids and env_worker in cluster.node_pids
            assert other["workers"] == [env_worker]  # B sees only its own env's workers
            with trio.fail_after(GET_TIMEOUT_S):
                for _ in range(4):
                    mark, pid = await marker.remote()
                    assert mark is None and pid in base_pids
            assert {w.pid for w in cluster.workers()} == base_pids
            proc.stdin.close()  # type: ignore[union-attr]
            assert await trio.to_thread.run_sync(proc.wait) == 0
            # B's environment is released with it: its worker stops, the base ones stay.
            processes.add([env_worker])
            await trio.to_thread.run_sync(processes.wait_gone, [env_worker])
            assert set(cluster.node_pids) == base_pids
        finally:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
