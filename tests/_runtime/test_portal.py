"""The portal and its thread pool: Portal.run joins the queue of calls made with call_soon (it
never overtakes them); a pool job's outcome reaches its caller.

A real Trio loop on a thread of its own, as the sync facade runs it; no processes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from actorgrid._exceptions import NotInitializedError
from actorgrid._runtime.peer import batch
from actorgrid._runtime.portal import DRAIN_MAX, Portal, ThreadPool


class _Loop:
    """A Trio loop running on a background thread until ``stop``."""

    def __init__(self) -> None:
        self.portal: Portal | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the test's Trio loop did not start"

    async def _main(self) -> None:
        self.portal = Portal(trio.lowlevel.current_trio_token())
        self._stop = trio.Event()
        self._ready.set()
        await self._stop.wait()

    def stop(self) -> None:
        if self._thread.is_alive():
            assert self._stop is not None and self.portal is not None
            self.portal.token.run_sync_soon(self._stop.set)
            self._thread.join(30)


@pytest.fixture
def loop() -> Iterator[_Loop]:
    running = _Loop()
    try:
        yield running
    finally:
        running.stop()


def test_run_waits_for_every_call_queued_before_it(loop: _Loop) -> None:
    # More than one drain's worth: the loop runs DRAIN_MAX calls per turn, and before the fix
    # Portal.run went straight to Trio's queue, between two turns of this one.
    portal = loop.portal
    assert portal is not None
    seen: list[Any] = []
    count = DRAIN_MAX * 3 + 7
    for i in range(count):
        portal.call_soon(seen.append, i)

    async def mark() -> int:
        seen.append("run")
        return len(seen)

    assert portal.run(mark) == count + 1
    assert seen == [*range(count), "run"]


def test_run_returns_and_raises_what_the_function_does(loop: _Loop) -> None:
    portal = loop.portal
    assert portal is not None

    async def double(x: int) -> int:
        await trio.sleep(0)
        return 2 * x

    async def fail() -> None:
        raise KeyError("missing")

    assert portal.run(double, 21) == 42
    with pytest.raises(KeyError, match="missing"):
        portal.run(fail)


def test_run_from_the_loop_thread_is_refused_not_a_deadlock(loop: _Loop) -> None:
    portal = loop.portal
    assert portal is not None

    async def noop() -> None:
        return None

    async def from_loop() -> str:
        try:
            portal.run(noop)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    assert "made on that loop's own thread" in portal.run(from_loop)


def test_run_after_the_loop_ended_says_so(loop: _Loop) -> None:
    portal = loop.portal
    assert portal is not None
    loop.stop()

    async def noop() -> None:
        return None

    with pytest.raises(NotInitializedError, match=r"call ag\.init"):
        portal.run(noop)


def _run_jobs(portal: Portal, pool: ThreadPool, fns: list[Any]) -> list[Any]:
    """Run each of ``fns`` on the pool at once, from the loop; their results."""

    async def run_all() -> list[Any]:
        results: list[Any] = [None] * len(fns)

        async def one(i: int) -> None:
            results[i] = await pool.run(fns[i])

        async with trio.open_nursery() as nursery:
            for i in range(len(fns)):
                nursery.start_soon(one, i)
        return results

    return portal.run(run_all)  # type: ignore[no-any-return]


def test_a_failing_job_raises_in_its_caller_and_the_thread_stays_usable(loop: _Loop) -> None:
    portal = loop.portal
    assert portal is not None
    pool = ThreadPool(portal, name="test-fail")

    def fail() -> None:
        raise LookupError("job failed")

    try:
        with pytest.raises(LookupError, match="job failed"):
            portal.run(pool.run, fail)
        assert _run_jobs(portal, pool, [lambda: "again"]) == ["again"]
    finally:
        pool.close()


def test_jobs_handed_over_together_run_at_once_on_threads_of_their_own(loop: _Loop) -> None:
    # Jobs go to their threads at once: the first to the leader (the idle thread waiting on
    # the eventfd), the others to threads of their own. Each of these waits for all the
    # others, so the test ends only if none waits behind another.
    portal = loop.portal
    assert portal is not None
    pool = ThreadPool(portal, name="test-together")
    count = 4
    everyone = threading.Barrier(count, timeout=30)
    started: list[str] = []

    def meet(i: int) -> str:
        started.append(threading.current_thread().name)
        everyone.wait()
        return f"job {i}"

    try:
        first = _run_jobs(portal, pool, [lambda: "warm"])  # a leader, now idle, for the next
        assert first == ["warm"]
        assert _run_jobs(portal, pool, [lambda i=i: meet(i) for i in range(count)]) == [
            f"job {i}" for i in range(count)
        ]
        assert len(set(started)) == count
        # Started from another thread too (a pool thread starts a lane's drain, a runner).
        done = threading.Event()
        pool.start(done.set)
        assert done.wait(30)
        # And from the loop inside a batch() (a frame's handling): when the batch ends.
        ran = threading.Event()

        def in_a_batch() -> None:
            with batch():
                pool.start(ran.set)

        portal.call_soon(in_a_batch)
        assert ran.wait(30)
    finally:
        pool.close()


def test_a_closed_pool_leaves_no_thread_behind(loop: _Loop) -> None:
    portal = loop.portal
    assert portal is not None
    pool = ThreadPool(portal, name="test-closed")
    assert _run_jobs(portal, pool, [lambda: 1, lambda: 2, lambda: 3]) == [1, 2, 3]
    pool.close()
    for thread in threading.enumerate():
        if thread.name.startswith("test-closed"):
            thread.join(30)
            assert not thread.is_alive(), f"{thread.name} outlived its pool"
