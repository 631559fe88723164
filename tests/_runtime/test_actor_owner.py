"""Calls to an actor whose worker is killed, as its creator (the owner) sees them, against
real processes: a call in flight is sent again to the restarted actor only under
``max_task_retries``, else it fails with ActorDiedError; calls made while it restarts reach
the new incarnation in the order made; a call to an actor that is dead for good fails at once,
without being sent."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import actorgrid as ag

PULSE_S = 0.2
FOREVER = ag.RestartPolicy(max_restarts=-1)


@pytest.fixture
def grid(processes) -> Iterator[ag.Cluster]:
    cluster = ag.init(num_workers=2, pulse_interval=PULSE_S, grace_s=1.0, worker_restarts=FOREVER)
    try:
        processes.add(w.pid for w in cluster.workers())
        yield cluster
    finally:
        processes.add(cluster.node_pids)
        ag.shutdown()
        processes.wait_gone()


@ag.remote
class Holder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def pid(self) -> int:
        return os.getpid()

    def hold(self, path: str) -> int:
        """Runs until its worker is killed, the first time; returns at once after."""
        started = Path(path)
        if not started.exists():
            started.write_text(str(os.getpid()))
            time.sleep(60)  # killed long before this ends
        return os.getpid()

    def note(self, i: int) -> list[int]:
        self.seen.append(i)
        return list(self.seen)


def _kill_while_held(handle: ag.ActorHandle, path: Path, processes) -> ag.ObjectRef:
    """Start a call that holds the actor's worker, then SIGKILL that worker."""
    ref = handle.hold.remote(str(path))
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, "the held call never started"
        time.sleep(0.02)
    pid = int(path.read_text())
    processes.add([pid])
    os.kill(pid, signal.SIGKILL)
    return ref


def test_a_call_in_flight_is_run_again_on_the_restarted_actor_under_max_task_retries(
    grid: ag.Cluster, tmp_path: Path, processes
) -> None:
    h = Holder.options(max_restarts=1, max_task_retries=1).remote()
    first = ag.get(h.pid.remote(), timeout=30)
    held = _kill_while_held(h, tmp_path / "held", processes)
    # Made while its worker dies or it restarts: they wait, and run in the order made.
    later = [h.note.remote(i) for i in range(5)]
    second = ag.get(held, timeout=30)
    assert second != first  # it ran again, on the new incarnation
    assert ag.get(later, timeout=30)[-1] == [0, 1, 2, 3, 4]


def test_a_call_in_flight_without_retries_fails_and_the_actor_still_restarts(
    grid: ag.Cluster, tmp_path: Path, processes
) -> None:
    h = Holder.options(max_restarts=1).remote()  # max_task_retries=0
    first = ag.get(h.pid.remote(), timeout=30)
    held = _kill_while_held(h, tmp_path / "held", processes)
    with pytest.raises(ag.ActorDiedError, match="went away"):
        ag.get(held, timeout=30)
    assert ag.get(h.pid.remote(), timeout=30) != first  # restarted, usable again


def test_a_call_to_an_actor_dead_for_good_fails_at_once(
    grid: ag.Cluster, tmp_path: Path, processes
) -> None:
    h = Holder.remote()  # max_restarts=0
    held = _kill_while_held(h, tmp_path / "held", processes)
    with pytest.raises(ag.ActorDiedError):
        ag.get(held, timeout=30)
    # Its owner knows it is dead: the call is not sent anywhere, it fails now.
    t0 = time.monotonic()
    with pytest.raises(ag.ActorDiedError, match="was not sent"):
        ag.get(h.note.remote(1), timeout=30)
    assert time.monotonic() - t0 < 5.0  # far below any dial or pulse timeout


def test_a_killed_actor_is_not_restarted_when_its_worker_dies_later(
    grid: ag.Cluster, processes
) -> None:
    h = Holder.options(max_restarts=-1).remote()
    pid = ag.get(h.pid.remote(), timeout=30)
    ag.kill(h)
    with pytest.raises(ag.ActorDiedError):
        ag.get(h.note.remote(2), timeout=30)
    processes.add([pid])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pid in [w.pid for w in grid.workers()] or len(grid.workers()) < 2:
        assert time.monotonic() < deadline, "the killed worker was never replaced"
        time.sleep(0.05)
    # A restart would have begun when the driver's link to that worker closed, at the kill,
    # and taken the other worker at once: by the time the node has replaced the worker (a
    # process start, far slower) plus this second, its event would be there.
    time.sleep(1.0)
    assert "actor_restarted" not in [e.kind for e in grid.recent_events()]
    with pytest.raises(ag.ActorDiedError):
        ag.get(h.note.remote(3), timeout=30)
