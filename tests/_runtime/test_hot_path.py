"""The hot path's shortcuts keep the books and the order right: an actor call answered
straight from its pool thread (no wake of the worker's loop for its bookkeeping) is over as far
as listings and cancels are concerned, and calls a pool thread writes straight to its link
(the first of each method run, even with earlier ones unanswered) keep their order."""

from __future__ import annotations

import time

import actorgrid as ag


@ag.remote
class Echo:
    def echo(self, x: int) -> int:
        return x

    def spawn(self) -> ag.ObjectRef[int]:
        return child.remote()


@ag.remote
def child() -> int:
    return 7


def test_lone_calls_answered_from_their_threads_are_not_listed_as_running(cluster) -> None:
    echo = Echo.remote()
    refs = []
    for i in range(20):  # one at a time: each is the last of its burst, answered directly
        ref = echo.echo.remote(i)
        assert ag.get(ref, timeout=30) == i
        refs.append(ref)
    ids = {ref.id for ref in refs}
    # The pool thread writes the answer, then queues the call's end: a thread the machine
    # preempts between the two leaves the last call listed for a moment. So a few listings,
    # back to back (milliseconds, against the loop's own drain every second, which alone
    # would leave calls listed in each of them).
    for _ in range(5):
        listed = [t for t in cluster.status().tasks if t.task_id in ids]
        if not listed:
            break
    assert listed == []


def test_a_cancel_after_the_answer_leaves_the_calls_children_running(cluster) -> None:
    echo = Echo.remote()
    call = echo.spawn.remote()
    inner = ag.get(call, timeout=30)
    ag.cancel(call)  # answered already: nothing to cancel, and its child is not its to end
    assert ag.get(inner, timeout=30) == 7


@ag.remote
class Recorder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def add(self, i: int) -> None:
        self.seen.append(i)

    def get(self) -> list[int]:
        return self.seen


@ag.remote
class Relay:
    def __init__(self, recorder: ag.ActorHandle[Recorder]) -> None:
        self.recorder = recorder

    def forward(self, i: int) -> None:
        # Fire-and-forget: earlier calls to the recorder are still in flight when this one,
        # the first call of this run of the method, goes straight to the link.
        self.recorder.add.remote(i)


def test_fire_and_forget_calls_sent_straight_from_pool_threads_keep_their_order(cluster) -> None:
    recorder = Recorder.remote()
    relay = Relay.remote(recorder)
    n = 300
    ag.get([relay.forward.remote(i) for i in range(n)], timeout=60)
    deadline = time.monotonic() + 60
    seen = ag.get(recorder.get.remote(), timeout=30)
    while len(seen) < n and time.monotonic() < deadline:
        time.sleep(0.05)  # fire-and-forget: there is no ref to wait on, only the list
        seen = ag.get(recorder.get.remote(), timeout=30)
    assert seen == list(range(n))
