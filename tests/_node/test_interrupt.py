"""Ctrl-C in a driver: the KeyboardInterrupt reaches the driver at once, the driver's remote work
is cancelled (async code sees cancellation and runs its ``finally``; a CPU-bound sync loop gets
KeyboardInterrupt raised in it), and every process is gone within the grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
from proclines import read_line

GRACE_S = 3.0
START_TIMEOUT_S = 60.0

_DRIVER = """
import json, os, sys, time
from pathlib import Path

import trio

import actorgrid as ag

out = Path(sys.argv[1])


@ag.remote
def busy() -> None:
    (out / "busy.started").write_text(str(os.getpid()))
    try:
        while True:
            pass
    except KeyboardInterrupt:
        (out / "busy.interrupted").write_text("yes")
        raise


@ag.remote
class Keeper:
    async def hold(self) -> None:
        (out / "hold.started").write_text(str(os.getpid()))
        try:
            await trio.sleep(3600)
        finally:
            (out / "finally.txt").write_text("cleaned up")


cluster = ag.init(num_workers=2, pulse_interval=0.2, grace_s=GRACE_S)
keeper = Keeper.remote()
refs = [busy.remote(), keeper.hold.remote()]
print(json.dumps([w.pid for w in cluster.workers()]), flush=True)
try:
    ag.get(refs)
except KeyboardInterrupt:
    print("interrupted", time.monotonic(), flush=True)
    raise
"""


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    line = read_line(proc, timeout)
    assert line is not None, f"the driver printed nothing within {timeout} s"
    return line


def _wait_for_files(*paths: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"not all of {paths} appeared within {timeout} s"
        time.sleep(0.02)


def test_ctrl_c_in_a_driver_cancels_its_remote_work_and_leaves_nothing(
    tmp_path: Path, processes
) -> None:
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(_DRIVER).replace("GRACE_S", repr(GRACE_S)))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        processes.add([proc.pid])
        pids = [int(p) for p in _readline(proc, START_TIMEOUT_S).strip("[]\n").split(",")]
        processes.add(pids)
        _wait_for_files(tmp_path / "busy.started", tmp_path / "hold.started")
        sent_at = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        line = _readline(proc, 5.0)
        assert line.startswith("interrupted"), line
        assert float(line.split()[1]) - sent_at < 1.0  # KeyboardInterrupt within 1 s
        proc.wait(timeout=GRACE_S + 2)
        exited_after = time.monotonic() - sent_at
        assert exited_after <= GRACE_S + 2
        # The async actor's finally ran; the CPU-bound loop saw KeyboardInterrupt.
        assert (tmp_path / "finally.txt").read_text() == "cleaned up"
        assert (tmp_path / "busy.interrupted").read_text() == "yes"
        processes.wait_gone(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert not [p for p in psutil.pids() if p in pids]
