"""Every program in examples/ runs to completion, says what it should, and leaves no process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPECTED = {
    "quickstart.py": ["squares: [0, 1, 4, 9", "counter: 6 16", "Hello, actorgrid!", "no process"],
    "agents_ring.py": ["hops in", "'final_token': 2000"],
    "pipeline.py": ["chunk 7: mean"],
    "supervision.py": [
        "all 200 squares correct: True",
        "tally restarted on pid",
        "count 1",
        "event worker_restarted",
        "event actor_restarted",
    ],
}


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / name)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    descendants: set[psutil.Process] = set()
    try:
        # Record every process the example starts while it runs: once it exits, its
        # leftovers would be re-parented and no longer be found as its children.
        parent = psutil.Process(proc.pid)
        deadline = 120.0
        while proc.poll() is None and deadline > 0:
            try:
                descendants.update(parent.children(recursive=True))
            except psutil.NoSuchProcess:
                break
            deadline -= 0.05
            try:
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        out, _ = proc.communicate(timeout=max(deadline, 1))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out
    for text in EXPECTED[name]:
        assert text in out, out
    assert descendants, "the example started no worker processes"
    _, alive = psutil.wait_procs(list(descendants), timeout=10)
    assert not alive, f"{name} left processes behind: {alive}"
