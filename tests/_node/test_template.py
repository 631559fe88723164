"""Workers forked from the template process (Linux): they run calls as spawned workers do, a
killed one comes back, a killed template leaves spawned workers in their place, and nothing
outlives a driver killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

import actorgrid as ag

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the template forks on Linux")

PULSE_S = 0.2
FOREVER = ag.RestartPolicy(max_restarts=-1)


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def template_pids() -> list[int]:
    return [
        p.pid
        for p in psutil.Process().children()
        if "actorgrid._node.templateproc" in " ".join(p.cmdline())
    ]


@ag.remote
def whoami() -> tuple[int, int, str]:
    return os.getpid(), os.getppid(), os.environ.get("HOT3_SEEN", "")


@ag.remote
def loaded_modules() -> list[str]:
    return sorted(sys.modules)


def template_modules() -> set[str]:
    """What a template process has imported when it forks its first worker."""
    code = "import json, sys, actorgrid._node.templateproc; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout))


@pytest.fixture
def grid(processes) -> Iterator[ag.Cluster]:
    cluster = ag.init(num_workers=2, pulse_interval=PULSE_S, grace_s=1.0, worker_restarts=FOREVER)
    try:
        processes.add(w.pid for w in cluster.workers())
        processes.add(template_pids())
        yield cluster
    finally:
        processes.add(w.pid for w in cluster.workers())
        ag.shutdown()
        processes.wait_gone()


def test_workers_are_forked_by_the_template_and_a_killed_one_comes_back(
    grid: ag.Cluster, processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    (template,) = template_pids()
    workers = {w.pid for w in grid.workers()}
    assert {psutil.Process(pid).ppid() for pid in workers} == {template}
    pid, parent, _ = ag.get(whoami.remote(), timeout=30)
    assert pid in workers and parent == template
    # Having connected and run calls, a worker has imported no runtime module of its own:
    # the template imported them before forking it, so they are shared, not per worker.
    after_fork = set(ag.get(loaded_modules.remote(), timeout=30)) - template_modules()
    ours = {m for m in after_fork if m.split(".")[0] in ("actorgrid", "trio", "encodings")}
    assert not ours, sorted(ours)
    # A worker forked after this change sees it: each fork takes the agent's environment.
    monkeypatch.setenv("HOT3_SEEN", "yes")
    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(now := {w.pid for w in grid.workers()}) == 2 and victim not in now,
        what="the killed worker's replacement",
    )
    fresh = ({w.pid for w in grid.workers()} - workers).pop()
    processes.add([fresh])
    assert psutil.Process(fresh).ppid() == template  # forked again, not spawned
    wait_for(  # its exit status came through the template, which reaped it
        lambda: any(
            e.kind == "worker_died" and e.pid == victim and e.exit_code == -signal.SIGKILL
            for e in grid.recent_events()
        ),
        what="the worker_died event with its exit status",
    )
    seen = {ag.get(whoami.remote(), timeout=30) for _ in range(20)}
    assert ("yes" in {s[2] for s in seen}) and victim not in {s[0] for s in seen}


def test_a_killed_template_takes_its_workers_and_spawned_ones_replace_them(
    grid: ag.Cluster, processes
) -> None:
    (template,) = template_pids()
    forked = {w.pid for w in grid.workers()}
    os.kill(template, signal.SIGKILL)
    processes.wait_gone(forked, timeout=30)  # PR_SET_PDEATHSIG took them along
    spawned = wait_for(
        lambda: len(now := {w.pid for w in grid.workers()}) == 2 and not now & forked and now,
        what="spawned replacements",
    )
    processes.add(spawned)
    for pid in spawned:
        assert "actorgrid._node.worker" in psutil.Process(pid).cmdline()
    assert ag.get([whoami.remote() for _ in range(4)], timeout=30)


_INIT_FAILS = """
import json, sys
import psutil
import actorgrid as ag

def templates():
    return [p.pid for p in psutil.Process().children()
            if "actorgrid._node.templateproc" in " ".join(p.cmdline())]

class Spy:  # sees what runs when ag.init starts importing the runtime's cluster module
    seen = None
    def find_spec(self, name, path=None, target=None):
        if name == "actorgrid._node.cluster" and Spy.seen is None:
            Spy.seen = templates()
        return None

sys.meta_path.insert(0, Spy())
try:
    ag.init(no_such_option=1)
except TypeError as exc:
    print(json.dumps({"at_import": Spy.seen, "after": templates(), "error": str(exc)}))
"""


def test_ag_init_starts_the_template_before_the_runtime_and_reaps_it_when_it_fails(
    processes,
) -> None:
    # The template imports while the driver does (prestart.py); an init that fails after
    # starting it leaves none behind, reaped before the error reaches the caller.
    out = subprocess.run(
        [sys.executable, "-c", _INIT_FAILS], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    processes.add(seen["at_import"])
    assert len(seen["at_import"]) == 1, seen
    assert seen["after"] == [] and "no_such_option" in seen["error"], seen


_DRIVER = """
import json, os, sys, time
import psutil
import actorgrid as ag
with ag.init(num_workers=2):
    me = psutil.Process()
    print(json.dumps([p.pid for p in me.children(recursive=True)]), flush=True)
    time.sleep(120)
"""


def test_nothing_outlives_a_driver_killed_with_sigkill(processes) -> None:
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert driver.stdout is not None
        line = driver.stdout.readline()
        pids = json.loads(line)
        processes.add(pids)
        assert len(pids) == 3, pids  # the template and its two workers
        driver.kill()
        driver.wait(timeout=30)
        processes.wait_gone(pids, timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        if driver.stdout is not None:
            driver.stdout.close()
