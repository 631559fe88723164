"""A Peer is one connection to another process, at the message level.

Outgoing messages are queued by ``send`` (sync, loop thread) and written by one writer task in
batches: everything queued since the last write goes out in one ``sendmsg``. A message alone on
an idle link may instead be written by the task that sends it (``send_lone``: agents' sends). Incoming frames
are decoded by one reader task and handed to the owner's handler in order, so messages from one
sender arrive in the order sent. Replies (messages with an ``rid``) resolve ``request`` calls.

A Peer exists before its connection does: messages queued while connecting go out once the
handshake is done, which lets ``.remote()`` stay synchronous.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio

from .._exceptions import ProtocolError, unwrap_group
from .._protocol.coalesce import encode_frames
from .._protocol.codec import decode, encode
from .._protocol.envmessages import JobList, JobLogs, JobStarted, PackageData, PackageHave
from .._protocol.messages import (
    Ack,
    AskReply,
    ClusterView,
    EventHistory,
    Hello,
    Membership,
    Message,
    NameReply,
    ObjectValue,
    Payload,
    Pulse,
    WorkerReport,
)
from .._protocol.namebatch import NamesClaimed, NamesFound
from .._protocol.observe import LogLines
from .._protocol.store import ObjectChunk
from .._scheduler.flow import ReceiveCredits, SendCredits
from .._transport.tcp import TcpFrameStream
from . import stepping
from .confirms import LinkSends
from .lending import Lending
from .stepping import step_woken

if TYPE_CHECKING:
    from .._protocol.ids import ActorId, ObjectId
    from .._transport.base import FrameStream
    from .pulse import PulseMonitor
    from .records import Sent

__all__ = ["LoopbackPeer", "Peer", "PeerClosedError", "after_batch", "batch"]

log = logging.getLogger("actorgrid.peer")

Handler = Callable[["Peer", Message], Awaitable[None] | None]

# Exact types (no message class has subclasses): one set lookup per message, on the hot path.
_REPLIES = frozenset(
    {
        Ack,
        NameReply,
        Membership,
        AskReply,
        ObjectValue,
        EventHistory,
        ClusterView,
        WorkerReport,
        PackageHave,
        PackageData,
        JobStarted,
        JobList,
        JobLogs,
        LogLines,
        ObjectChunk,
        NamesClaimed,
        NamesFound,
    }
)
# Peers that take a run of answers as one TaskResults (coalesce.py); the head takes TaskResult.
_RUNTIMES = frozenset({"driver", "worker"})
_BATCH_MAX = 2048  # messages per write: bounds latency behind a large burst
_HIGH_WATER = 4096  # queued messages above which send_wait() waits


_dirty: list[Peer] | None = None
# Frames read by this process's readers: a Peer writes a lone message at once (send_lone)
# at most once between two frames read, so a burst still goes to the writer in one write.
_reads = 0
# The most receivers a reader wakes before it steps them (stepping.py) while more frames are
# buffered: a burst's wakes stay in a list no longer than this.
_STEP_AFTER = 64
# Called once the outermost batch() ends, after its flush (``after_batch``).
_after: list[Callable[[], None]] = []


class _Batch:
    """``with batch():`` peers sent to inside the block are flushed once, at its end.

    A flush writes straight to the socket when the peer's writer is idle, so a reply costs no
    task switch; sends outside any batch wake the writer task instead. Loop thread only.
    (A class, not a generator context manager: it runs once per message.)
    """

    __slots__ = ("_outer",)

    def __enter__(self) -> None:
        global _dirty
        self._outer = _dirty is not None
        if not self._outer:
            _dirty = []

    def __exit__(self, *exc: object) -> None:
        global _dirty
        if self._outer:
            return
        dirty, _dirty = _dirty, None
        assert dirty is not None
        for peer in dirty:
            peer._queued_flush = False
            peer.flush()
        if _after:
            hooks = _after[:]
            _after.clear()
            for hook in hooks:
                hook()


def batch() -> _Batch:
    return _Batch()


def after_batch(hook: Callable[[], None]) -> bool:
    """Loop: call ``hook()`` when the open ``batch()`` ends, after its writes (the loop is
    then about to wait for more: a frame handled, a portal drained). False if none is open."""
    if _dirty is None:
        return False
    _after.append(hook)
    return True


class PeerClosedError(ConnectionError):
    """The connection to a peer ended before a reply arrived."""


class _Reply:
    __slots__ = ("event", "rid", "value")

    def __init__(self) -> None:
        self.rid = 0
        self.event = trio.Event()
        self.value: Message | BaseException | None = None


class Peer:
    def __init__(
        self,
        address: str,
        handler: Handler,
        *,
        local_hello: Hello,
        monitor: PulseMonitor[Peer] | None = None,
    ) -> None:
        self.address = address
        self._monitor = monitor
        # Set by the reader on every frame, cleared by the pulse monitor once per interval.
        self.heard = False
        self._scope: trio.CancelScope | None = None
        self._abort_reason: str | None = None
        self.remote_hello: Hello | None = None
        self._handler = handler
        self._hello = local_hello
        self._out: list[Message] = []
        self._wake = trio.Event()
        self._space = trio.lowlevel.ParkingLot()
        self._rids = itertools.count(1)
        self._requests: dict[int, _Reply] = {}
        self.closed = False
        self.close_reason = ""
        # Calls sent on this link and not yet answered: failed if the link dies.
        self.inflight: dict[ObjectId, Sent] = {}
        # Function and class blobs this link has already carried (sent once per link).
        self.sent_code: set[bytes] = set()
        self.on_closed: list[Callable[[Peer], None]] = []
        self._stream: FrameStream | None = None
        # Once true, something may have been written to the peer: a call in flight may run.
        self.connected = False
        self._writing = False
        self._queued_flush = False
        # Held by whoever writes to the socket; other threads only ever try it, never wait.
        self._lock = threading.Lock()
        self.wake_threadsafe: Callable[[], None] | None = None
        # Mailbox flow control (Deliver/Credit), per target actor: see _scheduler/flow.py.
        self.send_credits: SendCredits[ActorId] = SendCredits()
        self.receive_credits: ReceiveCredits[ActorId] = ReceiveCredits()
        self.credit_waiters: dict[ActorId, trio.lowlevel.ParkingLot] = {}
        # Quiet calls and fire-and-forget messages not yet confirmed finished (confirms.py).
        self.sends = LinkSends()
        self.sends.held_credits = self.receive_credits  # granted with its reports
        # Reads lent to a thread waiting on this link (lending.py); only a plain TCP stream's.
        self.lending = Lending()
        self.lendable = False

    def __repr__(self) -> str:
        kind = self.remote_hello.kind if self.remote_hello else "?"
        state = f"closed: {self.close_reason}" if self.closed else f"{len(self._out)} queued"
        return f"<Peer {kind}@{self.address} {state}>"

    @property
    def queued(self) -> int:
        """Messages queued on this link and not yet written (or, on the loopback, handled)."""
        return len(self._out)

    # --- sending ----------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Queue a message; never blocks. Sending on a closed peer is silently dropped, and
        whoever waits for an answer learns of the closure through ``on_closed``."""
        if self.closed:
            return
        self._out.append(message)
        if _dirty is None:
            self._wake.set()
        elif not self._queued_flush:
            self._queued_flush = True
            _dirty.append(self)

    def send_lone(self, message: Message) -> None:
        """``send``, but a message alone on an idle link is written now, in this task: no
        switch to the writer task and no loop turn on its way (a hop of a ring of agents).
        At most one such write between two frames read by this process (new work comes in
        with them): the rest of a burst queues behind it and goes to the writer as with
        ``send``, in one write."""
        if self.closed:
            return
        stream = self._stream
        if (
            _dirty is not None
            or self._out
            or self._lone_at == _reads
            or stream is None
            or self._writing
        ):
            self.send(message)
            return
        self._lone_at = _reads
        with self._lock:  # flush() for one message: no list made, none coalesced
            try:
                if stream.send_nowait([encode(message)]):
                    return
            except trio.BrokenResourceError:
                return  # the reader sees the broken connection and closes the peer
        self._wake.set()  # the writer finishes what the socket did not take

    _lone_at = -1  # _reads at this link's last send_lone write

    def _frames(
        self, messages: list[Message], stream: FrameStream
    ) -> list[list[bytes | memoryview]]:
        """``messages`` as frames, runs coalesced (runs of answers only to a runtime)."""
        hello = self.remote_hello
        answers = hello is not None and hello.kind in _RUNTIMES
        return encode_frames(messages, getattr(stream, "max_message_bytes", 0), answers)

    def flush(self) -> None:
        """Write queued messages now if the writer is idle; else leave them to the writer."""
        stream = self._stream
        if stream is None or self._writing or self.closed or not self._out:
            self._wake.set()
            return
        messages = self._out[:_BATCH_MAX]
        del self._out[:_BATCH_MAX]
        with self._lock:
            try:
                frames = self._frames(messages, stream)
                if stream.send_nowait(frames) and not self._out:
                    return
            except trio.BrokenResourceError:
                pass  # the reader sees the broken connection and closes the peer
        self._wake.set()

    def send_threadsafe(self, message: Message) -> bool:
        """Any thread: write ``message`` now if nothing is queued ahead of it on this link.

        False means nothing was sent and the caller must go through the loop. This saves a
        thread hop (tens of microseconds) on the call and reply paths of sync code.
        """
        # ``with``, not ``acquire(blocking=False)`` then ``try``: the main thread's Ctrl-C
        # raises KeyboardInterrupt as the acquire call returns, before the ``try``, and the
        # lock stayed held for good: the loop's next flush blocked on it, the whole runtime
        # with it. ``with`` releases it whatever is raised after the acquire. The loop holds
        # the lock only for one write that does not block, so waiting for it here is short.
        with self._lock:
            stream = self._stream
            if stream is None or self.closed or self._writing or self._out or stream.pending:
                return False
            try:
                done = stream.send_nowait([encode(message)])
            except trio.BrokenResourceError:
                return True  # the reader sees it, closes the peer and fails what is in flight
            except BaseException:
                # A KeyboardInterrupt (Ctrl-C) in the write: the stream kept the rest of a frame
                # the socket took part of (TcpFrameStream.send_nowait); the writer sends it.
                if stream.pending and self.wake_threadsafe is not None:
                    self.wake_threadsafe()
                raise
            if not done and self.wake_threadsafe is not None:
                self.wake_threadsafe()  # the writer must finish what the socket did not take
            return True

    def has_room(self) -> bool:
        """Whether ``send_wait`` would queue a message now, without waiting: the link is up
        (not closed, not connecting) and its queue is under the high-water mark."""
        return self._stream is not None and not self.closed and len(self._out) < _HIGH_WATER

    async def send_wait(self, message: Message, *, flush: bool = False) -> None:
        """Queue a message, first waiting while the queue is over its high-water mark;
        with ``flush``, as ``send_lone``."""
        while len(self._out) >= _HIGH_WATER and not self.closed:
            await self._space.park()
        if self.closed:
            raise PeerClosedError(f"connection to {self.address} is closed: {self.close_reason}")
        if flush:
            self.send_lone(message)
        else:
            self.send(message)

    async def wait_sent(self, timeout_s: float) -> None:
        """Wait until everything queued so far has been written (or the link is closed),
        at most ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            while not self.closed and (
                self._out or self._writing or (self._stream is not None and self._stream.pending)
            ):
                self._wake.set()
                await trio.sleep(0.005)

    def request_nowait(self, make: Callable[[int], Message]) -> _Reply:
        """Queue ``make(rid)`` now; ``await peer.wait_reply(r)`` later for the answer.

        Queuing happens before this returns, so anything sent afterwards on this peer is
        ordered after the request.
        """
        if self.closed:
            raise PeerClosedError(f"connection to {self.address} is closed: {self.close_reason}")
        rid = next(self._rids)
        reply = self._requests[rid] = _Reply()
        reply.rid = rid
        self.send(make(rid))
        return reply

    async def wait_reply(self, reply: _Reply) -> Message:
        try:
            await reply.event.wait()
        finally:
            self._requests.pop(reply.rid, None)
        if isinstance(reply.value, BaseException):
            raise reply.value
        assert reply.value is not None
        return reply.value

    async def request(self, make: Callable[[int], Message]) -> Message:
        """Send ``make(rid)`` and wait for the reply carrying that rid."""
        return await self.wait_reply(self.request_nowait(make))

    # --- running ----------------------------------------------------------------------------

    async def run(self, stream: FrameStream) -> None:
        """Pump messages both ways until either side closes; then mark the peer closed."""
        reason = "connection closed"
        try:
            # Hello goes first, before anything queued while connecting.
            await stream.send_frames([encode(self._hello)])
            self._stream = stream
            self.lendable = type(stream) is TcpFrameStream
            self.connected = True
            if self._monitor is not None:
                self._monitor.watch(self)
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                if self._abort_reason is not None:
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._writer, stream, nursery.cancel_scope)
                reason = await self._reader(stream)
                nursery.cancel_scope.cancel()
            if self._abort_reason is not None:
                reason = self._abort_reason
        except* ProtocolError as group:
            reason = str(unwrap_group(group))
            log.warning("closing connection to %s: %s", self.address, reason)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
            reason = f"connection lost: {unwrap_group(group)}"
        finally:
            if self._monitor is not None:
                self._monitor.unwatch(self)
            with trio.CancelScope(shield=True):
                await stream.aclose()
            self.close(reason)

    @property
    def aborted(self) -> bool:
        """This process dropped the link itself (``abort``), rather than the connection."""
        return self._abort_reason is not None

    def abort(self, reason: str) -> None:
        """Loop: drop the connection now (a zombie, a fenced peer); ``close`` follows."""
        if self._abort_reason is None:
            self._abort_reason = reason
        if self._scope is not None:
            self._scope.cancel()
        elif self._stream is None:
            self.close(reason)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._out.clear()
        self._space.unpark_all()
        for lot in self.credit_waiters.values():
            lot.unpark_all()
        error = PeerClosedError(f"connection to {self.address} closed: {reason}")
        for reply in self._requests.values():
            reply.value = error
            reply.event.set()
        for callback in self.on_closed:
            callback(self)

    async def _writer(self, stream: FrameStream, scope: trio.CancelScope) -> None:
        while True:
            if not self._out and not stream.pending:
                self._wake = trio.Event()
                await self._wake.wait()
            messages = self._out[:_BATCH_MAX]
            del self._out[:_BATCH_MAX]
            with self._lock:
                self._writing = True
            try:
                await stream.send_frames(self._frames(messages, stream))
            finally:
                self._writing = False
            if len(self._out) < _HIGH_WATER:
                # As many as there is room for: 50,000 agents parked here, woken at once,
                # would take their next step in one loop turn (no pulse for seconds).
                self._space.unpark(count=_HIGH_WATER - len(self._out))

    async def _reader(self, stream: FrameStream) -> str:
        first = await stream.receive_frame()
        if first is None:
            return "peer closed before saying hello"
        hello = decode(first)
        if not isinstance(hello, Hello):
            raise ProtocolError(f"expected Hello first, got {type(hello).__name__}")
        self.remote_hello = hello
        handler = self._handler
        lending = self.lending
        # Real sockets only: over in-memory streams (a simulation's) Trio orders the tasks.
        tcp = stream if type(stream) is TcpFrameStream else None
        woken: list[tuple[trio.lowlevel.Task, stepping.Queue]] | None = (
            [] if tcp is not None else None
        )
        while True:
            if lending.wanted and type(stream) is TcpFrameStream and stream.idle:
                await self._lend(stream, handler)
            frame = await stream.receive_frame()
            if frame is None:
                return "peer closed the connection"
            self.heard = True
            global _reads
            _reads += 1
            stepping.woken = woken
            try:
                with batch():
                    self._dispatch(decode(frame), handler)
            finally:
                stepping.woken = None
            # The receivers it woke run now, in this task's turn, once the frames buffered
            # are dispatched (stepping.py): not between two frames of a burst, where each
            # would write alone what the writer sends together.
            if woken and tcp is not None and (tcp.idle or len(woken) >= _STEP_AFTER):
                step_woken(woken)
            if self._pending is not None:
                await self._await_pending()

    async def _lend(self, stream: TcpFrameStream, handler: Handler) -> None:
        """Reader: let a thread read this link while it waits on it (lending.py), then
        dispatch what it read, in order, before reading again."""
        lending = self.lending
        lending.lend(trio.lowlevel.current_trio_token(), stream)
        try:
            while await lending.wait():
                await self._dispatch_handed(handler)
        finally:
            await lending.take_back()
            handed = lending.handed
            while handed:  # even when cancelled: answers that arrived are answers
                with batch():
                    self._dispatch(handed.popleft(), handler)
        if self._pending is not None:
            await self._await_pending()
        if lending.broken is not None:
            raise ProtocolError(lending.broken)

    async def _dispatch_handed(self, handler: Handler) -> None:
        handed = self.lending.handed
        while handed:
            with batch():
                self._dispatch(handed.popleft(), handler)
            if self._pending is not None:
                await self._await_pending()

    _pending: Awaitable[None] | None = None

    async def _await_pending(self) -> None:
        # A handler may return an awaitable that the reader waits for. The runtime's own
        # handlers never do: a reader that waits stops every actor on the link, and its
        # pulses (a full mailbox parks messages and holds senders back by credit instead).
        pending, self._pending = self._pending, None
        assert pending is not None
        try:
            await pending
        except Exception:
            log.exception("error handling a message from %s", self.address)

    def _dispatch(self, message: Message, handler: Handler) -> None:
        if type(message) in _REPLIES:
            reply = self._requests.get(cast(Ack, message).rid)  # every reply has a rid
            if reply is not None:
                reply.value = message
                reply.event.set()
            return
        if type(message) is Pulse:
            return
        try:
            self._pending = handler(self, message)
        except ProtocolError:
            raise
        except Exception:
            log.exception("error handling %s from %s", type(message).__name__, self.address)


class LoopbackPeer(Peer):
    """A peer for this process itself: same ordering and backpressure, no socket, no codec.

    Out-of-band buffers are copied on the way, so a callee never shares memory with its caller.
    """

    # True while the loop handles a batch it took off ``_out``: messages then in neither place.
    _handling = False

    def idle(self) -> bool:
        """Any thread: no message is queued here or being handled, so a call put in by
        another way (``Executor.call_from_thread``) cannot overtake one sent through here."""
        return not self._out and not self._handling

    async def run_loopback(self) -> None:
        self.remote_hello = self._hello
        handler = self._handler
        try:
            while True:
                if not self._out:
                    self._wake = trio.Event()
                    await self._wake.wait()
                self._handling = True
                messages = self._out[:_BATCH_MAX]
                del self._out[:_BATCH_MAX]
                if len(self._out) < _HIGH_WATER:
                    self._space.unpark(count=_HIGH_WATER - len(self._out))
                for message in messages:
                    with batch():
                        self._dispatch(_isolate(message), handler)
                    if self._pending is not None:
                        await self._await_pending()
                self._handling = False
        finally:
            self.close("runtime stopped")


def _isolate(message: Any) -> Any:
    for field in ("args", "value", "payload"):
        payload = getattr(message, field, None)
        if isinstance(payload, Payload) and payload.buffers:
            copied = Payload(payload.data, tuple(memoryview(bytes(b)) for b in payload.buffers))
            return attrs.evolve(message, **{field: copied})
    return message
