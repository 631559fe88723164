"""Remote generators on a real two-worker cluster: values stream as they are yielded, the
producer stays within its window of a slow consumer, cancel and drop stop it, errors come after
the items before them, actor methods stream too, and a worker that dies mid-stream fails it."""

from __future__ import annotations

import gc
import mmap
import os
import signal
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

import actorgrid as ag

pytestmark = pytest.mark.usefixtures("cluster")

DEADLINE_S = 60.0
# The consumer's count of items taken, shared through a mapped file. Native "q": packed and
# unpacked with one aligned 8-byte copy, so a reader never sees half of an update (a standard
# size such as "<q" is written byte by byte: a reader could see 255 -> 256 as 0).
_COUNTER = "q"
_COUNTER_BYTES = struct.calcsize(_COUNTER)


def _wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@ag.remote
def squares(n: int) -> Iterator[int]:
    for i in range(n):
        yield i * i


@ag.remote
def ahead_of(counter: str, n: int) -> Iterator[int]:
    """Yields 0..n-1, then the most items it ever was ahead of its consumer: items it had
    yielded minus the count the consumer wrote to ``counter`` after taking each one (and the
    first few moments it was over 16 ahead, to explain a failure)."""
    Path(f"{counter}.run-{os.getpid()}-{time.monotonic_ns()}").touch()
    with open(counter, "r+b") as f, mmap.mmap(f.fileno(), _COUNTER_BYTES) as shared:
        most = taken = 0
        over: list[tuple[int, int]] = []
        for i in range(n):
            # The count only grows: a lower read is a stale one (seen once in thousands of
            # runs' reads, never twice in a row), so the latest count is the highest read.
            taken = max(taken, struct.unpack_from(_COUNTER, shared, 0)[0])
            most = max(most, i - taken)
            if i - taken > 16 and len(over) < 5:
                over.append((i, taken))
            yield i
        yield (most, over)


@ag.remote
def forever(folder: str) -> Iterator[int]:
    i = 0
    try:
        while True:
            (Path(folder) / "progress").write_text(str(i))
            yield i
            i += 1
    finally:
        (Path(folder) / "stopped").write_text(str(i))


@ag.remote
def fails_after(n: int) -> Iterator[int]:
    yield from range(n)
    raise KeyError(f"no item {n}")


@ag.remote
async def async_squares(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await trio.sleep(0)
        yield i * i


@ag.remote
def dies_after(folder: str, n: int) -> Iterator[int]:
    yield from range(n)
    _wait_for(Path(folder) / "taken", "the consumer")
    os.kill(os.getpid(), signal.SIGKILL)
    yield -1  # never reached


@ag.remote
def dies_first_time(folder: str, n: int) -> Iterator[int]:
    flag = Path(folder) / "ran-once"
    if not flag.exists():
        flag.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    yield from range(n)


@ag.remote
class Source:
    def __init__(self, base: int) -> None:
        self.base = base

    def numbers(self, n: int) -> Iterator[int]:
        for i in range(n):
            yield self.base + i

    async def later(self, n: int) -> AsyncIterator[str]:
        for i in range(n):
            await trio.sleep(0)
            yield f"{self.base}:{i}"

    def ping(self) -> str:
        return "pong"


def test_values_stream_in_order() -> None:
    gen = squares.remote(100)
    assert isinstance(gen, ag.ObjectRefGenerator)
    refs = list(gen)
    assert all(isinstance(r, ag.ObjectRef) for r in refs)
    assert ag.get(refs) == [i * i for i in range(100)]
    assert ag.get(gen.completed()) == 100
    assert gen.is_finished()


def test_producer_never_runs_more_than_the_window_ahead(tmp_path: Path) -> None:
    window = 16
    counter = tmp_path / "taken"
    counter.write_bytes(bytes(_COUNTER_BYTES))
    n = 10_000
    with open(counter, "r+b") as f, mmap.mmap(f.fileno(), _COUNTER_BYTES) as shared:
        gen = ahead_of.options(generator_backpressure=window).remote(str(counter), n)
        values = []
        for taken, ref in enumerate(gen, start=1):
            values.append(ag.get(ref))
            struct.pack_into(_COUNTER, shared, 0, taken)
            if taken % 1000 == 0:
                # A slow consumer now and then: the producer runs into its window meanwhile.
                time.sleep(0.05)
    most, over = values.pop()
    assert values == list(range(n))
    assert len(list(tmp_path.glob("taken.run-*"))) == 1  # one run: no retry, no duplicate
    # The producer counts from its side; the consumer writes its count just after taking an
    # item, so the window is the bound (see _scheduler/streams.py), and a producer held back
    # only by the window reaches at least half of it while the consumer sleeps.
    assert window // 2 <= most <= window, (most, over)


def test_default_window_also_bounds_the_producer(tmp_path: Path) -> None:
    counter = tmp_path / "taken"
    counter.write_bytes(bytes(_COUNTER_BYTES))
    with open(counter, "r+b") as f, mmap.mmap(f.fileno(), _COUNTER_BYTES) as shared:
        values = []
        for taken, ref in enumerate(ahead_of.remote(str(counter), 500), start=1):
            values.append(ag.get(ref))
            struct.pack_into(_COUNTER, shared, 0, taken)
            if taken == 100:
                time.sleep(0.2)
    most, over = values.pop()
    assert values == list(range(500))
    assert len(list(tmp_path.glob("taken.run-*"))) == 1  # one run: no retry, no duplicate
    assert most <= 64, (most, over)  # DEFAULT_GENERATOR_BACKPRESSURE


def test_cancel_stops_the_producer(tmp_path: Path) -> None:
    gen = forever.options(generator_backpressure=4).remote(str(tmp_path))
    first = [ag.get(next(gen)) for _ in range(3)]
    assert first == [0, 1, 2]
    ag.cancel(gen)
    _wait_for(tmp_path / "stopped", "the cancelled producer to stop")
    stopped_at = int((tmp_path / "stopped").read_text())
    # The window bounds how far it got: 3 taken + 4 ahead (+1 in the making when cancelled).
    assert stopped_at <= 3 + 4 + 1
    rest = list(gen)  # the items it sent before the cancel, then the cancellation
    with pytest.raises(ag.TaskCancelledError):
        ag.get(rest[-1])


def test_dropping_the_generator_stops_the_producer(tmp_path: Path) -> None:
    gen = forever.options(generator_backpressure=4).remote(str(tmp_path))
    assert ag.get(next(gen)) == 0
    del gen
    gc.collect()
    _wait_for(tmp_path / "stopped", "the dropped generator's producer to stop")
    assert int((tmp_path / "stopped").read_text()) <= 1 + 4 + 1


def test_an_exception_comes_after_the_items_before_it() -> None:
    got = []
    with pytest.raises(KeyError, match="no item 5") as info:
        for ref in fails_after.remote(5):
            got.append(ag.get(ref))
    assert got == [0, 1, 2, 3, 4]
    assert isinstance(info.value, ag.RemoteError)
    assert "fails_after" in str(info.value.remote_traceback)


@ag.remote
def total_of_squares(n: int) -> int:
    return sum(ag.get(ref) for ref in squares.options(generator_backpressure=3).remote(n))


def test_tasks_consume_remote_generators() -> None:
    # The consumers are tasks: items and acks go worker to worker, or stay in one worker
    # when a producer lands beside its consumer (four consumers, two one-CPU workers): each
    # side lends its CPU while it waits for the other, or they would wait for each other.
    refs = [total_of_squares.remote(30) for _ in range(4)]
    assert ag.get(refs, timeout=DEADLINE_S) == [sum(i * i for i in range(30))] * 4


def test_async_generator_function() -> None:
    assert [ag.get(r) for r in async_squares.remote(20)] == [i * i for i in range(20)]


def test_async_consumer_in_another_trio_loop() -> None:
    async def main() -> list[int]:
        return [await ref async for ref in squares.remote(30)]

    assert trio.run(main) == [i * i for i in range(30)]


def test_actor_method_generators_sync_and_async() -> None:
    source = Source.remote(100)
    assert ag.get(list(source.numbers.remote(5))) == [100, 101, 102, 103, 104]
    assert ag.get(list(source.later.remote(3))) == ["100:0", "100:1", "100:2"]
    assert ag.get(source.ping.remote()) == "pong"  # the actor serves plain calls as before
    ag.kill(source)


def test_a_handle_without_the_class_streams_when_asked() -> None:
    Source.options(name="gen-source").remote(7)
    handle = ag.get_actor("gen-source")
    stream = handle.numbers.options(streaming=True, generator_backpressure=2).remote(4)
    assert ag.get(list(stream)) == [7, 8, 9, 10]
    with pytest.raises(TypeError, match=r"options\(streaming=True\)"):
        ag.get(handle.numbers.remote(4))
    ag.kill(handle)


def test_a_worker_dying_mid_stream_fails_it_after_the_items(tmp_path: Path) -> None:
    gen = dies_after.remote(str(tmp_path), 3)
    got = [ag.get(next(gen)) for _ in range(3)]
    (tmp_path / "taken").touch()
    rest = list(gen)
    assert got == [0, 1, 2]
    assert len(rest) == 1  # not retried: its items were taken, a rerun would repeat them
    with pytest.raises(ag.WorkerDiedError):
        ag.get(rest[0])


def test_a_worker_dying_before_the_first_item_is_retried(tmp_path: Path) -> None:
    assert ag.get(list(dies_first_time.remote(str(tmp_path), 4))) == [0, 1, 2, 3]
    assert (tmp_path / "ran-once").exists()


def test_bad_options_teach() -> None:
    with pytest.raises(ValueError, match="generator_backpressure must be an int >= 1"):
        squares.options(generator_backpressure=-1)
    with pytest.raises(ag.SerializationError, match="pass the refs it yields"):
        ag.put(squares.remote(1))
