"""Crossing between the runtime's Trio loop and other threads, cheaply.

:class:`Portal` carries calls from any thread into the loop in FIFO order. A burst of calls
costs one wake-up of the loop, not one per call, which is what lets a script's tight loop of
``.remote()`` calls become a few large writes.

:class:`ThreadPool` runs blocking user code off the loop, so the loop keeps answering messages
while user code computes. Threads are started on demand and retire after idling.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import outcome
import trio

from .._exceptions import NotInitializedError
from .peer import batch

__all__ = ["Portal", "ThreadPool"]

_THREAD_IDLE_S = 30.0
# Calls run per turn of the loop (see Portal._drain): 256 .remote() calls are ~25 ms.
DRAIN_MAX = 256
_log = logging.getLogger("actorgrid.portal")


class Portal:
    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self.token = token
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._scheduled = False
        self.draining = False
        self.loop_thread = threading.get_ident()

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self.loop_thread

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop soon; calls from one thread run in the order made."""
        self._calls.append((fn, args))
        if not self._scheduled:
            self._scheduled = True
            try:
                self.token.run_sync_soon(self._drain)
            except trio.RunFinishedError:
                raise NotInitializedError(
                    "the actorgrid runtime has shut down; call ag.init() again"
                ) from None

    def _drain(self) -> None:
        # Cleared before draining: a call appended from now on schedules another drain.
        self._scheduled = False
        calls = self._calls
        self.draining = True
        try:
            with batch():  # every message the calls send goes out in one write per peer
                # At most those queued now: a thread that keeps queuing (100,000 .remote()
                # calls in a row) must not hold the loop in one drain, its I/O undone.
                for _ in range(min(len(calls), DRAIN_MAX)):
                    fn, args = calls.popleft()
                    fn(*args)
        finally:
            self.draining = False
            if calls and not self._scheduled:
                self._scheduled = True
                self.token.run_sync_soon(self._drain)

    def idle(self) -> bool:
        """Any thread: no call is queued or being run, so a direct send cannot overtake one."""
        return not self._calls and not self.draining

    def run(self, afn: Callable[..., Any], *args: Any) -> Any:
        """Run an async function on the loop from another thread and wait for its result.

        It starts after every call this thread queued before with ``call_soon``: it joins the
        same queue (``trio.from_thread.run`` would not, and overtook queued calls whenever more
        than one drain's worth were waiting: a ``.remote()`` then ``ag.ask`` to the same actor
        could arrive in the wrong order).
        """
        if self.in_loop_thread():
            raise RuntimeError(
                f"this call ({getattr(afn, '__qualname__', afn)}) blocks until the actorgrid "
                "loop runs it, and it was made on that loop's own thread, where it would wait "
                "forever (from an @ag.method(inline=True) method or other code on the loop?); "
                "use its async form (`await ag.<name>_async(...)`) there, or drop inline=True"
            )
        results: queue.SimpleQueue[outcome.Outcome[Any]] = queue.SimpleQueue()
        self.call_soon(_start_system_task, afn, args, contextvars.copy_context(), results)
        result = results.get()
        if isinstance(result, outcome.Error) and isinstance(result.error, trio.RunFinishedError):
            raise NotInitializedError(
                "the actorgrid runtime has shut down; call ag.init() again"
            ) from None
        return result.unwrap()


def _start_system_task(
    afn: Callable[..., Any],
    args: tuple[Any, ...],
    context: contextvars.Context,
    results: queue.SimpleQueue[outcome.Outcome[Any]],
) -> None:
    """Loop: run ``afn(*args)`` as a system task (what ``trio.from_thread.run`` does with a
    token), its outcome put in ``results``; a loop that is ending answers RunFinishedError."""

    @trio.lowlevel.disable_ki_protection
    async def unprotected() -> Any:  # as trio's from_thread.run runs it: KI may land in it
        return await afn(*args)

    async def run_it() -> None:
        # The outcome, Cancelled included, goes to the waiting thread, which raises it: the
        # task ends right after, as trio's own from_thread.run does.
        results.put(await outcome.acapture(unprotected))

    try:
        trio.lowlevel.spawn_system_task(run_it, name=afn, context=context)
    except RuntimeError:  # the system nursery is closed: the run is ending
        results.put(outcome.Error(trio.RunFinishedError("the loop is shutting down")))


class _Job:
    __slots__ = ("abandoned", "args", "done", "fn")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        done: Callable[[outcome.Outcome[Any]], None] | None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.done = done
        self.abandoned = False


class ThreadPool:
    """Blocking calls on worker threads; results come back through the portal."""

    def __init__(self, portal: Portal, name: str = "actorgrid-user") -> None:
        self._portal = portal
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0
        self._closed = False

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on a pool thread. If the caller is cancelled, the thread's work
        is abandoned: it finishes in the background and its result is dropped."""
        task = trio.lowlevel.current_task()
        job: _Job

        def done(result: outcome.Outcome[Any]) -> None:
            if not job.abandoned:
                trio.lowlevel.reschedule(task, result)

        job = _Job(fn, args, done)
        self.submit(job)

        def abort(_: Any) -> trio.lowlevel.Abort:
            job.abandoned = True
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def start(self, fn: Callable[..., Any], *args: Any) -> None:
        """Any thread: run ``fn(*args)`` on a pool thread; nobody waits for it.

        ``fn`` must report its own outcome (through the portal) and never raise.
        """
        self.submit(_Job(fn, args, None))

    def submit(self, job: _Job) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self._threads += 1
                threading.Thread(
                    target=self._thread_main, name=f"{self._name}-{self._threads}", daemon=True
                ).start()
        self._jobs.put(job)

    def _thread_main(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=_THREAD_IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._idle == 0:
                        continue  # a job was promised to an idle thread; stay for it
                    self._idle -= 1
                    self._threads -= 1
                return
            if job is None:
                return
            result = outcome.capture(job.fn, *job.args)
            del job.fn, job.args
            with self._lock:
                self._idle += 1
            if job.done is None:
                if isinstance(result, outcome.Error):
                    _log.error("a pool job failed", exc_info=result.error)
                continue
            try:
                self._portal.call_soon(job.done, result)
            except NotInitializedError:
                return

    def close(self) -> None:
        with self._lock:
            self._closed = True
            n = self._threads
        for _ in range(n):
            self._jobs.put(None)
