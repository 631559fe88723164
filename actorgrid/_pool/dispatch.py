"""The dispatcher of an ``ag.Pool``: one thread that sends chunks and fills results.

One dispatcher thread per pool (the standard library has a task and a result handler thread)
keeps at most ``processes`` chunks in flight, sends the next chunk as one finishes, and fills
the results. It sleeps on a condition: a finished ref wakes it through a waiter on the ref's
entry (set on the runtime's loop), so nothing polls, except a re-read of the cluster's size
once a second while chunks wait for a free slot (``processes=None`` follows workers joining
and leaving).

Invariants: only the dispatcher thread reads input iterables and submits chunks; ``_inflight``
maps every submitted, unfinished chunk's ref to its result and index; a chunk's ref is in
``_inflight`` before its waiter can fire.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from .._exceptions import TaskCancelledError
from .._node.records import NodeStatistics
from .._runtime.api import cancel
from .._runtime.core import current_runtime
from .._runtime.envship import for_call
from .._runtime.generators import ObjectRefGenerator
from .._runtime.refs import ObjectRef
from .._runtime.remote import Options, RemoteFunction
from .allocate import Allocation, ChunkPinning
from .chunks import run_chunk, stream_chunk
from .results import AsyncResult, IMapIterator

__all__ = [
    "CAPACITY_REFRESH_S",
    "CLOSE",
    "RUN",
    "TERMINATE",
    "TERMINATE_WAIT_S",
    "Dispatcher",
    "PoolCall",
    "Result",
    "chunked",
]

RUN, CLOSE, TERMINATE = "running", "closed", "terminated"
CAPACITY_REFRESH_S = 1.0  # how stale the cluster's size may be when processes=None
TERMINATE_WAIT_S = 30.0  # bounds terminate(): cancelled chunks end within the grace period

_task: RemoteFunction[..., list[Any]] = RemoteFunction(run_chunk, Options())
# imap with chunksize > 1: a chunk streams each result as it is made (a remote generator).
_stream_task: RemoteFunction[..., Any] = RemoteFunction(stream_chunk, Options())

Result = AsyncResult[Any] | IMapIterator[Any]


class PoolCall:
    """One call's chunks, read lazily by the dispatcher."""

    __slots__ = ("chunks", "fn", "index", "mode", "result", "stream")

    def __init__(
        self,
        fn: Callable[..., Any],
        mode: int,
        chunks: Iterator[list[Any]],
        result: Result,
        stream: bool = False,
    ):
        self.fn = fn
        self.mode = mode
        self.chunks = chunks
        self.result = result
        self.index = 0
        self.stream = stream  # chunks are remote generators: results stream one by one


class _Done:
    """Waiter on a chunk's ref (or stream: news of it): queues it for the dispatcher (runs
    on the runtime's loop)."""

    __slots__ = ("pool", "ref")

    def __init__(self, pool: Dispatcher, ref: ObjectRef[Any] | ObjectRefGenerator[Any]) -> None:
        self.pool = pool
        self.ref = ref

    def set(self) -> None:
        with self.pool._cond:
            self.pool._finished.append(self.ref)
            self.pool._cond.notify()


def chunked(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(iterable)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class Dispatcher:
    """A pool's chunks in flight and its dispatcher thread (``ag.Pool`` is one)."""

    def __init__(
        self,
        processes: int | None,
        initializer: Callable[..., object] | None,
        initargs: Iterable[Any],
        maxtasksperchild: int | None,
        allocate: Callable[[NodeStatistics], int] | None,
        options: dict[str, Any],
    ) -> None:
        self._rt = current_runtime()
        self._task = _task.options(**options) if options else _task
        self._stream_task = _stream_task.options(**options) if options else _stream_task
        self._cpus = self._task._options.num_cpus
        self._processes = processes
        self._capacity = processes or 1
        self._capacity_at = -CAPACITY_REFRESH_S
        self._init = None if initializer is None else (initializer, tuple(initargs))
        self._pinning = None if allocate is None else ChunkPinning(Allocation(self._rt, allocate))
        self._maxtasks = maxtasksperchild
        self._id = uuid.uuid4().hex
        self._state = RUN
        self._cond = threading.Condition()
        self._jobs: deque[PoolCall] = deque()
        self._inflight: dict[ObjectRef[Any] | ObjectRefGenerator[Any], tuple[Result, int]] = {}
        self._finished: list[ObjectRef[Any] | ObjectRefGenerator[Any]] = []
        self._thread = threading.Thread(
            target=self._serve, name=f"actorgrid-pool-{self._id[:8]}", daemon=True
        )
        self._thread.start()

    def _refresh_capacity(self, force: bool = False) -> int:
        if self._processes is not None:
            return self._processes
        if self._pinning is not None:
            # The plan asks the head (only when the workers changed in number): never from
            # the loop's own thread, which that request needs.
            self._capacity = self._pinning.capacity(refresh=not self._rt.portal.in_loop_thread())
            return self._capacity
        now = time.monotonic()
        if force or now - self._capacity_at >= CAPACITY_REFRESH_S:
            placement = self._rt.placement
            suspended = placement.suspended
            options = self._task._options
            if options.runtime_env is not None:  # its env merged over the driver's, as calls
                options = attrs.evolve(options, runtime_env=for_call(self._rt, options.runtime_env))
            demand = options.demand(self._cpus or 0.0)  # num_gpus=, labels, ...
            env = demand.env or self._rt.env_key
            workers = [
                w
                for wid, w in list(placement.workers.items())
                if wid not in suspended and w.env == env and demand.fits(w)
            ]
            cpus = 1.0 if self._cpus is None else self._cpus
            # num_cpus=0 chunks take no CPU: one per worker still bounds them sensibly.
            capacity = sum(int(w.num_cpus // cpus) for w in workers) if cpus > 0 else len(workers)
            self._capacity = max(1, capacity)
            self._capacity_at = now
        return self._capacity

    # --- the dispatcher thread ---------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while self._step():
                pass
        except Exception:
            # Never expected; the error goes to every waiting result instead of hanging it.
            import logging

            logging.getLogger("actorgrid.pool").exception("ag.Pool dispatcher failed")
            self._fail_all(RuntimeError("the ag.Pool dispatcher failed; see the log"))

    def _step(self) -> bool:
        """Wait for something to do, do it; False when the pool is finished."""
        with self._cond:
            while True:
                if self._state == TERMINATE:
                    break
                if self._finished:
                    break
                if self._jobs and len(self._inflight) < self._refresh_capacity():
                    break
                if self._state == CLOSE and not self._jobs and not self._inflight:
                    return False
                self._cond.wait(CAPACITY_REFRESH_S if self._jobs else None)
            finished, self._finished = self._finished, []
            terminating = self._state == TERMINATE
        for ref in finished:
            self._deliver(ref)
        if terminating:
            self._drain_after_terminate()
            return False
        self._send_chunks()
        return True

    def _deliver(self, ref: ObjectRef[Any] | ObjectRefGenerator[Any]) -> None:
        if isinstance(ref, ObjectRefGenerator):
            self._deliver_stream(ref)
            return
        with self._cond:
            result, index = self._inflight.pop(ref)
        if self._pinning is not None:
            self._pinning.done(ref)
        try:
            value = ref._entry.value()
        except Exception as exc:
            result._set(index, False, exc)
        else:
            result._set(index, True, value)

    def _deliver_stream(self, gen: ObjectRefGenerator[Any]) -> None:
        """Hand what a streaming chunk produced so far to its result; at its end, the chunk
        is done. Re-arms the waiter when nothing is left to take yet."""
        with self._cond:
            entry = self._inflight.get(gen)
        if entry is None:
            return
        result, index = entry
        assert isinstance(result, IMapIterator)
        while True:
            try:
                item = gen._take_nowait()
            except StopIteration:
                with self._cond:
                    self._inflight.pop(gen, None)
                if self._pinning is not None:
                    self._pinning.done(gen)
                result._chunk_done(index)
                return
            if item is None:
                if gen._stream.wait_on(_Done(self, gen)):
                    return
                continue
            try:
                values = item._entry.value()  # a list: see chunks.stream_chunk
            except Exception as exc:
                result._add(index, False, exc)
            else:
                for value in values:
                    result._add(index, True, value)

    def _send_chunks(self) -> None:
        while True:
            with self._cond:
                if not self._jobs or len(self._inflight) >= self._refresh_capacity():
                    return
                if self._state == TERMINATE:
                    return
                job = self._jobs[0]
            if job.result.failed:  # a failed map gets no more chunks: its result is final
                chunk = None
            else:
                try:
                    chunk = next(job.chunks, None)
                except Exception as exc:  # the caller's iterable raised: that is its result
                    job.result._set(job.index, False, exc)
                    job.index += 1
                    chunk = None
            if chunk is None:
                if isinstance(job.result, IMapIterator):
                    job.result._set_length(job.index)
                with self._cond:
                    self._jobs.popleft()
                continue
            task = self._stream_task if job.stream else self._task
            node = None
            if self._pinning is not None:
                node = self._pinning.free_node()
                if node is None:
                    return  # every allowed node is full (its plan shrank meanwhile)
                task = self._pinning.pinned(task, job.stream, node)
            try:
                ref: ObjectRef[Any] | ObjectRefGenerator[Any] = task.remote(
                    self._id, self._init, self._maxtasks, job.fn, job.mode, chunk
                )
            except Exception as exc:  # e.g. fn or an item does not pickle: the call's error
                job.result._set(job.index, False, exc)
                job.index += 1
                if isinstance(job.result, IMapIterator):
                    job.result._set_length(job.index)
                with self._cond:
                    self._jobs.popleft()
                continue
            with self._cond:
                self._inflight[ref] = (job.result, job.index)
            if self._pinning is not None and node is not None:
                self._pinning.started(ref, node)
            job.index += 1
            if isinstance(ref, ObjectRefGenerator):
                if not ref._stream.wait_on(_Done(self, ref)):
                    _Done(self, ref).set()
            elif not ref._entry.add_waiter(_Done(self, ref)):
                _Done(self, ref).set()

    def _drain_after_terminate(self) -> None:
        cancelled = TaskCancelledError("the ag.Pool was terminated before this result was ready")
        with self._cond:
            jobs, self._jobs = list(self._jobs), deque()
            running = list(self._inflight)
        # Only this thread submits, so every chunk sent is in _inflight by now.
        for ref in running:
            cancel(ref)
        for job in jobs:
            job.result._set(job.index, False, cancelled)
            if isinstance(job.result, IMapIterator):
                job.result._set_length(job.index + 1)
        # Deliver the cancelled chunks as they end.
        deadline = time.monotonic() + TERMINATE_WAIT_S
        while True:
            with self._cond:
                if not self._inflight or time.monotonic() > deadline:
                    left = list(self._inflight.values())
                    self._inflight.clear()
                    break
                if not self._finished:
                    self._cond.wait(max(0.0, deadline - time.monotonic()))
                finished, self._finished = self._finished, []
            for ref in finished:
                self._deliver(ref)
        for result, index in left:
            result._set(index, False, cancelled)

    def _fail_all(self, error: BaseException) -> None:
        with self._cond:
            self._state = TERMINATE
            results = [job.result for job in self._jobs] + [r for r, _ in self._inflight.values()]
            self._jobs.clear()
            self._inflight.clear()
        for result in results:
            result._set(0, False, error)
