"""Swapping ``multiprocessing.Pool`` for ``ag.Pool`` is the only change a program needs.

tests/_pool/stdlib_programs.py holds typical standard-library Pool programs; it runs once with
each pool, in its own process, and every program must give the same output both ways.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

SCRIPT = Path(__file__).resolve().parent / "stdlib_programs.py"
sys.path.insert(0, str(SCRIPT.parent))
import stdlib_programs  # noqa: E402

RUN_TIMEOUT_S = 110.0


def _run(which: str, tmp: Path) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), which],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    children: set[psutil.Process] = set()
    try:
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                children.update(parent.children(recursive=True))
            except psutil.NoSuchProcess:
                break
            try:
                proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"{which} run failed:\n{err}"
    _, alive = psutil.wait_procs(list(children), timeout=10)
    assert not alive, f"the {which} run left processes behind: {alive}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result["outputs"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("programs")
    return {"mp": _run("mp", tmp), "ag": _run("ag", tmp)}


@pytest.mark.parametrize("name", list(stdlib_programs.PROGRAMS))
def test_same_output_both_ways(name: str, outputs: dict[str, dict[str, Any]]) -> None:
    assert outputs["ag"][name] == outputs["mp"][name]


def test_programs_check_what_they_claim(outputs: dict[str, dict[str, Any]]) -> None:
    # Equal outputs could be equally wrong: pin the ones that carry the semantics.
    ag = outputs["ag"]
    assert ag["exception_with_traceback"] == {
        "is_value_error": True,
        "args": ["bad item 3"],
        "traceback_names_function": True,
    }
    assert ag["async_result_timeout"] == {
        "timed_out": True,
        "successful_raised": True,
        "ready": False,
        "later": "slept",
    }
    assert ag["initializer_with_global"] == [100 + i for i in range(8)]
    assert ag["imap_error_then_continue"] == [0, 1, 2, "bad item 3", 4, 5]
    assert ag["context_manager_exit_terminates"]["usable_after_exit"] is False
