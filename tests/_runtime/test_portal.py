"""The portal and the thread pool: Portal.run joins the queue of calls made with call_soon (it
never overtakes them), and ThreadPool wakes exactly one idle thread per job.

A real Trio loop on a thread of its own, as the sync facade runs it; no processes.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from actorgrid._exceptions import NotInitializedError
from actorgrid._runtime import portal as portal_module
from actorgrid._runtime.portal import DRAIN_MAX, Portal, ThreadPool

DEADLINE_S = 30.0


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


def _voluntary_switches(native_id: int) -> int:
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


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


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/task")
def test_a_job_wakes_one_idle_thread_the_last_to_go_idle(loop: _Loop) -> None:
    portal = loop.portal
    assert portal is not None
    pool = ThreadPool(portal, name="test-pool")
    try:
        # Four threads, all busy at once, then all idle.
        gate = threading.Barrier(4, timeout=DEADLINE_S)

        def meet() -> int:
            gate.wait()
            return threading.get_native_id()

        threads = set(_run_jobs(portal, pool, [meet] * 4))
        assert len(threads) == 4
        before = {tid: _voluntary_switches(tid) for tid in threads}
        ran_on = {_run_jobs(portal, pool, [threading.get_native_id])[0] for _ in range(50)}
        # One thread took every job; the other three slept through them (a shared queue woke
        # a second idle thread per job, which found nothing and slept again).
        assert len(ran_on) == 1
        for tid in threads - ran_on:
            assert _voluntary_switches(tid) == before[tid], f"idle thread {tid} was woken"
    finally:
        pool.close()


def test_idle_threads_retire_and_close_ends_them(
    loop: _Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    portal = loop.portal
    assert portal is not None
    monkeypatch.setattr(portal_module, "_THREAD_IDLE_S", 0.2)
    pool = ThreadPool(portal, name="test-retire")
    assert _run_jobs(portal, pool, [lambda: 1, lambda: 2]) == [1, 2]
    deadline = time.monotonic() + DEADLINE_S
    while pool._threads:
        assert time.monotonic() < deadline, "idle pool threads never retired"
        time.sleep(0.05)
    monkeypatch.setattr(portal_module, "_THREAD_IDLE_S", 30.0)
    assert _run_jobs(portal, pool, [lambda: 3]) == [3]  # a retired pool starts a thread again
    pool.close()
    deadline = time.monotonic() + DEADLINE_S
    while pool._threads:
        assert time.monotonic() < deadline, "close() left an idle pool thread running"
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("test-retire")]


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
