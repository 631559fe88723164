"""In-memory frame streams: the same interface as TCP, for unit tests; and a simulated
network of them (``MemoryNetwork``), with faults on demand, for ``actorgrid.testing``."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio

from .._exceptions import ProtocolError
from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES
from .base import Buffer

__all__ = [
    "MemoryEndpoint",
    "MemoryFrameStream",
    "MemoryNetwork",
    "SimFrameStream",
    "memory_frame_stream_pair",
]


class MemoryFrameStream:
    def __init__(
        self,
        send: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
        peer: str,
        max_message_bytes: int,
    ) -> None:
        self._send = send
        self._receive = receive
        self.peer = peer
        self._max = max_message_bytes
        self._pending: list[bytes] = []

    async def send_frames(self, bodies: Sequence[Sequence[Buffer]]) -> None:
        frames, self._pending = [*self._pending, *map(self._frame, bodies)], []
        for frame in frames:
            try:
                await self._send.send(frame)
            except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                raise trio.BrokenResourceError(f"{self.peer} is closed") from exc

    def _frame(self, body: Sequence[Buffer]) -> bytes:
        frame = b"".join(bytes(p) for p in body)
        if len(frame) > self._max:
            raise ProtocolError(
                f"frame of {len(frame)} bytes exceeds max_message_bytes={self._max}"
            )
        return frame

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def send_nowait(self, bodies: Sequence[Sequence[Buffer]]) -> bool:
        """Put frames in the channel while it has room; keep the rest for send_frames."""
        frames = [*self._pending, *map(self._frame, bodies)]
        self._pending = []
        for i, frame in enumerate(frames):
            try:
                self._send.send_nowait(frame)
            except trio.WouldBlock:
                self._pending = frames[i:]
                return False
            except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                raise trio.BrokenResourceError(f"{self.peer} is closed") from exc
        return True

    async def receive_frame(self) -> bytes | None:
        try:
            frame = await self._receive.receive()
        except trio.EndOfChannel:
            return None
        if len(frame) > self._max:  # the receiver's own limit, as on a socket
            raise ProtocolError(
                f"incoming frame of {len(frame)} bytes exceeds max_message_bytes={self._max}"
            )
        return frame

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def memory_frame_stream_pair(
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, buffer: int = 64
) -> tuple[MemoryFrameStream, MemoryFrameStream]:
    a_send, b_receive = trio.open_memory_channel[bytes](buffer)
    b_send, a_receive = trio.open_memory_channel[bytes](buffer)
    return (
        MemoryFrameStream(a_send, a_receive, "memory-b", max_message_bytes),
        MemoryFrameStream(b_send, b_receive, "memory-a", max_message_bytes),
    )


# --- a simulated network --------------------------------------------------------------------
#
# Many endpoints in one trio.run, for the deterministic simulation (actorgrid.testing). A
# connection is two pipes of frames; a frame is stamped with the virtual time it arrives
# (now, plus the link's delay) and read no earlier. The network's rules, set by the
# simulation's fault schedule, act on the pipes between two hosts: a delay, a blackhole (frames
# vanish, as on a cut cable: only the peers' pulse monitors notice), or a crash of one host
# (its connections reset at once, as when its process is killed).


@attrs.define(eq=False)
class _Pipe:
    """One direction of a connection: frames in order, at most ``capacity`` waiting."""

    src: str
    dst: str
    capacity: int
    frames: deque[tuple[float, bytes]] = attrs.Factory(deque)
    last_at: float = 0.0  # frames never overtake each other, whatever the delays
    eof: bool = False  # the sender closed its end: the reader gets None once drained
    reset: str = ""  # the connection was reset: both ends raise BrokenResourceError
    readable: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    writable: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)

    def break_(self, why: str) -> None:
        self.reset = self.reset or why
        self.readable.unpark_all()
        self.writable.unpark_all()


class SimFrameStream:
    """One end of a connection on a MemoryNetwork (a FrameStream)."""

    def __init__(
        self, network: MemoryNetwork, out: _Pipe, into: _Pipe, peer: str, max_message_bytes: int
    ) -> None:
        self._network = network
        self._out = out
        self._in = into
        self.peer = peer
        self._max = max_message_bytes
        self._pending: list[bytes] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<SimFrameStream {self._out.src}->{self._out.dst}>"

    def _frame(self, body: Sequence[Buffer]) -> bytes:
        frame = b"".join(bytes(p) for p in body)
        if len(frame) > self._max:
            raise ProtocolError(
                f"frame of {len(frame)} bytes exceeds max_message_bytes={self._max}"
            )
        return frame

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._out.reset:
            raise trio.BrokenResourceError(f"connection to {self.peer} reset: {self._out.reset}")

    def _put(self, frame: bytes) -> None:
        out = self._out
        delay = self._network.rule(out.src, out.dst)
        if delay is None:
            self._network.dropped += 1  # blackholed: never arrives
            return
        out.last_at = max(out.last_at, trio.current_time() + delay)
        out.frames.append((out.last_at, frame))
        out.readable.unpark()

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def send_nowait(self, bodies: Sequence[Sequence[Buffer]]) -> bool:
        """Put frames in the pipe while it has room; keep the rest for send_frames."""
        self._check()
        frames = [*self._pending, *map(self._frame, bodies)]
        self._pending = []
        for i, frame in enumerate(frames):
            if len(self._out.frames) >= self._out.capacity:
                self._pending = frames[i:]
                return False
            self._put(frame)
        return True

    async def send_frames(self, bodies: Sequence[Sequence[Buffer]]) -> None:
        frames, self._pending = [*self._pending, *map(self._frame, bodies)], []
        for frame in frames:
            self._check()
            while len(self._out.frames) >= self._out.capacity:
                await self._out.writable.park()
                self._check()
            self._put(frame)
        await trio.lowlevel.checkpoint()

    async def receive_frame(self) -> bytes | None:
        pipe = self._in
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this stream was closed")
            if pipe.reset:
                raise trio.BrokenResourceError(f"connection to {self.peer} reset: {pipe.reset}")
            if pipe.frames:
                at, frame = pipe.frames[0]
                if at > trio.current_time():
                    await trio.sleep_until(at)
                    continue
                pipe.frames.popleft()
                pipe.writable.unpark()
                if len(frame) > self._max:
                    raise ProtocolError(
                        f"incoming frame of {len(frame)} bytes exceeds "
                        f"max_message_bytes={self._max}"
                    )
                self._network.delivered(pipe.src, pipe.dst, frame)
                await trio.lowlevel.checkpoint()
                return frame
            if pipe.eof:
                await trio.lowlevel.checkpoint()
                return None
            await pipe.readable.park()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.eof = True
            self._out.readable.unpark_all()
            self._in.break_("closed by the reader")
            self._network.forget(self)
        await trio.lowlevel.checkpoint()


Handler = Callable[[Any], Awaitable[None]]


class MemoryEndpoint:
    """One host's view of a MemoryNetwork: the transport its runtime dials and listens with
    (``_runtime/seams.Transport``). Its addresses are ``<host>:<n>``, n counting up."""

    def __init__(self, network: MemoryNetwork, host: str) -> None:
        self.network = network
        self.host = host

    def __repr__(self) -> str:
        return f"<MemoryEndpoint {self.host}>"

    async def open(
        self, address: str, secret: bytes, *, max_message_bytes: int, tls: object = None
    ) -> SimFrameStream:
        return await self.network.connect(self.host, address, max_message_bytes)

    async def serve(
        self,
        handler: Handler,
        host: str,
        port: int,
        secret: bytes,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: object = None,
        limits: object = None,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await self.network.listen(self.host, handler, max_message_bytes, task_status)


class MemoryNetwork:
    """Hosts that dial and listen by address inside one trio.run, with faults on demand.

    Deterministic given a deterministic scheduler: nothing here reads a wall clock or a random
    source. ``on_deliver(src, dst, frame)`` is told of every frame read, in order.
    """

    def __init__(
        self,
        *,
        capacity: int = 64,
        on_deliver: Callable[[str, str, bytes], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.on_deliver = on_deliver
        self.dropped = 0
        self._ports: dict[str, int] = {}
        self._listeners: dict[str, tuple[trio.MemorySendChannel[SimFrameStream], int]] = {}
        self._streams: dict[str, set[SimFrameStream]] = {}
        self._delays: dict[tuple[str, str], float] = {}
        self._blocked: set[tuple[str, str]] = set()
        self._cut: set[str] = set()
        self._unblocked = trio.Event()
        self._connections = 0

    def endpoint(self, host: str) -> MemoryEndpoint:
        return MemoryEndpoint(self, host)

    # --- faults ----------------------------------------------------------------------------

    def rule(self, src: str, dst: str) -> float | None:
        """The delay of a frame from ``src`` to ``dst`` now; None: it is dropped."""
        if not self._blocked and not self._delays:
            return 0.0
        if (src, dst) in self._blocked:
            return None
        return self._delays.get((src, dst), 0.0)

    def blocked(self, src: str, dst: str) -> bool:
        return (src, dst) in self._blocked

    def drop(self, a: str, b: str) -> None:
        """Frames between hosts ``a`` and ``b`` vanish (both ways) until ``heal``."""
        self._blocked |= {(a, b), (b, a)}

    def delay(self, a: str, b: str, by_s: float) -> None:
        """Frames between ``a`` and ``b`` arrive ``by_s`` late (both ways) until ``heal``."""
        self._delays[(a, b)] = self._delays[(b, a)] = by_s

    def heal(self, a: str, b: str) -> None:
        self._blocked -= {(a, b), (b, a)}
        self._delays.pop((a, b), None)
        self._delays.pop((b, a), None)
        self._unblocked.set()
        self._unblocked = trio.Event()

    def crash(self, host: str, why: str) -> None:
        """Reset every connection of ``host`` and stop its listeners, as a killed process."""
        for stream in list(self._streams.pop(host, ())):
            stream._out.break_(why)
            stream._in.break_(why)
        for address in [a for a in self._listeners if a.rpartition(":")[0] == host]:
            del self._listeners[address]

    # --- connections ------------------------------------------------------------------------

    async def listen(
        self, host: str, handler: Handler, max_message_bytes: int, task_status: trio.TaskStatus[str]
    ) -> None:
        port = self._ports[host] = self._ports.get(host, 0) + 1
        address = f"{host}:{port}"
        # Accepted streams are handed to this task, which starts their handlers: a task
        # inherits the context of the task that starts it, and the handler must run in the
        # listener's (its runtime's), not the dialler's.
        accepted, incoming = trio.open_memory_channel[SimFrameStream](math.inf)
        try:
            async with trio.open_nursery() as nursery:
                self._listeners[address] = (accepted, max_message_bytes)
                task_status.started(address)
                async for stream in incoming:
                    nursery.start_soon(self._serve_one, handler, stream)
        finally:
            self._listeners.pop(address, None)

    async def connect(self, host: str, address: str, max_message_bytes: int) -> SimFrameStream:
        dst = address.rpartition(":")[0]
        while self.blocked(host, dst):  # a blackholed dial hangs, as TCP's does
            await self._unblocked.wait()
        delay = self.rule(host, dst) or 0.0
        if delay:
            await trio.sleep(delay)  # the SYN's trip; the handshake is not simulated
        listener = self._listeners.get(address)
        if listener is None:
            await trio.lowlevel.checkpoint()
            raise ConnectionRefusedError(f"nothing listens at {address} (simulated network)")
        accepted, server_max = listener
        self._connections += 1
        up = _Pipe(host, dst, self.capacity)
        down = _Pipe(dst, host, self.capacity)
        client = SimFrameStream(self, up, down, address, max_message_bytes)
        server = SimFrameStream(self, down, up, f"{host}:c{self._connections}", server_max)
        self._streams.setdefault(host, set()).add(client)
        self._streams.setdefault(dst, set()).add(server)
        accepted.send_nowait(server)
        await trio.lowlevel.checkpoint()
        return client

    @staticmethod
    async def _serve_one(handler: Handler, stream: SimFrameStream) -> None:
        try:
            await handler(stream)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    def forget(self, stream: SimFrameStream) -> None:
        streams = self._streams.get(stream._out.src)
        if streams is not None:
            streams.discard(stream)

    def delivered(self, src: str, dst: str, frame: bytes) -> None:
        if self.on_deliver is not None:
            self.on_deliver(src, dst, frame)
