"""A driver thread in a run of round trips reads its answers off the link itself (lending.py).

What a user relies on still holds there: values and errors come back to the caller, a method
that fails is not mistaken for a value, two threads sharing the link each get their own
answers, a worker that dies at once under a call fails it clearly, the loop keeps its own
record of every call (the call events the dashboard shows), and a driver that catches Ctrl-C
in a run of round trips goes on making calls. A thread finds its value in a run of answers
sent in one frame as well.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from proclines import read_line

import actorgrid as ag
from actorgrid._protocol.codec import encode
from actorgrid._protocol.ids import ObjectId
from actorgrid._protocol.messages import Payload, TaskResult, TaskResults
from actorgrid._runtime import current
from actorgrid._runtime.lending import Lending

CLUSTER_OPTIONS = {"num_workers": 1}
GET_TIMEOUT_S = 60.0  # a hang fails the test instead of stalling the suite
WAIT_TIMEOUT_S = 10.0  # (an answer comes in milliseconds)


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


def test_ag_wait_on_a_call_answered_as_it_begins_returns_with_the_answer(cluster) -> None:
    # Each ag.wait comes right after a round trip read by this thread, so the answer it waits
    # for often resolves while the wait registers: that wake-up must not be lost (it was, about
    # once in 500, and the wait then returned only at its timeout, or never without one).
    actor = Echo.remote()
    for i in range(2000):
        assert ag.get(actor.echo.remote(i), timeout=GET_TIMEOUT_S) == i
        ref = actor.echo.remote(i)
        started = time.monotonic()
        ready, _ = ag.wait([ref], timeout=WAIT_TIMEOUT_S)
        # A lost wake-up returns at the timeout, with the ref resolved meanwhile.
        assert time.monotonic() - started < WAIT_TIMEOUT_S, f"wake-up of wait {i} lost"
        assert ready == [ref]


_INTERRUPTED_DRIVER = """
import sys
from pathlib import Path

import actorgrid as ag

stop = Path(sys.argv[1]) / "stop"


@ag.remote
class Echo:
    def echo(self, x):
        return x


ag.init(num_workers=1)
actor = Echo.remote()
assert ag.get(actor.echo.remote(-1)) == -1
caught = i = 0
told = -1
while True:
    try:  # (told inside the try: the next Ctrl-C, sent once it is told, lands in it too)
        if told < caught:
            print("caught", caught, flush=True)
            told = caught
        while not stop.exists():
            i += 1
            ag.get(actor.echo.remote(i), timeout=60)
        break
    except KeyboardInterrupt:
        caught += 1
print("final", ag.get(actor.echo.remote("final"), timeout=60), flush=True)
ag.shutdown()
"""

INTERRUPTS = 25
LINE_TIMEOUT_S = 20.0


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    line = read_line(proc, timeout)
    if line is None:
        _hung(proc, timeout)
    assert line is not None
    return line


def _reap(proc: subprocess.Popen[str]) -> None:
    """A driver's end, even after a failed assertion: killed if it still runs, waited for."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=LINE_TIMEOUT_S)
    assert proc.stdout is not None
    proc.stdout.close()


def _hung(proc: subprocess.Popen[str], timeout: float) -> None:
    """Where each of a hung driver's threads is, for the report."""
    spy = shutil.which("py-spy")
    dump = (
        subprocess.run(
            [spy, "dump", "--locals", "--pid", str(proc.pid)], capture_output=True, text=True
        ).stdout
        if spy
        else "(no py-spy to show where it is)"
    )
    raise AssertionError(f"no line from the driver in {timeout} s:\n{dump}")


@pytest.mark.slow
def test_a_call_after_each_caught_ctrl_c_in_a_run_of_round_trips_is_answered(
    tmp_path: Path, processes
) -> None:
    # A Ctrl-C lands between any two bytecodes of the driver's main thread: in its lent reads,
    # its direct writes of calls (Peer.send_threadsafe), anywhere. Wherever it landed, nothing
    # may be left held that the loop waits for: a lock taken and never released hung the
    # loop, and every call after it, once in about 15 runs of this test.
    script = tmp_path / "driver.py"
    script.write_text(_INTERRUPTED_DRIVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    processes.add([proc.pid])
    rng = random.Random()
    try:
        assert _readline(proc, LINE_TIMEOUT_S * 3) == "caught 0\n"  # (ready)
        processes.add(p.pid for p in psutil.Process(proc.pid).children(recursive=True))
        for n in range(1, INTERRUPTS + 1):
            time.sleep(rng.uniform(0, 0.02))  # a random moment in the run of round trips
            proc.send_signal(signal.SIGINT)
            assert _readline(proc, LINE_TIMEOUT_S) == f"caught {n}\n"
        (tmp_path / "stop").touch()
        assert _readline(proc, LINE_TIMEOUT_S) == "final final\n"
        assert proc.wait(timeout=LINE_TIMEOUT_S) == 0
        processes.wait_gone()
    finally:
        _reap(proc)


_TRIO_AFTER_DRIVER = """
import signal

import trio

import actorgrid as ag
from actorgrid._runtime import current


@ag.remote
class Echo:
    def echo(self, x):
        return x


ag.init(num_workers=1)
actor = Echo.remote()
for i in range(200):
    assert ag.get(actor.echo.remote(i), timeout=60) == i
assert current.get().peers[actor._info.address].lending.reads > 0  # (read by this thread)
# What trio.run checks before it installs its own SIGINT handler: else a Ctrl-C in it would
# not be trio's KeyboardInterrupt.
print("handler", signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)


async def main():
    print("ready", flush=True)
    await trio.sleep_forever()


try:
    trio.run(main)
except KeyboardInterrupt:
    print("interrupted", flush=True)
ag.shutdown()
"""


def test_trio_run_after_round_trips_read_by_the_main_thread_gets_ctrl_c(
    tmp_path: Path, processes
) -> None:
    # The main thread's lent waits swap SIGINT's handler for their reads (getting._Sigint):
    # each must leave Python's default behind, or a later trio.run keeps it and Ctrl-C there
    # misses trio's own handling.
    script = tmp_path / "driver.py"
    script.write_text(_TRIO_AFTER_DRIVER)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    processes.add([proc.pid])
    try:
        assert _readline(proc, LINE_TIMEOUT_S * 3) == "handler True\n"
        processes.add(p.pid for p in psutil.Process(proc.pid).children(recursive=True))
        assert _readline(proc, LINE_TIMEOUT_S) == "ready\n"
        proc.send_signal(signal.SIGINT)
        assert _readline(proc, LINE_TIMEOUT_S) == "interrupted\n"
        assert proc.wait(timeout=LINE_TIMEOUT_S) == 0
        processes.wait_gone()
    finally:
        _reap(proc)


class _Arrived:
    """A lent stream that has received ``frames``."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames

    def receive_nowait(self) -> tuple[list[bytes], bool]:
        frames, self.frames = self.frames, []
        return frames, False


def test_a_thread_takes_its_value_out_of_a_run_of_answers_and_leaves_all_to_the_loop() -> None:
    # A worker that ran a burst on its loop answers it in one TaskResults (coalesce.py): the
    # thread waiting for one of them reads its value there, as from a TaskResult alone.
    def answer(i: int, ok: bool) -> TaskResult:
        return TaskResult(ObjectId(bytes([i]) * 16), ok, Payload(b"v%d" % i))

    batch = TaskResults((answer(1, True), answer(2, True), answer(3, False)))
    lending = Lending()
    lending.stream = _Arrived([b"".join(encode(batch))] * 3)  # type: ignore[assignment]
    assert lending.read(ObjectId(bytes([2]) * 16), deferred=True) == answer(2, True)
    assert list(lending.handed) == [batch] * 3  # every answer still goes to the loop
    # An error is the loop's to resolve (a task may be retried on it); an absent one waits.
    lending.stream = _Arrived([b"".join(encode(batch))])  # type: ignore[assignment]
    assert lending.read(ObjectId(bytes([3]) * 16), deferred=True) is None
    lending.stream = _Arrived([b"".join(encode(batch))])  # type: ignore[assignment]
    assert lending.read(ObjectId(bytes([4]) * 16), deferred=True) is None
