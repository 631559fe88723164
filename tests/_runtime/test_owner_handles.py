"""Handles held anywhere follow a restarted actor: an actor that was given a handle before
the actor's worker was killed reaches its new incarnation through that same handle."""

from __future__ import annotations

import os
import signal
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
