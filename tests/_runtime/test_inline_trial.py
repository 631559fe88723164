"""A sync actor method that makes only fire-and-forget calls (the step of an actor ring) runs
on the worker's loop once its first runs on pool threads were short (inline.py's trial).

What a user checks: such a method keeps running in order, one call at a time; after its trial
it runs on the worker's main thread; an ``ag.send`` it makes there still reaches its agent, in
order, and a send that fails fails the call. One embedded cluster for the module (conftest's
``cluster``: real worker processes).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

import actorgrid as ag
from actorgrid._runtime.inline import (
    INLINE_BUDGET_S,
    TRIAL_RUN_S,
    TRIAL_RUNS,
    _loop_names,
    _quiet_caller,
    trial_methods,
    trial_ran,
)

GET_TIMEOUT_S = 60.0
OUTPUT_TIMEOUT_S = 30.0


class Recorder:
    """Stands for a handle's method in ``self.out.remote(i)``: notes the thread it ran on."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []

    def remote(self, i: int) -> None:
        self.seen.append((i, threading.current_thread().name))
        if i < 0:
            time.sleep(-i / 1000)  # what a user's object may do that its trial did not show


class _Relay:
    def __init__(self) -> None:
        self.out = Recorder()

    def step(self, i: int) -> None:
        self.out.remote(i)

    def forward(self, name: str, i: int) -> None:
        self.out.remote(i)
        ag.send(name, i)  # waits on a pool thread; on the loop it is sent after the method

    def seen(self) -> list[tuple[int, str]]:
        return list(self.out.seen)


@ag.remote
class Relay(_Relay):
    pass


@ag.remote
class Stuck(_Relay):
    """Relay as a class of its own: a demoted method leaves the loop for its whole class, in
    that worker, and the other tests' Relay must not be it."""


@ag.remote
async def collect(ctx: ag.Context) -> list[int]:
    got: list[int] = []
    async for msg in ctx.mailbox:
        if msg < 0:
            return got
        got.append(int(msg))
    return got


def _until_on_loop(relay: Any, call: Any) -> int:
    """Call ``call(i)`` for i = 0, 1, ... one at a time until a run is on the worker's main
    thread; how many calls that took."""
    deadline = time.monotonic() + GET_TIMEOUT_S
    i = 0
    while True:
        ag.get(call(i), timeout=GET_TIMEOUT_S)
        i += 1
        if i > TRIAL_RUNS and ag.get(relay.seen.remote(), timeout=GET_TIMEOUT_S)[-1][1] == (
            "MainThread"
        ):
            return i
        assert time.monotonic() < deadline, "the method never moved to the worker's loop"


def test_a_method_making_only_fire_and_forget_calls_moves_to_the_loop_after_its_trial(
    cluster: ag.Cluster,
) -> None:
    relay = Relay.remote()
    n = _until_on_loop(relay, relay.step.remote)
    refs = [relay.step.remote(i) for i in range(n, n + 50)]  # back to back, pipelined
    ag.get(refs, timeout=GET_TIMEOUT_S)
    seen = ag.get(relay.seen.remote(), timeout=GET_TIMEOUT_S)
    assert [i for i, _ in seen] == list(range(n + 50))  # each once, in the order sent
    assert all(thread.startswith("actorgrid-user") for _, thread in seen[:TRIAL_RUNS])


def test_a_send_from_a_method_on_the_loop_arrives_in_order_and_its_failure_is_reported(
    cluster: ag.Cluster,
) -> None:
    relay = Relay.remote()
    sink = collect.options(name="trial-sink").remote()
    n = _until_on_loop(relay, lambda i: relay.forward.remote("trial-sink", i))
    # Pipelined: each call's send waits for the agent's name on the loop, in a task; the
    # actor's next call runs only after it, so the agent gets them in order.
    refs = [relay.forward.remote("trial-sink", i) for i in range(n, n + 50)]
    ag.get(refs, timeout=GET_TIMEOUT_S)
    with pytest.raises(ag.NameNotFoundError, match="nobody"):
        ag.get(relay.forward.remote("nobody", 0), timeout=GET_TIMEOUT_S)
    relay.forward.remote("trial-sink", -1)
    assert ag.get(sink, timeout=GET_TIMEOUT_S) == list(range(n + 50))


def test_a_method_moved_to_the_loop_that_blocks_there_is_reported_and_moved_back_for_good(
    cluster: ag.Cluster, capfd: pytest.CaptureFixture[str]
) -> None:
    relay = Stuck.remote()
    n = _until_on_loop(relay, relay.step.remote)
    blocked_ms = int(INLINE_BUDGET_S * 3 * 1000)
    ag.get(relay.step.remote(-blocked_ms), timeout=GET_TIMEOUT_S)  # holds the loop: reported
    ag.get([relay.step.remote(i) for i in range(n, n + 20)], timeout=GET_TIMEOUT_S)
    seen = ag.get(relay.seen.remote(), timeout=GET_TIMEOUT_S)
    assert seen[n] == (-blocked_ms, "MainThread")
    assert all(thread.startswith("actorgrid-user") for _, thread in seen[n + 1 :])
    deadline, err = time.monotonic() + OUTPUT_TIMEOUT_S, ""
    report = re.compile(r"Stuck\.step ran on the loop \(it makes only fire-and-forget calls")
    while not report.search(err := err + capfd.readouterr().err):
        assert time.monotonic() < deadline, f"no report of the blocked call:\n{err}"
        time.sleep(0.05)


def test_which_methods_go_on_trial_is_told_by_their_code() -> None:
    def helper() -> None:
        return None

    class Steps:
        def __init__(self) -> None:
            self.next: Any = None

        def hop(self, n: int, last: int, done: str) -> None:
            if n >= last:
                ag.send(done, n)
            else:
                self.next.hop.remote(n + 1, last, done)

        def keeps(self) -> Any:
            return self.next.hop.remote(1)  # its ref is used

        def nested(self, x: Any) -> None:
            self.next.hop.remote(helper())

        def calls_a_function(self) -> None:
            self.next.hop.remote(1)
            helper()

        def gets(self) -> None:
            ag.get(self.next.hop.remote(1))

        def loops(self) -> None:
            for i in range(3):
                self.next.hop.remote(i)

        def stores(self) -> None:
            hop = self.next.hop.remote
            hop(1)

        def slow(self) -> None:
            self.next.hop.remote(1)

    assert [name for name in vars(Steps) if _quiet_caller(vars(Steps)[name])] == ["hop", "slow"]
    assert trial_methods(Steps) == {"hop": 0, "slow": 0}
    assert _loop_names(Steps) == set()
    trial_ran(Steps, "hop", TRIAL_RUN_S * 10)  # a slow run (preempted?) does not count
    for _ in range(TRIAL_RUNS - 1):
        trial_ran(Steps, "hop", TRIAL_RUN_S / 10)
    assert _loop_names(Steps) == set()
    trial_ran(Steps, "hop", TRIAL_RUN_S / 10)
    assert _loop_names(Steps) == {"hop"}
    trial_ran(Steps, "slow", INLINE_BUDGET_S * 2)  # it may block: its trial is over
    for _ in range(TRIAL_RUNS):
        trial_ran(Steps, "slow", TRIAL_RUN_S / 10)
    assert _loop_names(Steps) == {"hop"}
    assert trial_methods(Steps) == {}
