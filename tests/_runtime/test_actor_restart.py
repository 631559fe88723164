"""A coroutine actor that crashes in a loop backs off: it neither floods the log nor starves
its worker's loop (pulses, other actors). Runs a driver script in its own process, so its
workers' stderr (where their log lines go) can be read whole."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from actorgrid._runtime.restarts import ACTOR_RESTART_LOG_INTERVAL_S, RestartLog

OBSERVE_S = 5.0
PULSE_INTERVAL_S = 0.5  # a worker silent for 5 intervals (2.5 s) is killed as a zombie
DRIVER_TIMEOUT_S = 120

_DRIVER = """
import json
import sys
import time

import actorgrid as ag

OBSERVE_S = float(sys.argv[1])


@ag.remote(max_restarts=-1)
async def crashing(ctx: ag.Context) -> None:
    # Fails before its first await, as a call with a bad argument did.
    raise RuntimeError("fails at once")


@ag.remote
class Echo:
    def ping(self, x):
        return x


with ag.init(num_workers=1, pulse_interval=float(sys.argv[2])) as cluster:
    before = [w.pid for w in cluster.workers()]
    print(json.dumps(before), flush=True)
    echo = Echo.remote()
    assert ag.get(echo.ping.remote(-1), timeout=30) == -1
    ref = crashing.remote()
    start = time.monotonic()
    answers = 0
    while time.monotonic() - start < OBSERVE_S:
        assert ag.get(echo.ping.remote(answers), timeout=10) == answers
        answers += 1
        time.sleep(0.05)
    observed_s = time.monotonic() - start
    report = {
        "before": before,
        "after": [w.pid for w in cluster.workers()],
        "kinds": [e.kind for e in cluster.recent_events()],
        "answers": answers,
        "observed_s": observed_s,
    }
    ag.kill(ref)
    print(json.dumps(report), flush=True)
"""


def test_a_crash_looping_coroutine_actor_backs_off(tmp_path: Path, processes) -> None:
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(_DRIVER))
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(OBSERVE_S), str(PULSE_INTERVAL_S)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        processes.add([proc.pid])
        try:
            out, _ = proc.communicate(timeout=DRIVER_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    log = stderr_path.read_text()
    assert proc.returncode == 0, log[-3000:]
    first, last = (json.loads(line) for line in out.splitlines()[:2])
    processes.add(first)
    processes.wait_gone()
    kinds = last["kinds"]
    restarts = kinds.count("actor_restarted")
    # It did crash in a loop (without a backoff it restarts hundreds of thousands of times in
    # this span; with one, a handful).
    assert 3 <= restarts <= 30, restarts
    # Its worker kept pulsing: never declared a zombie, never replaced.
    assert last["after"] == last["before"] == first
    assert "worker_zombie" not in kinds and "worker_died" not in kinds, kinds
    # The other actor on that worker answered all along.
    assert last["answers"] >= 10
    lines = [line for line in log.splitlines() if "restarting it" in line]
    assert 1 <= len(lines) <= 1 + last["observed_s"] / ACTOR_RESTART_LOG_INTERVAL_S, lines
    assert "fails at once" in lines[0]


def test_restart_log_logs_the_first_then_one_line_per_interval_with_a_count() -> None:
    log = RestartLog()
    first = log.line(0.0, "actor a raised E", -1, 0.0)
    assert first == "actor a raised E; restarting it (no limit)"
    # A crash loop: 100 restarts within one interval add no line...
    assert all(log.line(t / 100, "x", -1, 0.05) is None for t in range(1, 101))
    # ...and the next line counts them.
    later = log.line(ACTOR_RESTART_LOG_INTERVAL_S, "actor a raised E", 3, 2.0)
    assert later == (
        "actor a raised E; restarting it in 2 s "
        "(3 restarts left; 100 more restarts since the last such line)"
    )
