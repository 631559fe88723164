"""Worker log files on the nodes: ``log_to_driver=False``, ``actorgrid logs`` (also for the
workers of a driver that has finished), and rotation.

The module starts its own embedded cluster, with output off at this driver, a known secret
(so the CLI and a second driver can join it) and a log folder of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ProcessWatch

import actorgrid as ag
from actorgrid._node.output import WorkerLogFile, read_logs

SECRET = bytes(range(32))
COMMAND_TIMEOUT_S = 120
LOG_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ag.Cluster]:
    folder = tmp_path_factory.mktemp("logs")
    before = os.environ.get("ACTORGRID_LOG_DIR")
    os.environ["ACTORGRID_LOG_DIR"] = str(folder)
    watch = ProcessWatch()
    try:
        cluster = ag.init(num_workers=2, secret=SECRET, log_to_driver=False)
        try:
            watch.add(w.pid for w in cluster.workers())
            yield cluster
        finally:
            ag.shutdown()
            try:
                watch.wait_gone()
            finally:
                watch.kill_leftovers()
    finally:
        if before is None:
            os.environ.pop("ACTORGRID_LOG_DIR", None)
        else:
            os.environ["ACTORGRID_LOG_DIR"] = before


def _wait_for_log(cluster: ag.Cluster, text: str, **filters: str) -> list[str]:
    deadline = time.monotonic() + LOG_TIMEOUT_S
    while True:
        lines = cluster.read_logs(**filters)
        if any(text in line for line in lines):
            return lines
        assert time.monotonic() < deadline, f"{text!r} never reached the log files: {lines}"
        time.sleep(0.1)


@ag.remote
def whisper(text: str) -> int:
    print(text)
    return os.getpid()


def test_log_to_driver_false_keeps_worker_output_off_the_driver(
    quiet: ag.Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    pid = ag.get(whisper.remote("quiet-token-5521"))
    lines = _wait_for_log(quiet, "quiet-token-5521")
    assert any(f"(whisper pid={pid} " in line for line in lines)
    # The node agent has read the line (it is in the file); it forwards what it reads every
    # FLUSH_INTERVAL_S (0.1 s) and the head relays at once: after 2 s, ten times that with a
    # wide margin for a loaded machine, a forwarded line would have been printed.
    time.sleep(2)
    captured = capsys.readouterr()
    assert "quiet-token-5521" not in captured.out + captured.err


_OTHER_DRIVER = """
import actorgrid as ag, sys

@ag.remote
class Diarist:
    def note(self, text):
        print(text)

@ag.remote
def bystander():
    print("not from the diary")

with ag.init(sys.argv[1], secret=bytes.fromhex(sys.argv[2])):
    d = Diarist.options(name="diarist").remote()
    ag.get([d.note.remote("dear diary 1"), d.note.remote("dear diary 2"), bystander.remote()])
print("driver done", flush=True)
"""


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ACTORGRID_SECRET": SECRET.hex()}
    return subprocess.run(
        [sys.executable, "-m", "actorgrid.cli", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def test_actorgrid_logs_actor_shows_that_actors_lines_after_its_driver_finished(
    quiet: ag.Cluster, tmp_path: Path
) -> None:
    # A driver of its own, in a folder of its own (not importing the source tree), that
    # creates the actor and exits: its workers' lines stay in the nodes' files.
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_OTHER_DRIVER), quiet.address, SECRET.hex()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0 and "driver done" in done.stdout, done.stderr
    _wait_for_log(quiet, "not from the diary")

    shown = _cli("logs", "--actor", "diarist", "--address", quiet.address, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line.split(") ", 1)[1] for line in lines] == ["dear diary 1", "dear diary 2"]
    assert all("(diarist pid=" in line for line in lines)

    last = _cli(
        "logs", "--tail", "1", "--actor", "diarist", "--address", quiet.address, cwd=tmp_path
    )
    assert last.returncode == 0, last.stderr
    assert last.stdout.splitlines()[-1].endswith(") dear diary 2")
    assert len(last.stdout.splitlines()) == 1


def test_log_files_rotate_and_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "worker-ab12.log"
    log = WorkerLogFile(path, max_bytes=2000, backups=2)
    for i in range(100):
        log.write(f"2026-01-01T00:00:00.{i:03d} out (f pid=1 node=h) line {i:03d}")
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["worker-ab12.log", "worker-ab12.log.1", "worker-ab12.log.2"]
    assert all(p.stat().st_size <= 2100 for p in tmp_path.iterdir())
    lines = read_logs(tmp_path)
    numbers = [int(line.rsplit(" ", 1)[1]) for line in lines]
    # The oldest lines went with the file rotated out; what is left is in order, up to the last.
    assert numbers == list(range(numbers[0], 100))
    assert read_logs(tmp_path, tail=3)[-1].endswith("line 099")
    assert len(read_logs(tmp_path, tail=3)) == 3
    assert read_logs(tmp_path, worker="cd") == []
    assert read_logs(tmp_path, actor="g") == []
    assert len(read_logs(tmp_path, actor="f")) == len(lines)


def test_actorgrid_list_tasks_all_shows_ended_tasks_with_state_and_duration(
    quiet: ag.Cluster, tmp_path: Path
) -> None:
    ref = whisper.remote("listed-task")
    ag.get(ref)
    deadline = time.monotonic() + LOG_TIMEOUT_S
    while not any(t.task_id == ref.id and t.state == "finished" for t in quiet.tasks()):
        assert time.monotonic() < deadline, "the task's events never came"
        time.sleep(0.1)
    shown = _cli("list", "tasks", "--all", "--json", "--address", quiet.address, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    (item,) = [t for t in json.loads(shown.stdout) if t["task_id"] == ref.id.hex()]
    assert (item["function"], item["state"], item["attempts"]) == ("whisper", "finished", 1)
    assert item["worker_id"] in {w.worker_id.hex() for w in quiet.workers()}
    assert 0 <= item["duration_s"] < LOG_TIMEOUT_S
    table = _cli("list", "tasks", "--all", "--address", quiet.address, cwd=tmp_path)
    header, *rows = table.stdout.splitlines()
    assert header.split() == [
        "TASK",
        "FUNCTION",
        "KIND",
        "STATE",
        "WORKER",
        "HOST",
        "PID",
        "DURATION",
        "ERROR",
    ]
    (row,) = [r for r in rows if " whisper " in r and "finished" in r][-1:]
    assert row.split()[1:4] == ["whisper", "task", "finished"]
    # Without --all, only what runs or waits now: nothing.
    now = _cli("list", "tasks", "--address", quiet.address, cwd=tmp_path)
    assert "no tasks are running or queued" in now.stdout


def test_actorgrid_logs_worker_and_node_pick_whose_lines_are_shown(
    quiet: ag.Cluster, tmp_path: Path
) -> None:
    pids = ag.get([whisper.remote(f"picked-{i}") for i in range(20)])
    by_pid = {w.pid: w for w in quiet.workers()}
    assert set(pids) <= set(by_pid)
    deadline = time.monotonic() + LOG_TIMEOUT_S
    while not all(f"picked-{i}" in "\n".join(quiet.read_logs(tail=0)) for i in range(20)):
        assert time.monotonic() < deadline, "not every line reached the log files"
        time.sleep(0.1)
    (one, *_) = pids
    worker = by_pid[one]

    wid = worker.worker_id.hex()[:8]
    shown = _cli("logs", "--worker", wid, "--tail", "0", "--address", quiet.address, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    picked = {line.rsplit(" ", 1)[1] for line in shown.stdout.splitlines() if ") picked-" in line}
    assert picked == {f"picked-{i}" for i, pid in enumerate(pids) if pid == one}
    assert all(f" pid={one} " in line for line in shown.stdout.splitlines())

    node = worker.node_id.hex()
    everything = _cli(
        "logs", "--node", node[:8], "--tail", "0", "--address", quiet.address, cwd=tmp_path
    )
    assert everything.returncode == 0, everything.stderr
    assert {f"picked-{i}" for i in range(20)} <= {
        line.rsplit(" ", 1)[1] for line in everything.stdout.splitlines()
    }
