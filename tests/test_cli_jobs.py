"""``actorgrid submit`` and ``actorgrid jobs``, run as users run them, against a cluster
``actorgrid up`` started with a cluster file of its own (the helpers of test_cli_cluster).

The scripts submitted live only in a project folder of the test: the job gets them from the
head's copy of ``--working-dir``, and so do its workers (a remote task imports a helper
module from it). Every process a job starts is checked gone after it is stopped.
"""

from __future__ import annotations

import json
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from test_cli_cluster import PULSE, Env, _describe, _wait_for

_HELPER = """
def double(x):
    return 2 * x
"""

_EXIT_WITH = """
import sys
import actorgrid as ag
import helper

@ag.remote
def f(x):
    import helper  # imported on the worker: shipped with the job's working_dir
    return helper.double(x)

ag.init()
print("result", ag.get(f.remote(21), timeout=60), flush=True)
print("oops", file=sys.stderr, flush=True)
sys.exit(int(sys.argv[1]))
"""

_LONG = """
import json, os, subprocess, sys, time
import actorgrid as ag

@ag.remote
class Holder:
    def pid(self):
        return os.getpid()

child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
ag.init()
holder = Holder.remote()
ag.get(holder.pid.remote(), timeout=60)
print(json.dumps({"child": child.pid, "driver": os.getpid()}), flush=True)
time.sleep(600)
"""


# The head rotates a job's log file past this size (ACTORGRID_JOB_LOG_MAX_BYTES): small here,
# so that a job printing a few hundred KB shows it.
LOG_MAX_BYTES = 64 * 1024

# Numbered lines of 100 bytes, about five times LOG_MAX_BYTES in all.
_FLOOD = (
    "import sys\nfor i in range(3300):\n    sys.stdout.write(f'line {i:06d} ' + 'x' * 88 + '\\n')\n"
)


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    env = Env(tmp_path_factory.mktemp("jobs"))
    env.vars["ACTORGRID_LOG_DIR"] = str(env.folder / "logs")
    env.vars["ACTORGRID_JOB_LOG_MAX_BYTES"] = str(LOG_MAX_BYTES)
    try:
        result = env.run("up", "--num-workers", "1", "--pulse-interval", PULSE)
        if env.cluster_file.exists():
            env.record_cluster()
        assert result.returncode == 0, _describe(result)
        project = env.folder / "project"
        project.mkdir()
        (project / "helper.py").write_text(textwrap.dedent(_HELPER))
        (project / "exit_with.py").write_text(textwrap.dedent(_EXIT_WITH))
        (project / "long.py").write_text(textwrap.dedent(_LONG))
        (project / "notes.log").write_text("left out")
        yield env
        down = env.run("down")
        assert down.returncode == 0, _describe(down)
        env.processes.assert_gone()
    finally:
        env.clean_up()


def _jobs(env: Env) -> dict[str, dict[str, object]]:
    result = env.run("jobs", "list", "--json")
    assert result.returncode == 0, _describe(result)
    return {j["job_id"]: j for j in json.loads(result.stdout)}


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_submit_runs_a_script_from_its_working_dir_and_returns_its_exit_status(
    cluster_env: Env,
) -> None:
    env = cluster_env
    argv = ("submit", "--working-dir", "project", "--exclude", "*.log", "--")
    result = env.run(*argv, "python", "exit_with.py", "3")
    assert result.returncode == 3, _describe(result)
    assert "result 42" in result.stdout  # its output, streamed back
    assert "oops" in result.stdout  # stderr too, merged in order
    job_id = result.stderr.split("job ", 1)[1].split()[0]
    job = _jobs(env)[job_id]
    assert (job["state"], job["exit_code"]) == ("failed", 3)

    missing = env.run("submit", "--", "python", "no_such_script.py")
    assert missing.returncode == 2, _describe(missing)  # python's own status, passed on


def test_a_job_printing_a_lot_leaves_a_bounded_log_and_jobs_logs_gives_its_tail(
    cluster_env: Env,
) -> None:
    env = cluster_env
    result = env.run("submit", "--", "python", "-c", _FLOOD)
    assert result.returncode == 0, _describe(result)
    job_id = result.stderr.split("job ", 1)[1].split()[0]
    last = f"line {3299:06d} " + "x" * 88
    assert result.stdout.splitlines()[-1] == last  # submit streamed it to the end
    logs = env.folder / "logs" / "jobs"
    current, kept = logs / f"{job_id}.log", logs / f"{job_id}.log.1"
    # Rotated: the file the job writes, and the part kept of what came before it, are each
    # bounded (about 330 KB were printed).
    assert current.stat().st_size < LOG_MAX_BYTES
    assert 0 < kept.stat().st_size <= LOG_MAX_BYTES
    shown = env.run("jobs", "logs", job_id)
    assert shown.returncode == 0, _describe(shown)
    lines = shown.stdout.splitlines()
    assert lines[-1] == last
    # Its tail, in order, across the rotation: the last lines are consecutive.
    numbers = [int(x.split()[1]) for x in lines[-500:] if x.startswith("line ")]
    assert numbers == list(range(3300 - len(numbers), 3300)) and len(numbers) >= 400


def test_jobs_list_logs_and_stop(cluster_env: Env) -> None:
    env = cluster_env
    result = env.run("submit", "--no-wait", "--working-dir", "project", "--", "python", "long.py")
    assert result.returncode == 0, _describe(result)
    job_id = result.stdout.strip()

    logs: list[str] = []

    def started() -> bool:
        result = env.run("jobs", "logs", job_id)
        assert result.returncode == 0, _describe(result)
        logs[:] = [x for x in result.stdout.splitlines() if '"child"' in x]
        return bool(logs)

    _wait_for(started, "the job's first output", timeout_s=90)
    pids = json.loads(logs[0])
    assert _jobs(env)[job_id]["state"] == "running"
    assert any(a["label"] == "Holder" for a in env.status()["actors"])  # type: ignore[attr-defined]

    stop = env.run("jobs", "stop", job_id)
    assert stop.returncode == 0, _describe(stop)
    assert f"stopped job {job_id}" in stop.stdout
    assert _jobs(env)[job_id]["state"] == "stopped"
    assert _gone(pids["driver"]) and _gone(pids["child"])  # its process group went with it
    _wait_for(lambda: not env.status()["actors"], "the job's actor to end with it")

    unknown = env.run("jobs", "stop", "job-nope")
    assert unknown.returncode == 1
    assert "no job 'job-nope'" in unknown.stderr and "jobs list" in unknown.stderr


def test_ctrl_c_at_submit_stops_the_job_and_what_it_started(
    cluster_env: Env, tmp_path: Path
) -> None:
    env = cluster_env
    out = tmp_path / "submit.out"
    submit = env.popen("submit", "--working-dir", "project", "--", "python", "long.py", out=out)
    try:
        _wait_for(lambda: '"child"' in out.read_text(), "the job to start", timeout_s=90)
        pids = json.loads(next(x for x in out.read_text().splitlines() if '"child"' in x))
        env.processes.add_tree(pids["driver"])
        submit.send_signal(signal.SIGINT)
        assert submit.wait(timeout=60) == 130, out.read_text()
        assert "interrupted; stopping job" in out.read_text()
        assert _gone(pids["driver"]) and _gone(pids["child"])
        _wait_for(lambda: not env.status()["actors"], "the job's actor to end with it")
        assert "stopped" in {j["state"] for j in _jobs(env).values()}
    finally:
        if submit.poll() is None:
            submit.kill()
        submit.wait(timeout=10)


def test_submit_and_jobs_on_a_tls_cluster(tmp_path: Path) -> None:
    import trustme

    env = Env(tmp_path)
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(tmp_path / "m.pem")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    tls = ["--tls", "--certfile", "m.pem", "--keyfile", "m.pem", "--cafile", "ca.pem"]
    try:
        result = env.run("up", "--num-workers", "1", "--pulse-interval", PULSE, *tls)
        if env.cluster_file.exists():
            env.record_cluster()
        assert result.returncode == 0, _describe(result)
        project = tmp_path / "project"
        project.mkdir()
        (project / "helper.py").write_text(textwrap.dedent(_HELPER))
        (project / "exit_with.py").write_text(textwrap.dedent(_EXIT_WITH))
        # submit reaches the head over TLS, and so do the job's driver and its workers' calls.
        submitted = env.run(
            "submit", "--working-dir", "project", "--", "python", "exit_with.py", "4"
        )
        assert submitted.returncode == 4, _describe(submitted)
        assert "result 42" in submitted.stdout
        job_id = submitted.stderr.split("job ", 1)[1].split()[0]
        assert _jobs(env)[job_id]["exit_code"] == 4
        down = env.run("down")
        assert down.returncode == 0, _describe(down)
        env.processes.assert_gone()
    finally:
        env.clean_up()
