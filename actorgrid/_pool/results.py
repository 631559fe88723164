"""What ``ag.Pool`` calls return: ``AsyncResult`` (apply, map, starmap) and ``IMapIterator``.

The pool's dispatcher thread fills them; any thread reads them. One ``threading.Condition``
guards each; Trio tasks wait on the same state through an event their own loop sets (the
setter only schedules ``event.set`` with the loop's token, so it never blocks on a loop).
Callbacks run in the dispatcher thread before waiters wake, as in ``multiprocessing.Pool``:
they should return quickly.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import threading
from collections import deque
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

import trio

from .progress import Progress

__all__ = ["AsyncResult", "IMapIterator"]

T = TypeVar("T")
log = logging.getLogger("actorgrid.pool")


class _Signal:
    """A condition that threads and Trio tasks can both wait on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._trio: list[tuple[trio.lowlevel.TrioToken, trio.Event]] = []

    def notify_all(self) -> None:
        """Wake every waiter; the caller holds ``cond``."""
        self.cond.notify_all()
        waiters, self._trio = self._trio, []
        for token, event in waiters:
            try:
                token.run_sync_soon(event.set)
            except trio.RunFinishedError:
                pass  # that loop is gone, and its waiter with it

    def wait(self, done: Callable[[], bool], timeout: float | None) -> bool:
        with self.cond:
            return self.cond.wait_for(done, timeout)

    async def wait_async(self, done: Callable[[], bool], timeout: float | None) -> bool:
        with trio.move_on_after(math.inf if timeout is None else timeout):
            while True:
                with self.cond:
                    if done():
                        return True
                    event = trio.Event()
                    self._trio.append((trio.lowlevel.current_trio_token(), event))
                await event.wait()
        with self.cond:
            return done()


def _timeout_error(what: str, timeout: float | None) -> multiprocessing.TimeoutError:
    return multiprocessing.TimeoutError(
        f"{what} was not ready after {timeout} s; wait longer, or check the pool is not "
        "starved (terminated, or fewer workers than expected: Pool.processes says how many)"
    )


def _run_callback(callback: Callable[[Any], object] | None, value: Any) -> None:
    if callback is None:
        return
    try:
        callback(value)
    except Exception:
        log.exception("an ag.Pool callback raised; the result is still delivered")


class AsyncResult(Generic[T]):
    """The result of ``apply_async``, ``map_async`` or ``starmap_async``.

    As ``multiprocessing.pool.AsyncResult``: ``get(timeout)``, ``wait(timeout)``, ``ready()``,
    ``successful()``. In Trio code, ``await result`` (or ``await result.get_async(timeout)``).
    Created by the pool only.
    """

    def __init__(
        self,
        chunks: int,
        *,
        single: bool,
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        progress: Progress | None = None,
    ) -> None:
        self._signal = _Signal()
        self._progress = progress
        self._chunks: list[list[Any] | None] = [None] * chunks
        self._left = chunks
        self._single = single
        self._callback = callback
        self._error_callback = error_callback
        self._done = False
        self._ok = False
        self._value: Any = None
        if chunks == 0:
            self._finish(True, [])

    def __repr__(self) -> str:
        state = "pending" if not self._done else ("ok" if self._ok else "failed")
        return f"<ag.Pool AsyncResult {state}, {self._left} of {len(self._chunks)} chunks left>"

    @property
    def failed(self) -> bool:
        """True once an error is set (the pool stops sending this result's chunks)."""
        return self._done and not self._ok

    def _set(self, index: int, ok: bool, value: Any) -> None:
        """Dispatcher thread: chunk ``index`` finished with ``value`` (a list, or an error)."""
        with self._signal.cond:
            if self._done:
                return
            if ok:
                self._chunks[index] = value
                self._left -= 1
                if self._progress is not None:
                    self._progress.update(len(value) if not self._single else 1)
                if self._left:
                    return
                chunks = self._chunks
                value = (
                    (chunks[0] or [None])[0]
                    if self._single
                    else [x for c in chunks for x in c or ()]
                )
        self._finish(ok, value)

    def _finish(self, ok: bool, value: Any) -> None:
        if self._progress is not None:
            self._progress.close()
        _run_callback(self._callback if ok else self._error_callback, value)
        with self._signal.cond:
            self._ok, self._value, self._done = ok, value, True
            self._chunks = []
            self._signal.notify_all()

    def ready(self) -> bool:
        return self._done

    def successful(self) -> bool:
        if not self._done:
            raise ValueError(f"{self!r} not ready")
        return self._ok

    def wait(self, timeout: float | None = None) -> None:
        self._signal.wait(self.ready, timeout)

    def get(self, timeout: float | None = None) -> T:
        if not self._signal.wait(self.ready, timeout):
            raise _timeout_error("the result", timeout)
        return self._outcome()

    async def wait_async(self, timeout: float | None = None) -> None:
        await self._signal.wait_async(self.ready, timeout)

    async def get_async(self, timeout: float | None = None) -> T:
        if not await self._signal.wait_async(self.ready, timeout):
            raise _timeout_error("the result", timeout)
        return self._outcome()

    def __await__(self) -> Generator[Any, None, T]:
        return self.get_async().__await__()

    def _outcome(self) -> T:
        if self._ok:
            return self._value  # type: ignore[no-any-return]
        raise self._value


_END = object()


class IMapIterator(Generic[T]):
    """The iterator ``imap`` and ``imap_unordered`` return: ``next(timeout)``, ``for``, and
    ``async for`` in Trio code. Ordered (``imap``) yields in input order, unordered in the
    order chunks finish. A failed chunk raises its error where its items would be; with
    ``chunksize`` > 1 the iteration then ends, as in ``multiprocessing.Pool``.
    Created by the pool only."""

    def __init__(self, *, ordered: bool, chunked: bool, progress: Progress | None = None) -> None:
        self._signal = _Signal()
        self._ordered = ordered
        self._chunked = chunked
        self._progress = progress
        self._ready: deque[tuple[bool, Any]] = deque()
        # Ordered: items of chunks ahead of their turn, and chunks ahead of it that are done.
        self._partial: dict[int, list[tuple[bool, Any]]] = {}
        self._complete: set[int] = set()
        self._next_chunk = 0
        self._chunks_seen = 0
        self._total: int | None = None  # chunks, once the input is exhausted
        self._ended = False

    def __repr__(self) -> str:
        total = "?" if self._total is None else self._total
        return f"<ag.Pool IMapIterator {self._chunks_seen} of {total} chunks done>"

    @property
    def failed(self) -> bool:
        return False  # every chunk runs: a failure is one item of the iteration

    def _set(self, index: int, ok: bool, value: Any) -> None:
        """Dispatcher thread: chunk ``index`` finished at once: its results, or its error."""
        with self._signal.cond:
            for item in value if ok else (value,):
                self._add_locked(index, ok, item)
            self._done_locked(index)
            self._signal.notify_all()

    def _add(self, index: int, ok: bool, value: Any) -> None:
        """Dispatcher thread: one result (or the error) of chunk ``index``, as it streams."""
        with self._signal.cond:
            self._add_locked(index, ok, value)
            self._signal.notify_all()

    def _chunk_done(self, index: int) -> None:
        """Dispatcher thread: chunk ``index`` streamed its last result."""
        with self._signal.cond:
            self._done_locked(index)
            self._signal.notify_all()

    def _add_locked(self, index: int, ok: bool, value: Any) -> None:
        if self._progress is not None:
            self._progress.update(1)
        if not self._ordered or index == self._next_chunk:
            self._push(ok, value)
        else:
            self._partial.setdefault(index, []).append((ok, value))

    def _done_locked(self, index: int) -> None:
        self._chunks_seen += 1
        if self._ordered:
            self._complete.add(index)
            while self._next_chunk in self._complete:
                self._complete.discard(self._next_chunk)
                self._next_chunk += 1
                for ok, value in self._partial.pop(self._next_chunk, ()):
                    self._push(ok, value)
        self._check_progress_done()

    def _push(self, ok: bool, value: Any) -> None:
        if ok:
            self._ready.append((True, value))
        else:
            self._ready.append((False, value))
            if self._chunked:
                self._ready.append((True, _END))

    def _check_progress_done(self) -> None:
        if self._progress is not None and self._chunks_seen == self._total:
            self._progress.close()

    def _set_length(self, chunks: int) -> None:
        with self._signal.cond:
            self._total = chunks
            self._check_progress_done()
            self._signal.notify_all()

    def _has_next(self) -> bool:
        return bool(self._ready) or self._ended or self._chunks_seen == self._total

    def _take(self) -> T:
        if not self._ready or self._ended:
            self._ended = True
            raise StopIteration
        ok, value = self._ready.popleft()
        if value is _END:
            self._ended = True
            raise StopIteration
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def __iter__(self) -> IMapIterator[T]:
        return self

    def next(self, timeout: float | None = None) -> T:
        if not self._signal.wait(self._has_next, timeout):
            raise _timeout_error("the next result", timeout)
        with self._signal.cond:
            return self._take()

    __next__ = next

    def __aiter__(self) -> IMapIterator[T]:
        return self

    async def next_async(self, timeout: float | None = None) -> T:
        """The next result for Trio code; StopAsyncIteration at the end."""
        if not await self._signal.wait_async(self._has_next, timeout):
            raise _timeout_error("the next result", timeout)
        with self._signal.cond:
            try:
                return self._take()
            except StopIteration:
                raise StopAsyncIteration from None

    async def __anext__(self) -> T:
        return await self.next_async()
