"""Cluster operations and events against real processes: the node listing and its
availability, suspending and resuming workers and nodes, restarting and closing workers,
closing a node, and following events from sync code (``on_event``) and from Trio code
(``async for event in cluster.events()``).

Every test starts its own embedded cluster with a short pulse interval, so that the tests can
stop, replace and close its processes freely, and checks with psutil that the processes it
stopped are gone.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
import trio

import actorgrid as ag

PULSE_S = 0.2
OPTIONS: dict[str, Any] = {
    "num_workers": 2,
    "pulse_interval": PULSE_S,
    "grace_s": 1.0,
    "pending_warning_s": 0.5,
}
# Long enough for the node to have pulsed, and to have refilled a slot if it were going to.
SETTLE_S = 4 * PULSE_S


@pytest.fixture
def grid(processes) -> Iterator[ag.Cluster]:
    cluster = ag.init(**OPTIONS)
    try:
        processes.add(w.pid for w in cluster.workers())
        yield cluster
    finally:
        processes.add(cluster.node_pids)
        ag.shutdown()
        processes.wait_gone()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kinds(cluster: ag.Cluster) -> list[str]:
    return [e.kind for e in cluster.recent_events()]


def find_event(events: list[ag.Event], kind: str, **fields: Any) -> ag.Event | None:
    for event in events:
        if event.kind == kind and all(getattr(event, k) == v for k, v in fields.items()):
            return event
    return None


def short_id(any_id: bytes) -> str:
    """How error messages print an id."""
    return any_id.hex()[:6] + any_id.hex()[-6:]


@ag.remote
def getpid() -> int:
    return os.getpid()


def ran_on(n: int = 40) -> set[int]:
    """The pids of the workers that ``n`` tasks submitted at once ran on."""
    return set(ag.get([getpid.remote() for _ in range(n)], timeout=30))


@ag.remote
def hold(path: str, seconds: float) -> int:
    """Say where it runs, run ``seconds``, then record that it finished."""
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    with Path(path + ".done").open("a") as done:
        done.write(f"{os.getpid()}\n")
    return os.getpid()


def _read(path: Path) -> str | None:
    try:
        return path.read_text() or None
    except FileNotFoundError:
        return None


# --- listings and events from sync code ---------------------------------------------------


def test_nodes_lists_the_embedded_node_and_its_pulses(grid: ag.Cluster) -> None:
    (node,) = grid.nodes()
    assert node.num_workers == 2
    assert node.pid == os.getpid()  # embedded: the node agent runs in the driver
    assert node.hostname == socket.gethostname()
    assert node.state == "alive"
    assert {w.node_id for w in grid.workers()} == {node.node_id}

    seen: list[ag.Event] = []
    unsubscribe = grid.on_event(seen.append)
    try:
        availability = wait_for(
            lambda: grid.nodes()[0].availability, 5 * PULSE_S + 2, "a node pulse"
        )
        assert availability.memory_available > 0
        assert 0 <= availability.memory_percent <= 100
        assert 0 <= availability.cpu_percent <= 100
        assert availability.num_cpus == os.cpu_count()
        assert 0 <= grid.nodes()[0].last_pulse_s < 5 * PULSE_S

        def statuses() -> list[ag.Event]:
            return [e for e in list(seen) if e.kind == "node_status"]

        wait_for(lambda: len(statuses()) >= 2, 5 * PULSE_S + 2, "node_status events")
        status = statuses()[-1]
        assert status.node_id == node.node_id
        assert status.hostname == node.hostname
        assert status.availability is not None
        assert status.availability.memory_available > 0
    finally:
        unsubscribe()
    # Pulses go to listeners only: the history keeps what happened, not every heartbeat.
    history = kinds(grid)
    assert "node_status" not in history
    assert history[:3] == ["node_joined", "worker_started", "worker_started"]
    # Once unsubscribed, the callback hears nothing more.
    time.sleep(PULSE_S)
    heard = len(seen)
    time.sleep(SETTLE_S)
    assert len(seen) == heard


# --- suspend and resume ---------------------------------------------------------------------


def test_a_suspended_worker_gets_no_new_tasks_until_resumed(grid: ag.Cluster) -> None:
    a, b = grid.workers()
    grid.suspend(a)
    states = {w.worker_id: w.state for w in grid.workers()}
    assert states == {a.worker_id: "suspended", b.worker_id: "alive"}
    assert grid.nodes()[0].state == "alive"  # only the worker is suspended
    assert ran_on(40) == {b.pid}

    grid.resume(a.worker_id)  # a worker_id works as well as the record
    assert {w.state for w in grid.workers()} == {"alive"}
    wait_for(lambda: ran_on(40) == {a.pid, b.pid}, 10, "tasks to reach both workers again")


def test_a_suspended_node_takes_no_new_work(
    grid: ag.Cluster, processes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="actorgrid.runtime")
    (node,) = grid.nodes()
    a, b = grid.workers()
    grid.suspend(node)
    assert [w.state for w in grid.workers()] == ["suspended", "suspended"]
    assert grid.nodes()[0].state == "suspended"

    # A task submitted meanwhile waits (a resume may come), and the driver's log says why.
    waiting = getpid.remote()
    with pytest.raises(ag.GetTimeoutError):
        ag.get(waiting, timeout=1)
    warning = wait_for(
        lambda: next((m for m in caplog.messages if "is suspended" in m), None),
        what="the warning about the waiting task",
    )
    assert "1 task needs 1 CPU" in warning
    assert "Cluster.resume()" in warning  # the message says how to get out of it

    # A worker that joins a suspended node starts suspended.
    grid.restart_worker(a)
    fresh = wait_for(
        lambda: [w for w in grid.workers() if w.pid not in (a.pid, b.pid)], what="a new worker"
    )[0]
    processes.add([fresh.pid])
    wait_for(
        lambda: {w.state for w in grid.workers()} == {"suspended"}, 5, "the new worker suspended"
    )
    with pytest.raises(ag.GetTimeoutError):
        ag.get(waiting, timeout=0.5)

    grid.resume(node)
    assert grid.nodes()[0].state == "alive"
    assert {w.state for w in grid.workers()} == {"alive"}
    assert ag.get(waiting, timeout=10) in {fresh.pid, b.pid}
    wait_for(lambda: ran_on(40) == {fresh.pid, b.pid}, 10, "tasks to reach both workers again")


# --- restarting and closing workers --------------------------------------------------------


def test_restart_worker_puts_a_fresh_process_in_the_slot(grid: ag.Cluster, processes) -> None:
    old, other = grid.workers()
    grid.restart_worker(old)
    assert not processes.alive([old.pid])  # it returns once the old process has exited
    new = wait_for(
        lambda: [w for w in grid.workers() if w.pid not in (old.pid, other.pid)],
        what="the replacement worker",
    )[0]
    processes.add([new.pid])
    assert new.worker_id != old.worker_id
    assert new.node_id == old.node_id
    assert {w.pid for w in grid.workers()} == {new.pid, other.pid}

    def restarted() -> ag.Event | None:
        return find_event(grid.recent_events(), "worker_restarted", pid=new.pid)

    event = wait_for(restarted, 5, "the worker_restarted event")
    assert event.worker_id == new.worker_id
    assert find_event(grid.recent_events(), "worker_died", pid=old.pid) is not None
    assert find_event(grid.recent_events(), "worker_closed") is None
    wait_for(lambda: ran_on(40) == {new.pid, other.pid}, 10, "tasks to run on both workers")


def test_close_worker_lets_the_running_task_finish(
    grid: ag.Cluster, tmp_path: Path, processes
) -> None:
    marker = tmp_path / "hold"
    ref = hold.remote(str(marker), 1.0)
    pid = int(wait_for(lambda: _read(marker), what="the task to start"))
    closing = next(w for w in grid.workers() if w.pid == pid)
    (other,) = [w for w in grid.workers() if w.pid != pid]
    grid.close_worker(closing)
    # It returns once the worker has exited, and the worker exited after the task finished.
    assert not processes.alive([pid])
    assert (tmp_path / "hold.done").read_text().split() == [str(pid)]
    assert ag.get(ref, timeout=10) == pid  # its result still came back, from that worker
    event = wait_for(
        lambda: find_event(grid.recent_events(), "worker_closed", pid=pid), 5, "worker_closed"
    )
    assert event.worker_id == closing.worker_id
    wait_for(lambda: len(grid.workers()) == 1, 5, "the closed worker to leave")
    time.sleep(SETTLE_S)
    # The slot stays empty.
    assert [w.pid for w in grid.workers()] == [other.pid]
    assert grid.node_pids == [other.pid]
    assert "worker_restarted" not in kinds(grid)
    assert ran_on(10) == {other.pid}

    # Killed and replaced at once.
    grid.close_worker(other, terminate=True, restart=True)
    assert not processes.alive([other.pid])
    new = wait_for(lambda: grid.workers(), 10, "the replacement worker")[0]
    processes.add([new.pid])
    assert new.pid != other.pid
    died = find_event(grid.recent_events(), "worker_died", pid=other.pid)
    assert died is not None and died.exit_code == -9
    wait_for(
        lambda: find_event(grid.recent_events(), "worker_restarted", pid=new.pid),
        5,
        "worker_restarted",
    )
    assert ran_on(10) == {new.pid}


async def test_close_worker_async_lets_the_running_task_finish(tmp_path: Path, processes) -> None:
    marker = tmp_path / "hold"
    async with ag.connect(**OPTIONS) as cluster:
        processes.add(w.pid for w in cluster.workers())
        ref = hold.remote(str(marker), 1.0)
        with trio.fail_after(20):
            while not _read(marker):
                await trio.sleep(0.02)
        pid = int(marker.read_text())
        closing = next(w for w in cluster.workers() if w.pid == pid)
        (other,) = [w for w in cluster.workers() if w.pid != pid]
        await cluster.close_worker_async(closing)
        assert not processes.alive([pid])
        assert (tmp_path / "hold.done").read_text().split() == [str(pid)]
        assert await ag.get_async(ref, timeout=10) == pid
        with trio.fail_after(5):
            while find_event(await cluster.recent_events_async(), "worker_closed", pid=pid) is None:
                await trio.sleep(0.02)
            while len(cluster.workers()) != 1:
                await trio.sleep(0.02)
        await trio.sleep(SETTLE_S)
        assert [w.pid for w in cluster.workers()] == [other.pid]
        assert cluster.node_pids == [other.pid]
        # A closed worker cannot be closed again.
        with pytest.raises(ag.ActorgridError, match=short_id(closing.worker_id)):
            await cluster.close_worker_async(closing)

        await cluster.close_worker_async(other, terminate=True, restart=True)
        assert not processes.alive([other.pid])
        with trio.fail_after(10):
            while not cluster.workers():
                await trio.sleep(0.02)
        (new,) = cluster.workers()
        processes.add([new.pid])
        assert new.pid != other.pid
        assert await ag.get_async(getpid.remote(), timeout=10) == new.pid
        events = await cluster.recent_events_async()
        died = find_event(events, "worker_died", pid=other.pid)
        assert died is not None and died.exit_code == -9
        assert find_event(events, "worker_restarted", pid=new.pid) is not None
        processes.add(cluster.node_pids)
    await trio.to_thread.run_sync(processes.wait_gone)


@pytest.mark.parametrize(
    "operation",
    [
        "close_worker",
        "restart_worker",
        "suspend",
        "resume",
    ],
)
def test_an_unknown_worker_is_refused_by_name(grid: ag.Cluster, operation: str) -> None:
    unknown = os.urandom(16)
    with pytest.raises(ag.ActorgridError, match=short_id(unknown)):
        getattr(grid, operation)(unknown)
    assert len(grid.workers()) == 2  # nothing else was touched
    assert {w.state for w in grid.workers()} == {"alive"}


# --- events from Trio code ------------------------------------------------------------------


async def test_events_yield_the_history_then_live_events(processes) -> None:
    async with ag.connect(**OPTIONS) as cluster:
        processes.add(w.pid for w in cluster.workers())
        with pytest.raises(RuntimeError, match="nodes_async"):
            cluster.nodes()
        with pytest.raises(RuntimeError, match=re.escape("async for event in cluster.events()")):
            cluster.on_event(print)
        (node,) = await cluster.nodes_async()
        old = cluster.workers()[0]
        with trio.fail_after(20):
            async with aclosing(cluster.events()) as events:
                history = [await anext(events) for _ in range(3)]
                assert [e.kind for e in history] == [
                    "node_joined",
                    "worker_started",
                    "worker_started",
                ]
                assert {e.node_id for e in history} == {node.node_id}
                assert {e.pid for e in history[1:]} == {w.pid for w in cluster.workers()}
                await cluster.restart_worker_async(old)
                live = []
                async for event in events:
                    if event.kind != "node_status":
                        live.append(event)
                    if event.kind == "worker_restarted":
                        break
        assert [e.kind for e in live] == ["worker_died", "worker_restarted"]
        assert live[0].pid == old.pid
        processes.add([live[1].pid])
        assert live[1].pid != old.pid
        processes.add(cluster.node_pids)
    await trio.to_thread.run_sync(processes.wait_gone)


# --- closing a node -------------------------------------------------------------------------


def test_close_node_stops_its_workers_and_its_agent(grid: ag.Cluster, processes) -> None:
    (node,) = grid.nodes()
    pids = [w.pid for w in grid.workers()]
    grid.close_node(node)
    processes.wait_gone(pids, timeout=5)
    assert grid.node_pids == []
    closed = wait_for(
        lambda: find_event(grid.recent_events(), "node_closed", node_id=node.node_id),
        5,
        "node_closed",
    )
    assert closed.hostname == node.hostname
    events = grid.recent_events()
    assert all(find_event(events, "worker_closed", pid=pid) for pid in pids)
    assert grid.nodes() == []
    wait_for(lambda: grid.workers() == [], 5, "the workers to leave")
