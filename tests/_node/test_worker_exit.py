"""A worker whose loop fails says so: its traceback on stderr and a failing exit status, so
that its node treats it as a crash (restart with backoff, stderr in the report), never as a
clean exit."""

from __future__ import annotations

import json
import subprocess
import sys


def test_a_worker_whose_loop_fails_exits_with_status_1_and_its_traceback() -> None:
    # A config without the cluster secret: the loop fails at its first step, as any bug in it
    # would, after logging and output capture are set up.
    config = {"pulse_interval_s": 1, "grace_s": 1}
    done = subprocess.run(
        [sys.executable, "-m", "actorgrid._node.worker"],
        input=json.dumps(config) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "the worker's loop failed" in done.stderr
    assert "KeyError: 'secret'" in done.stderr
