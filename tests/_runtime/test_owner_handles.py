"""Handles held anywhere follow a restarted actor: an actor that was given a handle before
the actor's worker was killed reaches its new incarnation through that same handle. A
coroutine actor whose worker is killed is restarted by its owner under max_restarts."""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

import pytest

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 2}
CALL_TIMEOUT_S = 90.0  # a restart waits for the killed worker's slot; the machine is shared

pytestmark = pytest.mark.usefixtures("cluster")


@ag.remote(max_restarts=1, max_task_retries=1)
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n

    def pid(self) -> int:
        return os.getpid()


@ag.remote
class Holder:
    """Keeps a handle it was given, and calls through it."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter

    def incr(self) -> int:
        return ag.get(self.counter.incr.remote(), timeout=CALL_TIMEOUT_S)

    def pid(self) -> int:
        return os.getpid()


def test_a_handle_passed_to_another_actor_follows_the_restarted_actor() -> None:
    counter = Counter.remote()
    counter_pid = ag.get(counter.pid.remote(), timeout=60)
    # A holder on the other worker (so that killing the counter's worker spares it).
    holders = [Holder.remote(counter) for _ in range(4)]
    pids = ag.get([h.pid.remote() for h in holders], timeout=60)
    holder = next((h for h, p in zip(holders, pids, strict=True) if p != counter_pid), None)
    assert holder is not None, "every holder landed on the counter's worker"
    assert ag.get(holder.incr.remote(), timeout=60) == 1
    os.kill(counter_pid, signal.SIGKILL)
    # Its owner (this driver) restarts it: once its own handle answers, the new incarnation
    # runs (its state starts afresh). A call sent just as the worker died is sent again
    # (max_task_retries); one made later, through any handle, reaches the new incarnation.
    assert ag.get(counter.incr.remote(), timeout=CALL_TIMEOUT_S) == 1
    assert ag.get(holder.incr.remote(), timeout=CALL_TIMEOUT_S) == 2
    assert ag.get(holder.incr.remote(), timeout=CALL_TIMEOUT_S) == 3
    for h in [counter, *holders]:
        ag.kill(h)


@ag.remote
async def pid_server(ctx: ag.Context) -> str:
    """Answers every ask with its process id; ends on "stop"."""
    async for msg in ctx.mailbox:
        if msg == "stop":
            return "stopped"
        await ctx.reply(os.getpid())
    return "closed"


def test_a_coroutine_actor_whose_worker_dies_is_restarted_under_max_restarts(processes) -> None:
    name = f"pids-{uuid.uuid4().hex[:8]}"
    restartable = pid_server.options(name=name, max_restarts=1).remote()
    first = ag.ask(name, "pid", timeout=30)
    once = pid_server.remote()  # max_restarts=0
    once_pid = ag.ask(once, "pid", timeout=30)
    processes.add([first])
    os.kill(first, signal.SIGKILL)
    # Its owner (this driver) places it again under its name; asks made meanwhile may find
    # the old incarnation gone, so they are made again until the deadline.
    deadline = time.monotonic() + 60
    while True:
        try:
            second = ag.ask(name, "pid", timeout=10)
            break
        except (ag.ActorDiedError, ag.GetTimeoutError, ValueError):
            assert time.monotonic() < deadline, "the coroutine actor was never restarted"
            time.sleep(0.1)
    assert second != first
    ag.send(name, "stop")
    assert ag.get(restartable, timeout=30) == "stopped"  # its ref is the new incarnation's
    if once_pid == first:  # on the same worker, with no restarts: its ref says it died
        with pytest.raises(ag.ActorDiedError, match="died"):
            ag.get(once, timeout=30)
    else:
        ag.send(once, "stop")
        assert ag.get(once, timeout=30) == "stopped"
