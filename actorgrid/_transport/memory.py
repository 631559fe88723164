"""An in-memory frame stream pair: the same interface as TCP, for unit tests."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from .._exceptions import ProtocolError
from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES
from .base import Buffer

__all__ = ["MemoryFrameStream", "memory_frame_stream_pair"]


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
