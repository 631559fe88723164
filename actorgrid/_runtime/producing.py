"""Remote generators, the worker's side: running a generator as a stream of StreamItems.

The executor runs a generator function or method through a wrapper (``WorkerStreams.adapt``)
that takes the call's StreamMarker out of its keyword arguments, calls user code, and drives
the generator it returns: each value is serialized and sent to the caller on the call's link
as soon as it is yielded, and the generator is resumed only while the window allows
(``_scheduler/streams.py``: ProducerWindow); StreamAcks from the consumer open it again. The
wrapper's return value, the item count, is the call's result, sent after every item.

- Sync generators run on the pool thread that runs the call, holding its CPUs; they wait for
  room on a condition, in slices (``_WAIT_SLICE_S``), since ``ag.cancel`` interrupts them
  with an exception that lands only when Python code runs, and lend their CPUs meanwhile
  (``blocking_section``): a consumer that is a task on the same worker gets to run, as it
  lends its own while it waits for an item. Async generators run on the loop.
- A consumer whose link closes (it exited or dropped the generator) ends the producer
  (``ConsumerGoneError``): a producer never waits forever for an ack that cannot come.
- Ordering: items made on a pool thread wait in the producer's outbox (a deque: appending is
  one C call, so the KeyboardInterrupt of a cancel, which lands between bytecodes, cannot
  leave it half done, as it could the Portal's bookkeeping) until the loop moves them onto
  the link, in order; before the wrapper returns, it waits for the loop to have done so, so
  the result (which a pool thread may write straight to the socket) never overtakes an item.
"""

from __future__ import annotations

import inspect
import threading
from collections import deque
from collections.abc import Callable
from types import MethodType
from typing import Any, Protocol

import trio

from .._exceptions import ActorgridError, SerializationError
from .._protocol.ids import ObjectId
from .._protocol.messages import StreamAck, StreamItem
from .._scheduler.streams import ProducerWindow
from .blocking import blocking_section
from .generators import STREAM_KWARG, StreamMarker
from .serialization import dumps

__all__ = ["ConsumerGoneError", "WorkerStreams"]

# How long a sync producer waiting for room sleeps between checks for an interrupt or a
# closed link (an ack wakes it at once).
_WAIT_SLICE_S = 0.1
# The same for an async producer (cancellation reaches it at once; this is for the link).
_ASYNC_WAIT_SLICE_S = 1.0

_PLAIN, _SYNC_GEN, _ASYNC_GEN = 0, 1, 2


def _kind(fn: Any) -> int:
    if inspect.isasyncgenfunction(fn):
        return _ASYNC_GEN
    if inspect.isgeneratorfunction(fn):
        return _SYNC_GEN
    return _PLAIN


class ConsumerGoneError(ActorgridError):
    """The consumer of a remote generator went away: its producer stops."""


class _Link(Protocol):
    """The link a call came on (a ``Peer``)."""

    closed: bool

    def send(self, message: Any) -> None: ...


class _Executor(Protocol):
    """What streams need of the executor."""

    tasks: dict[ObjectId, Any]
    runtime: Any

    def _where(self, label: str) -> str: ...


class _Producing:
    """One generator being driven on this worker."""

    __slots__ = ("cond", "event", "label", "outbox", "peer", "task_id", "window")

    def __init__(self, task_id: ObjectId, peer: _Link, window: int, label: str) -> None:
        self.task_id = task_id
        self.peer = peer
        self.window = ProducerWindow(window)
        self.label = label
        self.cond = threading.Condition(threading.Lock())
        self.event: trio.Event | None = None  # an async producer waiting for room
        self.outbox: deque[StreamItem] = deque()  # a sync producer's items, for the loop


class WorkerStreams:
    """The generators this worker is driving, by call id."""

    def __init__(self, executor: _Executor) -> None:
        self._executor = executor
        self._active: dict[ObjectId, _Producing] = {}
        self._kinds: dict[Any, int] = {}  # function -> _PLAIN / _SYNC_GEN / _ASYNC_GEN

    def __len__(self) -> int:
        return len(self._active)

    # --- wrapping user code ----------------------------------------------------------------

    def adapt(self, fn: Callable[..., Any], *, in_thread: bool = False) -> Callable[..., Any]:
        """``fn`` itself, or for a generator function a wrapper that streams what it yields:
        an async one for an async generator (run on the loop), unless ``in_thread`` (the
        caller runs it on a pool thread). Cost for other functions: one dict lookup."""
        key = fn.__func__ if type(fn) is MethodType else fn  # not the instance: no leak
        kind = self._kinds.get(key)
        if kind is None:
            kind = self._kinds[key] = _kind(fn)
        if kind == _PLAIN:
            return fn
        label = getattr(fn, "__qualname__", "generator")
        if kind == _ASYNC_GEN and not in_thread:

            async def run_async(*args: Any, **kwargs: Any) -> int:
                marker = _marker(kwargs, label)
                return await self.drive_async(marker, fn(*args, **kwargs), label)

            run_async.__qualname__ = label  # listings and errors name the user's function
            return run_async

        def run(*args: Any, **kwargs: Any) -> int:
            marker = _marker(kwargs, label)
            gen = fn(*args, **kwargs)
            if kind == _ASYNC_GEN:
                portal = self._executor.runtime.portal
                return portal.run(self.drive_async, marker, gen, label)  # type: ignore[no-any-return]
            return self.drive_sync(marker, gen, label)

        run.__qualname__ = label
        return run

    # --- driving ---------------------------------------------------------------------------

    def _open(self, marker: StreamMarker, label: str) -> _Producing:
        item = self._executor.tasks.get(marker.task_id)
        if item is None:
            raise ConsumerGoneError(f"{label}: its call is no longer known on this worker")
        producing = _Producing(marker.task_id, item.peer, marker.window, label)
        self._active[marker.task_id] = producing
        return producing

    def _item(self, producing: _Producing, value: Any) -> StreamItem:
        try:
            payload = dumps(value)
        except Exception as exc:
            raise SerializationError(
                f"item {producing.window.produced} yielded by "
                f"{self._executor._where(producing.label)} could not be serialized: "
                f"{type(exc).__name__}: {exc}. Yield picklable values (locks, files, sockets "
                "and clients cannot leave the process that made them)"
            ) from exc
        limit = self._executor.runtime.max_message_bytes
        if payload.nbytes > limit:
            raise ValueError(
                f"item {producing.window.produced} yielded by {producing.label} serializes to "
                f"{payload.nbytes} bytes, over max_message_bytes={limit}; yield smaller "
                "values or raise the limit in ag.init()"
            )
        return StreamItem(producing.task_id, producing.window.produce(), payload)

    def drive_sync(self, marker: StreamMarker, gen: Any, label: str) -> int:
        """On a pool thread: run a sync generator to its end; the number of items."""
        token = self._executor.runtime.portal.token
        producing = self._open(marker, label)
        try:
            for value in gen:
                producing.outbox.append(self._item(producing, value))
                token.run_sync_soon(_send_outbox, producing, idempotent=True)
                if not producing.window.may_produce():
                    # Its CPUs are lent while it waits: a consumer on this worker (a task
                    # iterating it) must be able to run, take and acknowledge.
                    with blocking_section():
                        self._wait_room(producing, label)
            return producing.window.produced
        finally:
            gen.close()
            self._active.pop(marker.task_id, None)
            # Every item is queued on the link before the result can be written.
            trio.from_thread.run_sync(_send_outbox, producing, trio_token=token)

    @staticmethod
    def _wait_room(producing: _Producing, label: str) -> None:
        with producing.cond:
            while not producing.window.may_produce():
                if producing.peer.closed:
                    raise ConsumerGoneError(f"the consumer of {label} went away")
                producing.cond.wait(_WAIT_SLICE_S)

    async def drive_async(self, marker: StreamMarker, agen: Any, label: str) -> int:
        """On the loop: run an async generator to its end; the number of items."""
        producing = self._open(marker, label)
        peer = producing.peer
        try:
            async for value in agen:
                peer.send(self._item(producing, value))
                while not producing.window.may_produce():
                    if peer.closed:
                        raise ConsumerGoneError(f"the consumer of {label} went away")
                    producing.event = trio.Event()
                    with trio.move_on_after(_ASYNC_WAIT_SLICE_S):
                        await producing.event.wait()
            return producing.window.produced
        finally:
            producing.event = None
            self._active.pop(marker.task_id, None)
            with trio.CancelScope(shield=True):
                await agen.aclose()

    def on_ack(self, peer: object, msg: StreamAck) -> None:
        """Loop: the consumer took ``msg.consumed`` items."""
        producing = self._active.get(msg.task_id)
        if producing is None:
            return
        with producing.cond:
            if producing.window.on_ack(msg.consumed):
                producing.cond.notify_all()
        event = producing.event
        if event is not None:
            event.set()


def _marker(kwargs: dict[str, Any], label: str) -> StreamMarker:
    marker = kwargs.pop(STREAM_KWARG, None)
    if not isinstance(marker, StreamMarker):
        raise TypeError(
            f"{label} is a generator, and it was called for a single value: its generator "
            "cannot be sent back. Call it through a handle made in this program "
            "(Cls.remote() knows its generator methods), or mark the call as streaming: "
            f"handle.{label.rsplit('.', 1)[-1]}.options(streaming=True).remote(...) returns "
            "an ObjectRefGenerator"
        )
    return marker


def _send_outbox(producing: _Producing) -> None:
    """Loop: move a sync producer's items onto its link, in order."""
    outbox = producing.outbox
    while outbox:
        producing.peer.send(outbox.popleft())
