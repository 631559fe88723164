"""``ag.Pool``: ``multiprocessing.Pool`` over the cluster.

Each call is cut into chunks (the standard library's default size: ``len / (4 * processes)``)
and each chunk is one task running ``fn`` over its items in a worker process: per-item cost is
a call in a loop there, which is where the throughput comes from. The chunks are sent and the
results filled by the pool's dispatcher thread (``dispatch.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, TypeVar

import trio

from .._node.records import NodeStatistics
from .chunks import APPLY, MAP, STARMAP
from .dispatch import CLOSE, RUN, TERMINATE, TERMINATE_WAIT_S, Dispatcher, PoolCall, Result, chunked
from .progress import open_progress
from .results import AsyncResult, IMapIterator

__all__ = ["Pool"]

T = TypeVar("T")
R = TypeVar("R")


def _not_in_trio(what: str, instead: str) -> None:
    if trio.lowlevel.in_trio_run():
        raise RuntimeError(
            f"Pool.{what}() blocks, and it was called from a thread running a Trio loop; "
            f"use {instead} there instead"
        )


class Pool(Dispatcher):
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
        super().__init__(processes, initializer, initargs, maxtasksperchild, allocate, options)

    def __repr__(self) -> str:
        return (
            f"<ag.Pool {self._state} processes={self.processes} "
            f"in_flight={len(self._inflight)} queued_calls={len(self._jobs)}>"
        )

    @property
    def processes(self) -> int:
        """Chunks this pool runs at once: ``processes``, or the cluster's capacity now."""
        return self._refresh_capacity(force=True)

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
            self._jobs.append(PoolCall(fn, mode, chunks, result, stream))
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
            self._submit(fn, mode, chunked(items, chunksize), result)
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
        self._submit(func, MAP, chunked(iterable, chunksize), result, stream=chunksize > 1)
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


def _desc(fn: Callable[..., Any]) -> str:
    return f"ag.Pool {getattr(fn, '__name__', 'map')}"
