"""Nothing sent without an answer vanishes with its actor's worker (``_runtime/confirms.py``),
against real processes: quiet calls (``h.method.remote()`` as a statement) and fire-and-forget
messages (``ag.send``) that were queued, running or in the mailbox when the worker hosting
their actor was killed (SIGKILL) are counted by their sender (``Cluster.lost_sends``) and
reported as a ``sends_lost`` event naming the actor and how many; when every one of them had
finished before the kill, nothing is reported."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import watched_init
from losses import lost_events, pid_in, unconfirmed, wait_until

import actorgrid as ag
from actorgrid._runtime import current

PULSE_S = 0.2
FOREVER = ag.RestartPolicy(max_restarts=-1)


@pytest.fixture
def grid(processes) -> Iterator[ag.Cluster]:
    with watched_init(
        processes, num_workers=2, pulse_interval=PULSE_S, grace_s=1.0, worker_restarts=FOREVER
    ) as cluster:
        yield cluster


@ag.remote
class Holder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def pid(self) -> int:
        return os.getpid()

    def hold(self, path: str) -> None:
        Path(path).write_text(str(os.getpid()))
        time.sleep(60)  # killed long before this ends

    def note(self, i: int) -> None:
        self.seen.append(i)

    def slow(self, path: str) -> None:
        Path(path).write_text(str(os.getpid()))
        time.sleep(0.5)

    def log(self) -> list[int]:
        return list(self.seen)


@ag.remote
class Relay:
    """Calls another actor from its worker's pool thread, as the handle ring's hop does."""

    def pid(self) -> int:
        return os.getpid()

    def pass_on(self, target: Any, held: str, n: int) -> None:
        target.hold.remote(held)
        for i in range(n):
            target.note.remote(i)

    def unconfirmed(self) -> int:
        # Written here, not losses.unconfirmed: this runs on a worker, which gets this module
        # by value but cannot import tests/losses.py.
        rt: Any = current.get()
        return sum(p.sends.unconfirmed() for p in list(rt.peers.values()))


@ag.remote
async def gate(ctx: ag.Context, path: str) -> int:
    """Holds on its first message (until its worker is killed) if ``path`` is given; else
    counts messages and answers "count?" and "pid?" asks."""
    got = 0
    async for msg in ctx.mailbox:
        if msg == "count?":
            await ctx.reply(got)
            continue
        if msg == "pid?":
            await ctx.reply(os.getpid())
            continue
        got += 1
        if path:
            Path(path).write_text(str(os.getpid()))
            await trio.sleep(60)  # killed long before this ends
    return got


def _reported(grid: ag.Cluster) -> int:
    """How many the sends_lost events so far count."""
    return sum(e.count for e in lost_events(grid))


def test_quiet_calls_running_or_queued_when_their_worker_is_killed_are_reported(
    grid: ag.Cluster, tmp_path: Path, processes
) -> None:
    h = Holder.options(max_restarts=1).remote()
    first = ag.get(h.pid.remote(), timeout=30)
    held = str(tmp_path / "held")
    h.hold.remote(held)  # quiet (its arguments make no call): no answer is ever sent for it
    for i in range(4):
        h.note.remote(i)  # quiet, queued behind the held one
    pid = pid_in(tmp_path / "held", processes)
    # All on their way on the link (a call sent later would go to the restarted actor).
    wait_until("all five sent", lambda: unconfirmed() == 5)
    os.kill(pid, signal.SIGKILL)
    wait_until("five reported lost", lambda: _reported(grid) == 5)
    assert grid.lost_sends == 5
    (event,) = lost_events(grid)
    assert event.actor_id == h.actor_id
    assert event.name.startswith("Holder#")
    assert event.detail.startswith("5 calls made without keeping their ref to actor Holder#")
    assert ag.get(h.pid.remote(), timeout=30) != first  # restarted; later calls reach it


def test_quiet_calls_an_actor_made_from_its_pool_thread_are_reported_by_its_worker(
    grid: ag.Cluster, tmp_path: Path, processes
) -> None:
    h = Holder.remote()
    target = ag.get(h.pid.remote(), timeout=30)
    for _ in range(16):  # placed on either worker: one on the other is wanted
        relay = Relay.remote()
        relay_pid = ag.get(relay.pid.remote(), timeout=30)
        if relay_pid != target:
            break
    assert relay_pid != target, "no relay was placed on the other worker"
    held = str(tmp_path / "held")
    ag.get(relay.pass_on.remote(h, held, 4), timeout=30)
    assert pid_in(tmp_path / "held", processes) == target
    wait_until("all five sent", lambda: ag.get(relay.unconfirmed.remote(), timeout=30) == 5)
    os.kill(target, signal.SIGKILL)
    wait_until("five reported lost", lambda: _reported(grid) == 5)
    (event,) = lost_events(grid)
    assert (event.pid, event.actor_id, event.count) == (relay_pid, h.actor_id, 5)
    assert grid.lost_sends == 0  # the driver sent none of them


def test_no_loss_is_reported_when_every_quiet_call_finished_before_the_kill(
    grid: ag.Cluster, processes
) -> None:
    h = Holder.options(max_restarts=1).remote()
    first = ag.get(h.pid.remote(), timeout=30)
    for i in range(5):
        h.note.remote(i)
    assert ag.get(h.log.remote(), timeout=30) == [0, 1, 2, 3, 4]
    wait_until("the worker confirmed them", lambda: unconfirmed() == 0)
    processes.add([first])
    os.kill(first, signal.SIGKILL)
    # The end of the driver's link to that worker counts any loss, and then restarts the
    # actor: once it has restarted, a loss would have been counted.
    wait_until("the restart", lambda: "actor_restarted" in [e.kind for e in grid.recent_events()])
    assert grid.lost_sends == 0
    assert lost_events(grid) == []


def test_a_worker_closed_gracefully_confirms_the_calls_it_drained_before_it_exits(
    grid: ag.Cluster, tmp_path: Path, processes
) -> None:
    h = Holder.remote()
    ag.get(h.pid.remote(), timeout=30)
    started = str(tmp_path / "started")
    h.slow.remote(started)  # quiet; still running when the close comes
    pid = pid_in(tmp_path / "started", processes)
    (worker,) = [w for w in grid.workers() if w.pid == pid]
    # The worker finishes it, then exits at once: far sooner than its next confirmation
    # would have gone (REPORT_S), had it not confirmed what it finished before exiting.
    grid.close_worker(worker)
    wait_until("the worker gone", lambda: pid not in [w.pid for w in grid.workers()])
    grid.nodes()  # a turn of this process's loop: the link's end has been handled
    assert grid.lost_sends == 0
    assert lost_events(grid) == []


def test_messages_in_the_mailbox_when_its_worker_is_killed_are_reported(
    grid: ag.Cluster, tmp_path: Path, processes
) -> None:
    g = gate.remote(str(tmp_path / "held"))
    for i in range(5):
        ag.send(g, i)  # the first is taken; four wait in the mailbox behind it
    pid = pid_in(tmp_path / "held", processes)
    wait_until("the first message confirmed", lambda: unconfirmed() == 4)
    os.kill(pid, signal.SIGKILL)
    wait_until("four reported lost", lambda: _reported(grid) == 4)
    assert grid.lost_sends == 4
    (event,) = lost_events(grid)  # all were in its mailbox
    assert event.actor_id == g._entry.actor.actor_id
    assert event.detail.startswith("4 fire-and-forget messages to actor ")
    with pytest.raises(ag.ActorDiedError):
        ag.get(g, timeout=30)


def test_no_loss_is_reported_when_every_message_was_taken_before_the_kill(
    grid: ag.Cluster, processes
) -> None:
    g = gate.remote("")
    for i in range(5):
        ag.send(g, i)
    assert ag.ask(g, "count?", timeout=30) == 5
    wait_until("the worker confirmed them", lambda: unconfirmed() == 0)
    pid = ag.ask(g, "pid?", timeout=30)
    processes.add([pid])
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ag.ActorDiedError):
        ag.get(g, timeout=30)
    assert grid.lost_sends == 0
