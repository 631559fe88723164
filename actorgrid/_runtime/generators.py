"""Remote generators, the caller's side: ``ObjectRefGenerator`` and the streams it reads.

A remote generator is a call like any other (SubmitTask or CallActor, with its retries and
cancel), whose arguments carry a ``StreamMarker`` (under the keyword ``STREAM_KWARG``) naming
the call and its window. The worker (``producing.py``) sends each yielded value as a
StreamItem on the call's link and its TaskResult last (the item count, or the error); this
process keeps each item as an object of its own, in order, and acknowledges what the consumer
took (StreamAck), so the producer stays at most ``window`` items ahead
(``_scheduler/streams.py``).

- An error in the generator resolves the call with it: the consumer gets the items before it,
  then one ref whose ``ag.get`` raises it, then the end (as Ray does).
- A worker that dies before the first item arrived: the call is retried as any task is
  (``max_retries``); after it, the stream fails with WorkerDiedError (or ActorDiedError)
  after the items received (a retry would run the producer again from its start).
- ``ag.cancel(gen)``, or dropping the generator, cancels the call: the producer stops.

Thread model: items arrive and the call resolves on the runtime's loop; consumers take items
in any thread (``for``) or Trio task (``async for``). Items are appended before the call
resolves, so a consumer that sees the call resolved and no item left has seen every item.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections import deque
from typing import Any, Generic, Protocol, TypeVar

import trio

from .._protocol.ids import ObjectId, short
from .._protocol.messages import StreamAck, StreamItem
from .._scheduler.streams import ConsumerStream
from .refs import FAILED, PENDING, ObjectEntry, ObjectRef

__all__ = [
    "STREAM_KWARG",
    "CallerStreams",
    "ObjectRefGenerator",
    "StreamMarker",
    "is_generator_function",
]

T = TypeVar("T")

# The keyword argument that carries a streaming call's StreamMarker to the worker, where the
# generator's wrapper takes it out before calling user code.
STREAM_KWARG = "__actorgrid_stream__"


class StreamMarker:
    """Rides in a streaming call's arguments: which call it is, and its window."""

    __slots__ = ("task_id", "window")

    def __init__(self, task_id: ObjectId, window: int) -> None:
        self.task_id = task_id
        self.window = window

    def __reduce__(self) -> Any:
        return StreamMarker, (self.task_id, self.window)


# Functions already classified, for is_generator_function: asked on every actor call, always
# of the same few methods; a lookup here costs a quarter of inspect's checks. Held weakly: a
# class that goes takes its entries along.
_KINDS: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def is_generator_function(fn: Any) -> bool:
    """True for a generator function or async generator function (methods too)."""
    try:
        known = _KINDS.get(fn)
    except TypeError:  # not weakly referable, or unhashable: not remembered
        return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    if known is None:
        known = _KINDS[fn] = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    return known


class _InLoop(Protocol):
    def in_loop_thread(self) -> bool: ...


class _Link(Protocol):
    """The link a call went out on (a ``Peer``)."""

    inflight: dict[ObjectId, Any]  # records.Sent: its retries are dropped at the first item

    def send(self, message: Any) -> None: ...


class _Runtime(Protocol):
    """What a stream needs of the runtime."""

    @property
    def portal(self) -> _InLoop: ...

    def new_entry(self) -> ObjectEntry: ...

    def on_loop(self, fn: Any, *args: Any) -> None: ...

    def cancel(self, entry: ObjectEntry, force: bool = False, recursive: bool = True) -> None: ...

    def _wait_blocking(self, event: threading.Event, timeout: float | None) -> bool: ...


class _Stream:
    """One remote generator's items in this process (loop appends, consumers take)."""

    __slots__ = ("__weakref__", "entry", "error_given", "items", "lock", "state", "waiters")

    def __init__(self, entry: ObjectEntry, window: int) -> None:
        self.entry = entry  # the call: resolves after the last item
        self.state = ConsumerStream(window)
        self.items: deque[ObjectEntry] = deque()
        self.waiters: list[Any] = []  # threading.Event or trio.Event, woken by news
        self.lock = threading.Lock()  # one consumer takes at a time
        self.error_given = False

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            w.set()

    def set(self) -> None:
        """The call resolved (a waiter on its entry)."""
        self.wake()

    def wait_on(self, waiter: Any) -> bool:
        """Register ``waiter``; False (not registered) if there is news already."""
        self.waiters.append(waiter)
        if self.items or self.entry.state != PENDING:
            try:
                self.waiters.remove(waiter)
            except ValueError:
                pass  # the loop took it and sets it
            return False
        return True


class CallerStreams:
    """The remote generators this process consumes, by call id (held weakly: a generator
    dropped by its consumer is cancelled, and its late items are ignored)."""

    def __init__(self, rt: Any) -> None:
        self._rt = rt
        self._streams: weakref.WeakValueDictionary[ObjectId, _Stream] = (
            weakref.WeakValueDictionary()
        )

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, stream: _Stream) -> None:
        """Any thread, before the call is sent."""
        self._streams[stream.entry.object_id] = stream

    def on_item(self, peer: _Link, msg: StreamItem) -> None:
        """Loop: a value from a producer."""
        stream = self._streams.get(msg.task_id)
        if stream is None or stream.entry.state != PENDING:
            return  # dropped or cancelled by its consumer: nobody takes it
        if not stream.state.on_item(msg.index):
            return
        if msg.index == 0:
            # A rerun would yield the items again from the first: no retry once one arrived.
            sent = peer.inflight.get(msg.task_id)
            if sent is not None:
                sent.retries = 0
                if sent.spec is not None:
                    sent.spec.retries = 0
        item = self._rt.new_entry()
        item.set_value(msg.value)
        stream.items.append(item)
        stream.wake()

    def ack(self, stream: _Stream, consumed: int) -> None:
        """Loop: tell the producer how many items were taken."""
        where = stream.entry.where  # the Peer it is in flight on; else a str, or None
        if where is not None and not isinstance(where, str) and stream.entry.state == PENDING:
            where.send(StreamAck(stream.entry.object_id, consumed))


class ObjectRefGenerator(Generic[T]):
    """The stream of a remote generator: ``.remote()`` of a generator function or generator
    actor method returns one.

    ``for ref in gen`` (any thread) and ``async for ref in gen`` (Trio) give an ObjectRef per
    yielded value, in order, as soon as it is produced; the producer pauses while the
    consumer is ``generator_backpressure`` items behind. An exception in the generator
    comes after the items before it, as a ref whose ``ag.get`` raises it. ``ag.cancel(gen)``
    or dropping the generator stops the producer. Created by the runtime only.
    """

    __slots__ = ("__weakref__", "_rt", "_stream")
    _rt: _Runtime
    _stream: _Stream

    def __init__(self, *_: Any, **__: Any) -> None:
        raise TypeError(
            "ObjectRefGenerator has no public constructor: .remote() of a generator function "
            "or generator actor method returns one"
        )

    @classmethod
    def _make(cls, rt: Any, streams: CallerStreams, entry: ObjectEntry, window: int) -> Any:
        gen: ObjectRefGenerator[Any] = object.__new__(cls)
        gen._rt = rt
        stream = gen._stream = _Stream(entry, window)
        streams.open(stream)
        if not entry.add_waiter(stream):
            stream.wake()
        return gen

    def __repr__(self) -> str:
        s = self._stream
        state = "running" if s.entry.state == PENDING else s.entry.describe()
        return (
            f"ObjectRefGenerator({short(s.entry.object_id)}, {state}, "
            f"{s.state.consumed} taken, {len(s.items)} ready)"
        )

    def completed(self) -> ObjectRef[Any]:
        """A ref that resolves when the generator has finished (its value: the number of
        items), or raises its error."""
        return ObjectRef._make(self._stream.entry)

    def is_finished(self) -> bool:
        """True once every item has been taken and the generator has ended."""
        s = self._stream
        return (
            s.entry.state != PENDING and not s.items and (s.entry.state != FAILED or s.error_given)
        )

    def _take_nowait(self) -> ObjectRef[T] | None:
        """The next ref if there is news (raises StopIteration at the end), else None."""
        s = self._stream
        with s.lock:
            done = s.entry.state != PENDING  # read first: items come before the resolution
            if s.items:
                entry = s.items.popleft()
                consumed = s.state.take()
                if consumed is not None:
                    self._rt.on_loop(_ack, self._rt, s, consumed)
                return ObjectRef._make(entry)
            if not done:
                return None
            if s.entry.state == FAILED and not s.error_given:
                s.error_given = True
                return ObjectRef._make(s.entry)
            raise StopIteration

    def __iter__(self) -> ObjectRefGenerator[T]:
        return self

    def __next__(self) -> ObjectRef[T]:
        if trio.lowlevel.in_trio_run():
            raise RuntimeError(
                "iterating an ObjectRefGenerator with `for` blocks, and this thread runs a "
                "Trio loop; use `async for ref in gen` there instead"
            )
        while True:
            ref = self._take_nowait()
            if ref is not None:
                return ref
            event = threading.Event()
            if self._stream.wait_on(event):
                self._rt._wait_blocking(event, None)

    def _next_or_none(self) -> ObjectRef[T] | None:
        try:
            return self.__next__()
        except StopIteration:
            return None

    def __aiter__(self) -> ObjectRefGenerator[T]:
        return self

    async def __anext__(self) -> ObjectRef[T]:
        rt = self._rt
        if not rt.portal.in_loop_thread():
            # Another Trio loop than the runtime's: wait in a thread, off both loops.
            ref = await trio.to_thread.run_sync(self._next_or_none, abandon_on_cancel=True)
            if ref is None:
                raise StopAsyncIteration
            return ref
        while True:
            try:
                ref = self._take_nowait()
            except StopIteration:
                raise StopAsyncIteration from None
            if ref is not None:
                await trio.lowlevel.checkpoint()
                return ref
            event = trio.Event()
            if self._stream.wait_on(event):
                await event.wait()

    def _cancel(self, force: bool = False, recursive: bool = True) -> None:
        """Any thread: cancel the producer (``ag.cancel(gen)``)."""
        self._rt.on_loop(self._rt.cancel, self._stream.entry, force, recursive)

    def __del__(self) -> None:
        try:
            stream = self._stream
        except AttributeError:
            return  # never made
        if stream.entry.state == PENDING:
            try:
                self._rt.on_loop(self._rt.cancel, stream.entry, False, True)
            except Exception:
                pass  # the runtime is gone, and the producer with it

    def __reduce__(self) -> Any:
        from .._exceptions import SerializationError

        raise SerializationError(
            "an ObjectRefGenerator cannot be passed to another task or actor: its items "
            "come to the process that called .remote(); pass the refs it yields instead"
        )


def _ack(rt: Any, stream: _Stream, consumed: int) -> None:
    rt.streams.ack(stream, consumed)
