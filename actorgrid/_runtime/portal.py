"""Crossing between the runtime's Trio loop and other threads, cheaply.

:class:`Portal` carries calls from any thread into the loop in FIFO order. A burst of calls
costs one wake-up of the loop, not one per call, which is what lets a script's tight loop of
``.remote()`` calls become a few large writes.

:class:`ThreadPool` runs blocking user code off the loop, so the loop keeps answering messages
while user code computes. Threads are started on demand and retire after idling. A job the
loop submits inside a ``batch()`` (a frame's handling, a portal drain) goes to its thread when
the batch ends, after its writes, as the loop is about to wait for more, not at once: a thread
woken while the loop still runs can only wait for the GIL, and is woken a second time when the
loop lets go of it (two context switches and a preempted loop: the largest part of a sync
actor call on a small machine, where switches are dear). The one idle thread that leads waits
on an eventfd, and the write that wakes it lets go of the GIL, so it runs at once.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import select
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import outcome
import trio

from .._exceptions import NotInitializedError
from .peer import after_batch, batch

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
        # Jobs the loop submitted in the batch() it runs (loop thread only), handed to their
        # threads when it ends.
        self._deferred: list[_Job] = []
        # The leader: the one idle thread that waits on an eventfd rather than in the queue,
        # so that the loop's wake (a write, made with the GIL let go) is its only wake-up.
        self._lead_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._lead_fd, select.POLLIN)
        self._leader = False  # a thread is the leader (waiting, or just woken)
        self._leading = False  # the leader waits for a job: _submit_now hands it one
        self._lead_job: _Job | None = None
        self._fd_closed = False

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
        # From the loop, in a batch: after it (a hand-over is registered while jobs wait).
        if threading.get_ident() == self._portal.loop_thread and (
            self._deferred or after_batch(self._hand_over)
        ):
            self._deferred.append(job)
            return
        self._submit_now(job)

    def _hand_over(self) -> None:
        """Loop: wake threads for the jobs it queued since it last waited, in order."""
        jobs, self._deferred = self._deferred, []
        for job in jobs:
            self._submit_now(job)

    def _submit_now(self, job: _Job) -> None:
        with self._lock:
            if self._leading:
                # The leader waits on the eventfd: the write wakes it with the GIL let go.
                self._leading = False
                self._lead_job = job
                lead = True
            elif self._idle:
                self._idle -= 1
                lead = False
            else:  # a new thread, with this job as its first
                self._threads += 1
                threading.Thread(
                    target=self._thread_main,
                    args=(job,),
                    name=f"{self._name}-{self._threads}",
                    daemon=True,
                ).start()
                return
        if lead:
            os.eventfd_write(self._lead_fd, 1)
        else:
            self._jobs.put(job)

    def _thread_main(self, job: _Job | None) -> None:
        while True:
            if job is None:
                job = self._next_job()
                if job is None:
                    return
            result = outcome.capture(job.fn, *job.args)
            del job.fn, job.args
            done, job = job.done, None
            if done is not None:
                try:
                    self._portal.call_soon(done, result)
                except NotInitializedError:
                    self._retire()
                    return
            elif isinstance(result, outcome.Error):
                _log.error("a pool job failed", exc_info=result.error)

    def _next_job(self) -> _Job | None:
        """Wait for a job: as the leader (on the eventfd) if none leads, else in the queue."""
        with self._lock:
            if self._closed:
                self._threads -= 1
                if not self._leader:
                    self._close_fd()  # (a leader that took a job as the pool closed)
                return None
            lead = not self._leader
            if lead:
                # Reset under the lock, before it leads: a write from then on is for it.
                # (No write for an earlier leader can be pending: a leader is one until its
                # poll returns, which takes that write, or a 30 s timeout.)
                self._reset_lead_fd()
                self._leading = self._leader = True
            else:
                self._idle += 1
        if lead:
            return self._lead()
        while True:
            try:
                return self._jobs.get(timeout=_THREAD_IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._idle == 0:
                        continue  # a job was promised to an idle thread; stay for it
                    self._idle -= 1
                    self._threads -= 1
                return None

    def _lead(self) -> _Job | None:
        """The leader's wait. The eventfd was reset before it began to lead, not after the
        wake: a read then would let go of the GIL right when the loop, back from its write,
        wants it. A write left over (a wake that came after a timeout found its job) only
        makes a wait return at once, and it resets and waits again."""
        while True:
            woken = self._poller.poll(_THREAD_IDLE_S * 1000)
            with self._lock:
                job, self._lead_job = self._lead_job, None
                if job is None and woken and self._leading and not self._closed:
                    self._reset_lead_fd()
                    continue  # a wake left over: wait again
                self._leader = self._leading = False
                if job is None:  # idle for _THREAD_IDLE_S, or closed: retire
                    self._threads -= 1
                    if self._closed:
                        self._close_fd()  # (close() left it to the leader)
            return job

    def _close_fd(self) -> None:
        # Lock held.
        if not self._fd_closed:
            self._fd_closed = True
            os.close(self._lead_fd)

    def _reset_lead_fd(self) -> None:
        try:
            os.eventfd_read(self._lead_fd)
        except BlockingIOError:
            pass

    def _retire(self) -> None:
        with self._lock:
            self._threads -= 1

    def close(self) -> None:
        if self._deferred:
            self._hand_over()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            n = self._threads
            self._leading = False
            if self._leader:
                os.eventfd_write(self._lead_fd, 1)  # it wakes, retires and closes the fd
            else:
                self._close_fd()
        for _ in range(n):
            self._jobs.put(None)
