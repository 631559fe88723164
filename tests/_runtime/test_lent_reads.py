"""A driver thread in a run of round trips reads its answers off the link itself (lending.py).

What a user relies on still holds there: values and errors come back to the caller, a method
that fails is not mistaken for a value, two threads sharing the link each get their own
answers, a worker that dies at once under a call fails it clearly, and the loop keeps its own
record of every call (the call events the dashboard shows).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

import actorgrid as ag
from actorgrid._runtime import current

CLUSTER_OPTIONS = {"num_workers": 1}
GET_TIMEOUT_S = 60.0  # a hang fails the test instead of stalling the suite


@ag.remote
class Echo:
    def echo(self, x: Any) -> Any:
        return x

    def fail(self, x: int) -> int:
        raise ValueError(f"no {x}")

    def exit_now(self) -> None:
        os._exit(3)  # the worker dies under the call: no answer ever comes


@ag.remote(max_retries=1, retry_exceptions=True)
def flaky(marker: str) -> str:
    """Fails on its first run (a fresh ``marker`` path each call), succeeds when retried."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first run")
    return "retried"


@ag.remote
def square(x: int) -> int:
    return x * x


def _lending(actor: Any) -> Any:
    """The lending state of the driver's link to ``actor``'s worker."""
    rt: Any = current.get()
    return rt.peers[actor._info.address].lending


def test_round_trips_get_their_values_and_errors_from_the_waiting_thread(cluster) -> None:
    actor = Echo.remote()
    for i in range(300):
        if i % 50 == 49:
            with pytest.raises(ValueError, match=f"no {i}"):
                ag.get(actor.fail.remote(i), timeout=GET_TIMEOUT_S)
        else:
            assert ag.get(actor.echo.remote(i), timeout=GET_TIMEOUT_S) == i
    # The thread did read the link (else this tests the loop's path only).
    assert _lending(actor).reads > 0


def test_two_threads_sharing_a_lent_link_each_get_their_own_answers(cluster) -> None:
    actor = Echo.remote()
    ag.get(actor.echo.remote(0), timeout=GET_TIMEOUT_S)
    errors: list[BaseException] = []

    def run(tag: str) -> None:
        try:
            for i in range(300):
                assert ag.get(actor.echo.remote((tag, i)), timeout=GET_TIMEOUT_S) == (tag, i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    run("main")
    for thread in threads:
        thread.join(GET_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors


def test_a_worker_dying_under_a_call_read_by_its_thread_fails_it(cluster) -> None:
    actor = Echo.remote()
    for i in range(20):  # the link is lent: the next answer would be read by this thread
        ag.get(actor.echo.remote(i), timeout=GET_TIMEOUT_S)
    with pytest.raises((ag.ActorDiedError, ag.WorkerDiedError)):
        ag.get(actor.exit_now.remote(), timeout=GET_TIMEOUT_S)
    # The cluster's replacement worker answers new actors' calls as before.
    fresh = Echo.remote()
    for i in range(20):
        assert ag.get(fresh.echo.remote(i), timeout=GET_TIMEOUT_S) == i


def test_calls_answered_to_their_thread_are_still_recorded_by_the_loop(cluster) -> None:
    actor = Echo.remote()
    ids = []
    for i in range(50):
        ref = actor.echo.remote(i)
        ag.get(ref, timeout=GET_TIMEOUT_S)
        ids.append(ref.id)
    assert _lending(actor).reads > 0
    # The loop's record of each call (its event, as the dashboard lists them) follows within
    # a few LEND_S: polled for, as it travels through the event stream.
    deadline = time.monotonic() + GET_TIMEOUT_S
    while True:
        events = {e.task_id: e for e in cluster.recent_events() if e.kind == "call_finished"}
        if all(i in events for i in ids):
            break
        assert time.monotonic() < deadline, "calls the thread resolved have no call events"
        time.sleep(0.05)
    assert {events[i].name for i in ids} == {"Echo.echo"}


def test_task_round_trips_keep_their_retries_and_values(cluster, tmp_path) -> None:
    # A task's error answer is the loop's to resolve (it may retry the task): the thread that
    # reads it off the link must not take it for the outcome.
    for i in range(30):
        assert ag.get(square.remote(i), timeout=GET_TIMEOUT_S) == i * i
        if i % 10 == 9:
            marker = str(tmp_path / f"flaky{i}")
            assert ag.get(flaky.remote(marker), timeout=GET_TIMEOUT_S) == "retried"


def test_a_thread_that_read_its_answers_leaves_no_file_descriptor_behind(cluster) -> None:
    actor = Echo.remote()
    ag.get(actor.echo.remote(0), timeout=GET_TIMEOUT_S)
    reads = _lending(actor).reads

    def round_trips() -> None:
        for i in range(20):
            ag.get(actor.echo.remote(i), timeout=GET_TIMEOUT_S)

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    for _ in range(5):  # each thread waits with an eventfd of its own (getting._Poller)
        thread = threading.Thread(target=round_trips)
        thread.start()
        thread.join(GET_TIMEOUT_S)
    assert _lending(actor).reads > reads  # (the threads did read the link)
    assert open_fds() <= before
