"""The hot path's shortcuts keep the books and the order right: an actor call answered
straight from its pool thread (no wake of the worker's loop for its bookkeeping) is over as far
as listings and cancels are concerned, and calls a pool thread writes straight to its link
(the first of each method run, even with earlier ones unanswered) keep their order. Answers a
worker finished while others waited go back in batches (TaskResults), each exactly as its own
TaskResult would have: its value or its error, in order, split to stay under the message cap."""

from __future__ import annotations

import gc
import time
from typing import Any

import pytest

import actorgrid as ag
from actorgrid._protocol.ids import ObjectId
from actorgrid._protocol.messages import Payload, TaskResult, TaskResults
from actorgrid._runtime import current
from actorgrid._runtime.gcyoung import YOUNG_COLLECTION_OBJECTS, young_threshold_raised
from actorgrid._runtime.lanes import ANSWERS_BATCH_BYTES, ANSWERS_BATCH_MAX, send_results
from actorgrid._runtime.refs import EntryTable, ObjectEntry


@ag.remote
class Echo:
    def echo(self, x: int) -> int:
        return x

    def spawn(self) -> ag.ObjectRef[int]:
        return child.remote()

    def hold(self, seconds: float) -> None:
        time.sleep(seconds)

    def check(self, x: int) -> int:
        if x % 7 == 0:
            raise ValueError(f"{x} is a multiple of 7")
        return x

    @ag.method(inline=True)
    def check_inline(self, x: int) -> int:
        if x % 7 == 0:
            raise ValueError(f"{x} is a multiple of 7")
        return x


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


def test_answers_of_a_burst_come_in_batches_each_with_its_own_value_or_error(cluster) -> None:
    rt: Any = current.get()
    handlers = rt._handlers
    plain = handlers[TaskResults]
    batched: list[int] = []

    def counting(peer: Any, msg: TaskResults) -> None:
        batched.append(len(msg.results))
        plain(peer, msg)

    handlers[TaskResults] = counting
    try:
        echo = Echo.remote()
        ag.get(echo.echo.remote(0), timeout=60)
        # The first call holds the actor's lane while the burst queues up behind it, so the
        # calls after it finish with others waiting: those are answered in batches.
        hold = echo.hold.remote(1.0)
        refs = [echo.check.remote(i) for i in range(1, 601)]
        ag.get(hold, timeout=60)
        for i, ref in enumerate(refs, 1):
            if i % 7 == 0:
                with pytest.raises(ValueError, match=f"{i} is a multiple of 7"):
                    ag.get(ref, timeout=60)
            else:
                assert ag.get(ref, timeout=60) == i
    finally:
        handlers[TaskResults] = plain
    assert batched and max(batched) > 1


def test_answers_of_a_burst_run_on_the_workers_loop_come_in_batches_in_order(cluster) -> None:
    # echo and check_inline run on the worker's loop, a burst's calls in the turn that reads
    # their frame: their answers leave in that turn's write, a run of them as one TaskResults.
    rt: Any = current.get()
    handlers = rt._handlers
    plain = handlers[TaskResults]
    batched: list[int] = []

    def counting(peer: Any, msg: TaskResults) -> None:
        batched.append(len(msg.results))
        plain(peer, msg)

    handlers[TaskResults] = counting
    try:
        echo = Echo.remote()
        ag.get(echo.echo.remote(0), timeout=60)
        refs = [
            echo.check_inline.remote(i) if i % 2 else echo.echo.remote(i) for i in range(1, 601)
        ]
        for i, ref in enumerate(refs, 1):
            if i % 7 == 0 and i % 2:
                with pytest.raises(ValueError, match=f"{i} is a multiple of 7"):
                    ag.get(ref, timeout=60)
            else:
                assert ag.get(ref, timeout=60) == i
        assert ag.get(refs[1::2], timeout=60) == list(range(2, 601, 2))
    finally:
        handlers[TaskResults] = plain
    assert batched and max(batched) > 1


class _Peer:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


def _result(i: int, nbytes: int) -> TaskResult:
    return TaskResult(i.to_bytes(16, "big"), True, Payload(b"x" * nbytes))


def test_batches_of_answers_stay_under_their_caps_and_keep_the_order() -> None:
    big = ANSWERS_BATCH_BYTES // 3 + 1  # three of them overflow a batch
    results = [_result(i, big if i % 5 == 0 else 10) for i in range(3 * ANSWERS_BATCH_MAX)]
    peer = _Peer()
    send_results(peer, results)  # type: ignore[arg-type]
    unpacked: list[TaskResult] = []
    for message in peer.sent:
        batch = message.results if isinstance(message, TaskResults) else (message,)
        assert len(batch) <= ANSWERS_BATCH_MAX
        assert sum(r.value.nbytes for r in batch) <= ANSWERS_BATCH_BYTES
        unpacked.extend(batch)
    assert unpacked == results
    assert len(peer.sent) <= len(results) // 5  # two big answers a batch, with the small between


def test_a_lone_answer_goes_as_a_plain_task_result() -> None:
    peer = _Peer()
    send_results(peer, [_result(1, 10)])  # type: ignore[arg-type]
    assert peer.sent == [_result(1, 10)]


def test_the_entry_table_holds_entries_weakly_and_keeps_a_revived_one() -> None:
    table = EntryTable()
    oid = ObjectId(b"o" * 16)
    first = ObjectEntry(oid, "here")
    table[oid] = first
    assert table.get(oid) is first and oid in table and len(table) == 1
    second = ObjectEntry(oid, "here")
    table[oid] = second  # revived under the same id before the first went
    del first
    gc.collect()
    assert table.get(oid) is second
    del second
    gc.collect()
    assert table.get(oid) is None and oid not in table and len(table) == 0


@ag.remote
def young_threshold() -> int:
    return gc.get_threshold()[0]


@ag.remote
class Pinger:
    def ping(self) -> int:
        return 0

    def young_threshold(self) -> int:
        return gc.get_threshold()[0]


def test_calls_in_flight_collect_rarely_in_the_driver_and_in_workers(cluster) -> None:
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_OBJECTS
    assert set(ag.get([young_threshold.remote() for _ in range(8)], timeout=30)) == {
        YOUNG_COLLECTION_OBJECTS
    }
    pinger = Pinger.remote()
    assert ag.get(pinger.young_threshold.remote(), timeout=30) == YOUNG_COLLECTION_OBJECTS
    # Calls and tasks with no arguments (no pickling either side) still answer, in order.
    assert ag.get([pinger.ping.remote() for _ in range(500)], timeout=30) == [0] * 500
    assert ag.get([child.remote() for _ in range(200)], timeout=30) == [7] * 200
    with pytest.raises(TypeError, match="argument"):
        pinger.ping.remote(1)  # checked against the method at the call, as ever


def test_a_drivers_own_collector_thresholds_come_back_when_the_runtime_ends() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with young_threshold_raised():
            assert gc.get_threshold() == (YOUNG_COLLECTION_OBJECTS, 10, 10)
        assert gc.get_threshold() == (700, 10, 10)
        with young_threshold_raised():
            gc.set_threshold(5_000, 10, 10)  # the program changed it meanwhile: kept
        assert gc.get_threshold() == (5_000, 10, 10)
        gc.set_threshold(100_000, 10, 10)  # higher already: left as it is
        with young_threshold_raised():
            assert gc.get_threshold() == (100_000, 10, 10)
        gc.disable()
        gc.set_threshold(700, 10, 10)
        with young_threshold_raised():  # a collector turned off stays as the program set it
            assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.enable()
        gc.set_threshold(*saved)
