"""Worker output on an ``actorgrid up`` cluster, seen from outside its drivers.

- Two drivers: the output of a driver's work (its tasks, and the tasks those tasks and its
  sync actor's methods start on other workers) is printed by that driver only, and its ``ag.timeline()`` holds its own
  nested calls, one row per worker, and none of the other's.
- ``actorgrid logs --follow`` prints a line a task printed after it started.

Real processes throughout: the cluster ``actorgrid up`` starts, and driver scripts that the
test steps through over their stdin/stdout.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import ProcessWatch

START_TIMEOUT_S = 60.0
STEP_TIMEOUT_S = 60.0

_DRIVER = r"""
import io, json, sys, time
import actorgrid as ag

tag, trace = sys.argv[1], sys.argv[2]
real = sys.stdout


def say(text):
    real.write(text + "\n")
    real.flush()


# Every line differs (a number): identical ones would be folded into one.
@ag.remote
def inner(tag, n):
    print(f"inner-{tag}-{n}", flush=True)
    return 1


@ag.remote
def outer(tag, n):
    print(f"outer-{tag}-{n}", flush=True)
    return sum(ag.get([inner.remote(tag, 10 * n + i) for i in range(2)], timeout=60))


@ag.remote
class Relay:
    # A sync actor method runs in a thread of its own, with no task of the worker's: the
    # tasks it starts must still belong to the driver that called it.
    def relay(self, tag, n):
        return sum(ag.get([inner.remote(tag, 100 + 10 * n + i) for i in range(2)], timeout=60))


class Seen(io.TextIOBase):
    # What this driver prints of its workers' output (log_to_driver writes to sys.stdout).
    def __init__(self):
        self.lines = []

    def write(self, s):
        self.lines.extend(line for line in s.splitlines() if line)
        return len(s)


cluster = ag.init(address="auto")
seen = sys.stdout = Seen()
say("ready")
sys.stdin.readline()
assert ag.get([outer.remote(tag, n) for n in range(3)], timeout=60) == [2, 2, 2]
assert ag.get(Relay.remote().relay.remote(tag, 0), timeout=60) == 2
deadline = time.monotonic() + 60
while sum(f"inner-{tag}-" in line for line in seen.lines) < 8 or sum(
    f"outer-{tag}-" in line for line in seen.lines
) < 3:
    assert time.monotonic() < deadline, seen.lines
    time.sleep(0.05)
say("saw")
sys.stdin.readline()
# A request to the head and its answer: any line the head had sent us before (misrouted
# output of the other driver's work, routed at the same time as that driver's copy) has
# been handled by now, since the head's messages to us arrive in order.
cluster.nodes()
deadline = time.monotonic() + 60
while True:
    spans = ag.timeline(trace)
    events = json.load(open(trace))["traceEvents"]
    if sum(e["name"] == "inner" for e in events if e["ph"] == "X") >= 8:
        break
    assert time.monotonic() < deadline, events
    time.sleep(0.1)
say(json.dumps({"lines": seen.lines, "trace": events}))
ag.shutdown()
"""


def _read_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    result: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not (result and result[0]):
        errors = Path(str(proc.args[-1]) + ".err")
        stderr = errors.read_text(errors="replace") if errors.exists() else ""
        raise AssertionError(f"no line from driver pid {proc.pid} within {timeout_s} s\n{stderr}")
    return result[0].strip()


def _tell(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


class _Up:
    """``actorgrid up --num-workers 2`` in a folder of its own; ``down`` and a kill of what
    is left when done."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cluster_file = folder / "cluster.json"
        self.env = {**os.environ, "ACTORGRID_CLUSTER_FILE": str(folder / "cluster.json")}
        self.env.pop("ACTORGRID_ADDRESS", None)
        self.env.pop("ACTORGRID_SECRET", None)

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "actorgrid.cli", *argv],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )

    def tree(self) -> list[int]:
        if not self.cluster_file.exists():
            return []
        pid = int(json.loads(self.cluster_file.read_text())["head_pid"])
        try:
            return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def driver(self, tag: str, processes: ProcessWatch) -> subprocess.Popen[str]:
        trace = self.folder / f"trace-{tag}.json"
        with open(str(trace) + ".err", "wb") as errors:
            proc = subprocess.Popen(
                [sys.executable, "-c", _DRIVER, tag, str(trace)],
                cwd=self.folder,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        processes.add([proc.pid])
        return proc


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Up]:
    """One cluster for the module (its start is most of a test's time)."""
    watch = ProcessWatch()
    cluster = _Up(tmp_path_factory.mktemp("up"))
    try:
        result = cluster.cli("up", "--num-workers", "2")
        assert result.returncode == 0, result.stdout + result.stderr
        watch.add(cluster.tree())
        yield cluster
    finally:
        watch.add(cluster.tree())
        try:
            if cluster.cluster_file.exists():
                cluster.cli("down")
            watch.wait_gone(timeout=30)
        finally:
            watch.kill_leftovers()


def test_each_driver_gets_the_output_and_spans_of_its_own_nested_tasks_only(
    up: _Up, processes: ProcessWatch
) -> None:
    drivers = {tag: up.driver(tag, processes) for tag in ("A", "B")}
    try:
        for proc in drivers.values():
            assert _read_line(proc, START_TIMEOUT_S) == "ready"
        for proc in drivers.values():
            _tell(proc, "go")
        for proc in drivers.values():
            assert _read_line(proc, STEP_TIMEOUT_S) == "saw"
        for proc in drivers.values():
            _tell(proc, "check")
        reports = {tag: json.loads(_read_line(p, STEP_TIMEOUT_S)) for tag, p in drivers.items()}
        for proc in drivers.values():
            assert proc.wait(timeout=STEP_TIMEOUT_S) == 0
    finally:
        for proc in drivers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()

    for tag, other in (("A", "B"), ("B", "A")):
        lines = reports[tag]["lines"]
        assert not [line for line in lines if f"-{other}" in line], lines
        assert (
            sum(line.startswith("(inner pid=") and f"inner-{tag}-" in line for line in lines) == 8
        )  # 6 from its outer tasks, 2 from the tasks its sync actor's method started
        assert (
            sum(line.startswith("(outer pid=") and f"outer-{tag}-" in line for line in lines) == 3
        )

        trace = reports[tag]["trace"]
        spans = [e for e in trace if e["ph"] == "X"]
        names = sorted(e["name"] for e in spans)
        assert [n for n in names if n in ("inner", "outer")] == ["inner"] * 8 + ["outer"] * 3
        rows = {e["tid"]: e["args"]["name"] for e in trace if e["name"] == "thread_name"}
        assert {rows[e["tid"]] for e in spans} <= {
            r for r in rows.values() if r.startswith("worker ")
        }


_TICKER = r"""
import os, sys, time
import actorgrid as ag


@ag.remote
def ticker(n):
    print(f"tick-{n} at {time.time()}", flush=True)


ag.init(address="auto")
stop = sys.argv[1]
n = 0
deadline = time.monotonic() + 120
while not os.path.exists(stop) and time.monotonic() < deadline:
    ag.get(ticker.remote(n), timeout=60)
    n += 1
    time.sleep(0.2)
ag.shutdown()
"""


def _lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_logs_follow_prints_a_line_printed_after_it_started(
    up: _Up, processes: ProcessWatch
) -> None:
    stop = up.folder / "stop"
    with open(up.folder / "follow.err", "wb") as errors:
        follower = subprocess.Popen(
            [sys.executable, "-m", "actorgrid.cli", "logs", "--follow"],
            cwd=up.folder,
            env=up.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    processes.add([follower.pid])
    started = time.time()
    driver = subprocess.Popen(
        [sys.executable, "-c", _TICKER, str(stop)],
        cwd=up.folder,
        env=up.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes.add([driver.pid])
    try:
        lines = _lines_of(follower)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            assert left > 0, (up.folder / "follow.err").read_text(errors="replace")
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            # Lines from the files come first, each with its time and stream; then the lines
            # followed live, as "(source pid=P node=H) text".
            if line.startswith("(ticker pid=") and " tick-" in line:
                break
        printed_at = float(line.rsplit(" at ", 1)[1])
        assert printed_at >= started
        follower.send_signal(signal.SIGINT)  # as Ctrl-C: it stops following, quietly
        assert follower.wait(timeout=STEP_TIMEOUT_S) == 0
    finally:
        stop.touch()
        if follower.poll() is None:
            follower.kill()
        for proc in (follower, driver):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if follower.stdout is not None:
            follower.stdout.close()
