"""``ag.Pool``: ``multiprocessing.Pool`` over the cluster.

Each call is cut into chunks (the standard library's default size: ``len / (4 * processes)``)
and each chunk is one task running ``fn`` over its items in a worker process: per-item cost is
a call in a loop there, which is where the throughput comes from.

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
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, TypeVar

import trio

from .._exceptions import TaskCancelledError
from .._node.records import NodeStatistics
from .._runtime.api import cancel
from .._runtime.core import current_runtime
from .._runtime.generators import ObjectRefGenerator
from .._runtime.refs import ObjectRef
from .._runtime.remote import Options, RemoteFunction
from .allocate import Allocation, ChunkPinning
from .chunks import APPLY, MAP, STARMAP, run_chunk, stream_chunk
from .progress import open_progress
from .results import AsyncResult, IMapIterator

__all__ = ["Pool"]

T = TypeVar("T")
R = TypeVar("R")

RUN, CLOSE, TERMINATE = "running", "closed", "terminated"
CAPACITY_REFRESH_S = 1.0  # how stale the cluster's size may be when processes=None
TERMINATE_WAIT_S = 30.0  # bounds terminate(): cancelled chunks end within the grace period

_task: RemoteFunction[..., list[Any]] = RemoteFunction(run_chunk, Options())
# imap with chunksize > 1: a chunk streams each result as it is made (a remote generator).
_stream_task: RemoteFunction[..., Any] = RemoteFunction(stream_chunk, Options())

Result = AsyncResult[Any] | IMapIterator[Any]


class _Job:
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

    def __init__(self, pool: Pool, ref: ObjectRef[Any] | ObjectRefGenerator[Any]) -> None:
        self.pool = pool
        self.ref = ref

    def set(self) -> None:
        with self.pool._cond:
            self.pool._finished.append(self.ref)
            self.pool._cond.notify()


def _chunked(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(iterable)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _not_in_trio(what: str, instead: str) -> None:
    if trio.lowlevel.in_trio_run():
        raise RuntimeError(
            f"Pool.{what}() blocks, and it was called from a thread running a Trio loop; "
            f"use {instead} there instead"
        )


class Pool:
    """``multiprocessing.Pool`` over the cluster: swap the class, keep the program.

    - ``processes``: chunks in flight at once; None follows the cluster's capacity for
      ``options`` (alive workers' CPUs over ``num_cpus``, default 1 each).
    - ``initializer(*initargs)`` runs in each worker process before the pool's first item
      there.
    - ``maxtasksperchild``: a worker process is the cluster's, shared with other work, so it
      is not replaced; instead each process re-runs the initializer after every
      ``maxtasksperchild`` chunks of this pool, as a fresh child would. State the initializer
      sets up is renewed; memory leaked elsewhere in the process is not reclaimed.
    - ``options``: task options for every chunk (``num_cpus``, ``max_retries``, ...).
    - ``allocate``: a dispycos-style allocation filter instead of ``processes``: a function
      given each node's record (``ag.NodeStatistics``) that returns how many chunks may run
      on that node at once (0: none); each chunk is pinned to a node with room. Nodes that
      join are asked too (when this process sees the number of workers change).

    Results are ``multiprocessing``'s: errors raised by ``fn`` arrive as their own type (also
    an ``ag.RemoteError`` carrying the remote traceback); timeouts raise
    ``multiprocessing.TimeoutError``. Leaving a ``with`` block terminates, as there.

    Trio code: ``await pool.map_async(f, xs)``, ``await pool.apply_async(f, args)``,
    ``async for x in pool.imap_unordered(f, xs)``, ``async with ag.Pool() as pool``; those
    never block the loop.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        allocate: Callable[[NodeStatistics], int] | None = None,
        **options: Any,
    ) -> None:
        if allocate is not None and processes is not None:
            raise ValueError(
                "pass processes= or allocate=, not both: allocate decides how many chunks "
                "run at once (the sum of what it gives each node)"
            )
        if processes is not None and (not isinstance(processes, int) or processes < 1):
            raise ValueError(
                f"processes must be at least 1 (or None: the cluster's), not {processes!r}"
            )
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild < 1
        ):
            raise ValueError(
                f"maxtasksperchild must be a positive int or None, not {maxtasksperchild!r}"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
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
        self._jobs: deque[_Job] = deque()
        self._inflight: dict[ObjectRef[Any] | ObjectRefGenerator[Any], tuple[Result, int]] = {}
        self._finished: list[ObjectRef[Any] | ObjectRefGenerator[Any]] = []
        self._thread = threading.Thread(
            target=self._serve, name=f"actorgrid-pool-{self._id[:8]}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return (
            f"<ag.Pool {self._state} processes={self.processes} "
            f"in_flight={len(self._inflight)} queued_calls={len(self._jobs)}>"
        )

    @property
    def processes(self) -> int:
        """Chunks this pool runs at once: ``processes``, or the cluster's capacity now."""
        return self._refresh_capacity(force=True)

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
            demand = self._task._options.demand(self._cpus or 0.0)  # num_gpus=, labels, ...
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

    # --- submitting --------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError(f"Pool not running (it is {self._state})")

    def _submit(
        self,
        fn: Callable[..., Any],
        mode: int,
        chunks: Iterator[list[Any]],
        result: Result,
        stream: bool = False,
    ) -> None:
        with self._cond:
            self._check_running()
            self._jobs.append(_Job(fn, mode, chunks, result, stream))
            self._cond.notify()

    def _map_result(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        mode: int,
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        progress: bool | None = None,
    ) -> AsyncResult[list[Any]]:
        self._check_running()
        items = iterable if isinstance(iterable, (list, tuple)) else list(iterable)
        if chunksize is None:
            chunksize, extra = divmod(len(items), max(1, self.processes) * 4)
            if extra:
                chunksize += 1
        if chunksize < 1 and items:
            raise ValueError(f"chunksize must be at least 1, not {chunksize!r}")
        chunks = -(-len(items) // chunksize) if items else 0
        bar = open_progress(progress, len(items), _desc(fn)) if chunks else None
        result: AsyncResult[list[Any]] = AsyncResult(
            chunks, single=False, callback=callback, error_callback=error_callback, progress=bar
        )
        if chunks:
            self._submit(fn, mode, _chunked(items, chunksize), result)
        return result

    def apply_async(
        self,
        func: Callable[..., R],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[R]:
        self._check_running()
        result: AsyncResult[R] = AsyncResult(
            1, single=True, callback=callback, error_callback=error_callback
        )
        self._submit(func, APPLY, iter([[(tuple(args), dict(kwds or {}))]]), result)
        return result

    def apply(
        self, func: Callable[..., R], args: Iterable[Any] = (), kwds: dict[str, Any] | None = None
    ) -> R:
        _not_in_trio("apply", "`await pool.apply_async(...)`")
        return self.apply_async(func, args, kwds).get()

    def map_async(
        self,
        func: Callable[[Any], R],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        progress: bool | None = None,
    ) -> AsyncResult[list[R]]:
        """``progress``: draw a progress bar on stderr (None: only when it is a terminal)."""
        return self._map_result(func, iterable, chunksize, MAP, callback, error_callback, progress)

    def map(
        self,
        func: Callable[[Any], R],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: bool | None = None,
    ) -> list[R]:
        """``progress``: draw a progress bar on stderr (None: only when it is a terminal)."""
        _not_in_trio("map", "`await pool.map_async(...)`")
        return self.map_async(func, iterable, chunksize, progress=progress).get()

    def starmap_async(
        self,
        func: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        progress: bool | None = None,
    ) -> AsyncResult[list[R]]:
        return self._map_result(
            func, iterable, chunksize, STARMAP, callback, error_callback, progress
        )

    def starmap(
        self,
        func: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        progress: bool | None = None,
    ) -> list[R]:
        _not_in_trio("starmap", "`await pool.starmap_async(...)`")
        return self.starmap_async(func, iterable, chunksize, progress=progress).get()

    def _imap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int,
        ordered: bool,
        progress: bool | None,
    ) -> IMapIterator[Any]:
        self._check_running()
        if chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, not {chunksize!r}")
        total = len(iterable) if isinstance(iterable, Sized) else None
        bar = open_progress(progress, total, _desc(func))
        result: IMapIterator[Any] = IMapIterator(
            ordered=ordered, chunked=chunksize > 1, progress=bar
        )
        # A chunk of one item is one task already; longer chunks stream their results.
        self._submit(func, MAP, _chunked(iterable, chunksize), result, stream=chunksize > 1)
        return result

    def imap(
        self,
        func: Callable[[Any], R],
        iterable: Iterable[Any],
        chunksize: int = 1,
        *,
        progress: bool | None = None,
    ) -> IMapIterator[R]:
        """Results in input order, each as soon as it is computed (chunks stream theirs);
        the input is read as chunks are sent. ``progress``: as for ``map``."""
        return self._imap(func, iterable, chunksize, True, progress)

    def imap_unordered(
        self,
        func: Callable[[Any], R],
        iterable: Iterable[Any],
        chunksize: int = 1,
        *,
        progress: bool | None = None,
    ) -> IMapIterator[R]:
        """Results in the order they are computed. ``progress``: as for ``map``."""
        return self._imap(func, iterable, chunksize, False, progress)

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Accept no more work; what was submitted still runs. Then ``join()``."""
        with self._cond:
            if self._state == RUN:
                self._state = CLOSE
            self._cond.notify()

    def terminate(self) -> None:
        """Stop now: chunks not started never run, running ones are cancelled (their code
        gets KeyboardInterrupt; past the cluster's grace period its worker is killed), and
        unfinished results fail with TaskCancelledError. Returns once none of them runs,
        except in a Trio thread, where it only starts that (``async with`` waits for it)."""
        with self._cond:
            self._state = TERMINATE
            self._cond.notify()
        if threading.current_thread() is self._thread or trio.lowlevel.in_trio_run():
            return  # a callback, or the loop the cancellations need: do not wait here
        self._thread.join(TERMINATE_WAIT_S)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the dispatcher to finish: after ``close()``, all work done."""
        if self._state == RUN:
            raise ValueError("Pool is still running: call close() or terminate() first")
        _not_in_trio("join", "`await pool.join_async()`")
        self._thread.join(timeout)

    async def join_async(self) -> None:
        if self._state == RUN:
            raise ValueError("Pool is still running: call close() or terminate() first")
        await trio.to_thread.run_sync(self._thread.join, abandon_on_cancel=True)

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    async def __aenter__(self) -> Pool:
        self._check_running()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.terminate)

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


def _desc(fn: Callable[..., Any]) -> str:
    return f"ag.Pool {getattr(fn, '__name__', 'map')}"
