"""A named actor's name outlives its worker while the actor restarts (``max_restarts``): the
head holds it for the next incarnation (``_scheduler/names.py``: ``worker_gone``), so a lookup
by name made in the window finds the actor and its calls reach the restarted one, instead of
NameNotFoundError. Real worker processes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import watched_init

import actorgrid as ag
from actorgrid._runtime import current

TIMEOUT_S = 60.0
NEVER = ag.RestartPolicy(max_restarts=0)


@ag.remote
class Named:
    def pid(self) -> int:
        return os.getpid()


@pytest.fixture
def grid(processes) -> Iterator[ag.Cluster]:
    # A killed worker is not started again: a restart waits for a worker that takes it.
    with watched_init(
        processes, num_workers=2, pulse_interval=0.2, worker_restarts=NEVER
    ) as cluster:
        yield cluster


def _kill_and_wait_for_the_head(grid: ag.Cluster, name: str, processes) -> ag.WorkerStatistics:
    """Kill the worker of the actor ``name`` with its only other worker suspended (so the
    actor cannot restart yet); return once the head has let the killed worker go. The other
    worker is returned."""
    pid = ag.get(ag.get_actor(name).pid.remote(), timeout=TIMEOUT_S)
    (other,) = [w for w in grid.workers() if w.pid != pid]
    grid.suspend(other)
    processes.add([pid])
    os.kill(pid, signal.SIGKILL)
    rt: Any = current.get()
    deadline = time.monotonic() + TIMEOUT_S
    # Out of this process's placement at once, when its link closed; out of _unplaced when
    # the head's WorkerLeft came, which the head sends once it has handled the worker's names.
    while any(w.pid == pid for w in grid.workers()) or rt._unplaced:
        assert time.monotonic() < deadline, "the head never let the killed worker go"
        time.sleep(0.01)
    return other


def test_a_new_lookup_by_name_while_its_actor_restarts_finds_it(
    grid: ag.Cluster, processes
) -> None:
    Named.options(name="comes-back", max_restarts=1).remote()
    other = _kill_and_wait_for_the_head(grid, "comes-back", processes)
    found = ag.get_actor("comes-back")  # the head held the name for its next incarnation
    grid.resume(other)  # now it can restart there
    assert ag.get(found.pid.remote(), timeout=TIMEOUT_S) == other.pid


def test_a_name_without_restarts_is_free_once_its_worker_is_gone(
    grid: ag.Cluster, processes
) -> None:
    Named.options(name="gone-for-good").remote()
    _kill_and_wait_for_the_head(grid, "gone-for-good", processes)
    with pytest.raises(ag.NameNotFoundError):
        ag.get_actor("gone-for-good")
