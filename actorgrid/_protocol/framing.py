"""Length-prefixed framing, sans I/O.

A frame is ``[u64 big-endian body length][body]``. :class:`FrameDecoder` follows the
"buffered protocol" shape: the I/O layer asks for :meth:`FrameDecoder.get_buffer`, receives
straight into it (``recv_into``), and reports how many bytes arrived with
:meth:`FrameDecoder.buffer_updated`. Small frames share one reusable buffer; a frame larger
than that buffer gets a buffer of its own, so its body is received in place and handed on
without a copy.
"""

from __future__ import annotations

import struct
from collections import deque

from .._exceptions import ProtocolError

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "FrameDecoder", "frame_header"]

HEADER = struct.Struct("!Q")
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
SMALL_BUFFER_BYTES = 256 * 1024


def frame_header(body_nbytes: int) -> bytes:
    return HEADER.pack(body_nbytes)


class FrameDecoder:
    """Turns a byte stream, split any way at all, into frame bodies."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray(SMALL_BUFFER_BYTES)
        self._start = 0  # first unconsumed byte in _buf
        self._end = 0  # one past the last received byte in _buf
        self._large: bytearray | None = None  # body of an oversize-for-_buf frame
        self._large_filled = 0
        self._frames: deque[bytes | bytearray] = deque()

    def get_buffer(self) -> memoryview:
        """Where the next received bytes must be written."""
        if self._large is not None:
            return memoryview(self._large)[self._large_filled :]
        if self._end == len(self._buf):
            self._compact()
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """Record that ``nbytes`` were written into the last buffer from get_buffer()."""
        if self._large is not None:
            self._large_filled += nbytes
            if self._large_filled == len(self._large):
                self._frames.append(self._large)
                self._large = None
            return
        self._end += nbytes
        self._parse()

    def feed(self, data: bytes) -> None:
        """Copy ``data`` in, for callers that already hold bytes (tests, in-memory streams)."""
        view = memoryview(data)
        while view.nbytes:
            target = self.get_buffer()
            n = min(target.nbytes, view.nbytes)
            target[:n] = view[:n]
            self.buffer_updated(n)
            view = view[n:]

    def next_frame(self) -> bytes | bytearray | None:
        """The next complete frame body, or None if none is complete yet."""
        return self._frames.popleft() if self._frames else None

    @property
    def in_progress(self) -> bool:
        """True while part of a frame has arrived (EOF now would truncate it)."""
        return self._large is not None or self._end > self._start

    def _compact(self) -> None:
        pending = self._end - self._start
        self._buf[:pending] = self._buf[self._start : self._end]
        self._start, self._end = 0, pending

    def _parse(self) -> None:
        buf = self._buf
        while self._end - self._start >= HEADER.size:
            (size,) = HEADER.unpack_from(buf, self._start)
            if size > self.max_message_bytes:
                raise ProtocolError(
                    f"incoming frame of {size} bytes exceeds max_message_bytes="
                    f"{self.max_message_bytes}; raise the limit on both sides if this is meant"
                )
            body_start = self._start + HEADER.size
            available = self._end - body_start
            if size + HEADER.size > len(buf):
                # Too big for the shared buffer: give it its own and receive in place.
                large = bytearray(size)
                take = min(available, size)
                large[:take] = buf[body_start : body_start + take]
                self._start = body_start + take
                if take == size:
                    self._frames.append(large)
                else:
                    self._large, self._large_filled = large, take
                    self._start = self._end = 0
                    return
                continue
            if available < size:
                if self._end == len(buf):
                    self._compact()
                return
            self._frames.append(bytes(buf[body_start : body_start + size]))
            self._start = body_start + size
        if self._start == self._end:
            self._start = self._end = 0
