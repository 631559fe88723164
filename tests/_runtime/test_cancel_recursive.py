"""``ag.cancel(ref)`` reaches every task that task started, transitively, whether or not it
waits on them; ``recursive=False`` cancels that task alone.

Each task notes what happens to it in marker files (started, cancelled, finished), so the test
waits on events, not on time. Parent and child take no CPU, so the three levels run at once on
the two workers whatever the placement.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 2}

pytestmark = pytest.mark.usefixtures("cluster")

LONG_S = 120.0
WAIT_S = 60.0


def _until_released(folder: str, who: str) -> None:
    """Run until the test writes ``release``, noting whether this ended by a cancel."""
    Path(folder, f"{who}-started").touch()
    try:
        deadline = time.monotonic() + LONG_S
        while time.monotonic() < deadline and not Path(folder, "release").exists():
            time.sleep(0.01)  # short sleeps: a cancel's KeyboardInterrupt lands between them
    except KeyboardInterrupt:
        Path(folder, f"{who}-cancelled").touch()
        raise
    Path(folder, f"{who}-finished").touch()


@ag.remote
def grandchild(folder: str) -> None:
    _until_released(folder, "grandchild")


@ag.remote(num_cpus=0)
def child(folder: str) -> None:
    grandchild.remote(folder)  # never waited on
    _until_released(folder, "child")


@ag.remote(num_cpus=0)
def parent(folder: str) -> None:
    child.remote(folder)  # never waited on
    _until_released(folder, "parent")


def _wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} not written within {WAIT_S} s"
        time.sleep(0.02)


def test_cancel_reaches_a_grandchild_the_parent_never_waited_on(tmp_path: Path) -> None:
    ref = parent.remote(str(tmp_path))
    _wait_for_file(tmp_path / "grandchild-started")
    ag.cancel(ref)
    with pytest.raises(ag.TaskCancelledError):
        ag.get(ref, timeout=WAIT_S)
    for who in ("child", "grandchild"):
        _wait_for_file(tmp_path / f"{who}-cancelled")
    # No wait is needed to prove the grandchild never finishes: it writes "cancelled" only on
    # the way out of a cancel, which re-raises, so "finished" can no longer be written; and
    # releasing them now shows that nothing was left running to finish.
    (tmp_path / "release").touch()
    assert not (tmp_path / "grandchild-finished").exists()
    assert not (tmp_path / "child-finished").exists()


def test_cancel_with_recursive_false_leaves_the_children_running(tmp_path: Path) -> None:
    ref = parent.remote(str(tmp_path))
    _wait_for_file(tmp_path / "grandchild-started")
    ag.cancel(ref, recursive=False)
    with pytest.raises(ag.TaskCancelledError):
        ag.get(ref, timeout=WAIT_S)
    (tmp_path / "release").touch()
    for who in ("child", "grandchild"):
        _wait_for_file(tmp_path / f"{who}-finished")
        assert not (tmp_path / f"{who}-cancelled").exists()
