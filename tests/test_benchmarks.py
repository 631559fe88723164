"""The benchmark suite runs end to end (quick sizes), reports every figure, and leaks nothing.

No figure is compared with its target here: timings belong to benchmarks/run.py, not to tests.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_PY = ROOT / "benchmarks" / "run.py"
TIMEOUT_S = 360.0  # the quick suite takes ~1-2 min; a loaded CI machine may double it
POLL_S = 0.05

WORKLOADS = [
    "cold_start",
    "noop_tasks",
    "actor_rtt",
    "pipelined_calls",
    "pipelined_calls_no_pulses",
    "pool_map",
    "big_argument",
    "big_bytes",
    "ring",
    "handle_ring",
    "idle_rss",
    "actor_recovery",
]  # run.py --list may list more (store_workloads.py registers its own)
POOL_WORKLOADS = {"cold_start", "noop_tasks", "pool_map", "big_argument", "idle_rss"}
MARKER = "ACTORGRID_BENCHMARK_TEST_RUN"

# (pid, create_time) identifies a process even if its pid is reused later.
ProcessKey = tuple[int, float]


def _descendants(proc: psutil.Process) -> set[ProcessKey]:
    found: set[ProcessKey] = set()
    try:
        children = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for child in children:
        try:
            found.add((child.pid, child.create_time()))
        except psutil.NoSuchProcess:
            pass
    return found


def _alive(key: ProcessKey) -> bool:
    try:
        proc = psutil.Process(key[0])
        return bool(proc.create_time() == key[1] and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _marked(token: str) -> set[ProcessKey]:
    """Live processes whose environment carries this run's token: its descendants, even
    those reparented after their parent exited."""
    found: set[ProcessKey] = set()
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            if proc.environ().get(MARKER) == token and proc.status() != psutil.STATUS_ZOMBIE:
                found.add((proc.pid, proc.info["create_time"]))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            pass
    return found


def _kill(keys: set[ProcessKey]) -> None:
    for key in keys:
        if _alive(key):
            try:
                os.kill(key[0], signal.SIGKILL)
            except ProcessLookupError:
                pass


def _run_quick(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], set[ProcessKey], str]:
    """Run the quick suite, watching its process tree until it exits."""
    token = uuid.uuid4().hex
    env = {**os.environ, MARKER: token}
    output = tmp_path / "quick.json"
    stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    seen: set[ProcessKey] = set()
    with stdout_path.open("w") as out, stderr_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(RUN_PY), "--quick", "--json", "--output", str(output)],
            stdout=out,
            stderr=err,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        watched = psutil.Process(proc.pid)
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while proc.poll() is None:
                seen |= _descendants(watched)
                if time.monotonic() > deadline:
                    break
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                _kill(seen | _marked(token))
                pytest.fail(
                    f"benchmarks/run.py --quick did not finish within {TIMEOUT_S:.0f} s; "
                    f"stderr:\n{stderr_path.read_text()[-4000:]}"
                )
    completed = subprocess.CompletedProcess(
        proc.args, proc.returncode, stdout_path.read_text(), stderr_path.read_text()
    )
    return completed, seen, token


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
def test_quick_suite_reports_every_workload_and_leaks_nothing(tmp_path: Path) -> None:
    completed, seen, token = _run_quick(tmp_path)

    # Give children that are on their way out a moment, then look for any that are not.
    deadline = time.monotonic() + 10.0
    survivors = {k for k in seen if _alive(k)} | _marked(token)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.1)
        survivors = {k for k in survivors if _alive(k)}
    details = []
    for pid, _ in survivors:
        try:
            details.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())}")
        except psutil.NoSuchProcess:
            pass
    _kill(survivors)
    assert not survivors, "processes outlived benchmarks/run.py:\n" + "\n".join(details)
    assert seen, "the watcher never saw a child process; the leak check would prove nothing"

    assert completed.returncode == 0, completed.stderr[-4000:]
    report: dict[str, Any] = json.loads(completed.stdout)
    assert report == json.loads((tmp_path / "quick.json").read_text())
    assert report["meta"]["quick"] is True
    assert report["meta"]["num_workers"] == 2
    listed = subprocess.run(
        [sys.executable, str(RUN_PY), "--list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert list(report["workloads"]) == listed
    assert set(WORKLOADS) <= set(listed), set(WORKLOADS) - set(listed)
    for key, entry in report["workloads"].items():
        limit = entry["limit"]  # the machine limit of the same run, and the figure's ratio to it
        if limit is not None:
            assert limit["value"] > 0 and limit["ratio"] > 0, (key, limit)
    assert report["workloads"]["actor_rtt"]["limit"]["key"] == "trio_rtt_us"
    assert report["limits"]["socket_rtt_us"]["value"] > 0

    for key, entry in report["workloads"].items():
        mine = entry["actorgrid"]
        assert "error" not in mine, f"{key}: {mine['error']}"
        assert mine["value"] > 0 or "skipped" in mine["detail"], key  # netns needs root
        assert isinstance(mine["meets_target"], bool), key
        pool = entry["multiprocessing.Pool"]
        if key in POOL_WORKLOADS:
            assert pool is not None and "error" not in pool, f"{key}: {pool}"
            assert pool["value"] > 0, key
        else:
            assert pool is None, key
        assert isinstance(entry["ray"], dict), key  # a figure, a status or an error: optional

    tasks = report["workloads"]["noop_tasks"]["multiprocessing.Pool"]["detail"]
    assert tasks["map_tasks_per_s"] > 0
    assert tasks["apply_async_tasks_per_s"] > 0
    assert report["workloads"]["actor_rtt"]["actorgrid"]["detail"]["p99_us"] > 0


def _readme_commands() -> list[list[str]]:
    """The commands of benchmarks/README.md's shell block, one argv per line."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#", 1)[0]) for line in block.splitlines() if line.strip()]


def test_the_benchmark_readme_commands_run(tmp_path: Path) -> None:
    """Every command in benchmarks/README.md runs: each run.py line with its own flags at
    quick sizes on two workloads (the full sizes run the same code paths, for minutes; the
    whole quick suite is the test above), and the nox line names the bench session, which
    passes its arguments to run.py."""
    commands = _readme_commands()
    run_lines = [argv for argv in commands if argv[:2] == ["python", "benchmarks/run.py"]]
    assert len(run_lines) >= 3, commands
    for i, argv in enumerate(run_lines):
        args = [a for a in argv[2:] if a != "--quick"]
        if "--only" not in args:  # the whole suite at quick sizes is test_quick_suite's
            args += ["--only", "actor_rtt,ring"]
        out = tmp_path / f"run{i}.json"
        completed = subprocess.run(
            [sys.executable, str(RUN_PY), *args, "--quick", "--output", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            start_new_session=True,
        )
        assert completed.returncode == 0, (argv, completed.stderr[-4000:])
        if "--json" in args:
            assert json.loads(completed.stdout)["meta"]["quick"] is True
    nox_lines = [argv for argv in commands if argv[:1] == ["nox"]]
    assert nox_lines == [["nox", "-s", "bench", "--", "--quick"]], nox_lines
    noxfile = (ROOT / "noxfile.py").read_text()
    assert "def bench(" in noxfile and '"benchmarks/run.py", *session.posargs' in noxfile
