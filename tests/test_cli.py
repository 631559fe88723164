"""The ``actorgrid`` command, run the way users run it: as a separate process.

Each command runs in a process group of its own, so that whatever it starts (the embedded
cluster's workers) is killed with it if the test fails or times out.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

import actorgrid

CHECK_TIMEOUT_S = 120
# After SIGTERM to the command's process group, how long its processes get to exit.
GRACE_S = 5


def _console_script() -> str:
    """The installed ``actorgrid`` script of this interpreter's environment."""
    scripts = Path(sysconfig.get_path("scripts"))
    for name in ("actorgrid", "actorgrid.exe"):
        if (scripts / name).is_file():
            return str(scripts / name)
    found = shutil.which("actorgrid")
    assert found is not None, (
        f"no `actorgrid` console script in {scripts} or on PATH; install the package with "
        "`pip install -e '.[test]'`"
    )
    return found


def _run(argv: list[str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion; on timeout or any failure, kill its whole process group.

    Output goes to files rather than pipes, so that a stray process still holding them open
    cannot make reading the output hang. The command runs in an empty directory, as a user's
    would: from the repository root, ``python -m`` would put the source tree's ``actorgrid``
    (which has no ``cli`` subpackage) ahead of the installed package.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (
        tempfile.TemporaryDirectory() as cwd,
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
    ):
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=out, stderr=err, text=True, env=env, start_new_session=True
        )
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        else:
            timed_out = False
        finally:
            _kill_group(proc)  # whatever the command left in its group goes too
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(argv, proc.returncode, out.read(), err.read())
    if timed_out:
        pytest.fail(f"did not finish within {timeout_s} s: {_describe(result)}")
    return result


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the process group, give it GRACE_S to empty, then SIGKILL what is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return  # the group is empty
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader: a zombie still counts as a member of the group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{' '.join(result.args)} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def test_help_lists_the_operator_commands() -> None:
    result = _run([sys.executable, "-m", "actorgrid.cli", "--help"])
    assert result.returncode == 0, _describe(result)
    for command in ("kill", "cancel"):
        assert f"\n    {command} " in result.stdout, result.stdout
    kill = _run([sys.executable, "-m", "actorgrid.cli", "kill", "--help"])
    assert "--namespace" in kill.stdout and "actorgrid list actors" in kill.stdout
    cancel = _run([sys.executable, "-m", "actorgrid.cli", "cancel", "--help"])
    assert "--force" in cancel.stdout and "actorgrid list tasks" in cancel.stdout


def test_version_console_script() -> None:
    result = _run([_console_script(), "version"])
    assert result.returncode == 0, _describe(result)
    assert result.stdout == f"actorgrid {actorgrid.__version__}\n"


def test_version_flag() -> None:
    result = _run([_console_script(), "--version"])
    assert result.returncode == 0, _describe(result)
    assert result.stdout == f"actorgrid {actorgrid.__version__}\n"


def test_version_module() -> None:
    result = _run([sys.executable, "-m", "actorgrid.cli", "version"])
    assert result.returncode == 0, _describe(result)
    assert result.stdout == f"actorgrid {actorgrid.__version__}\n"


def test_usage_errors_exit_2() -> None:
    for argv in (
        [],
        ["no-such-command"],
        ["check", "--num-workers", "0"],
        ["kill"],  # which actor?
        ["cancel"],  # which task?
        ["up", "--max-message-bytes", "lots"],
    ):
        result = _run([sys.executable, "-m", "actorgrid.cli", *argv])
        assert result.returncode == 2, _describe(result)
        assert "usage: actorgrid" in result.stderr, _describe(result)


@pytest.mark.slow
@pytest.mark.timeout(CHECK_TIMEOUT_S + 30)
def test_check_runs_tasks_and_an_actor() -> None:
    result = _run([_console_script(), "check", "--num-workers", "2"], timeout_s=CHECK_TIMEOUT_S)
    assert result.returncode == 0, _describe(result)
    lines = result.stdout.splitlines()
    assert "ok" in lines, _describe(result)
    assert "cold start:" in result.stdout, _describe(result)
    assert str([i * i for i in range(8)]) in result.stdout, _describe(result)


@pytest.mark.slow
@pytest.mark.timeout(CHECK_TIMEOUT_S + 30)
def test_check_json() -> None:
    result = _run(
        [sys.executable, "-m", "actorgrid.cli", "check", "--num-workers", "1", "--json"],
        timeout_s=CHECK_TIMEOUT_S,
    )
    assert result.returncode == 0, _describe(result)
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["results"] == [i * i for i in range(8)]
    assert report["actor_result"] == 7
    assert report["cold_start_s"] > 0
