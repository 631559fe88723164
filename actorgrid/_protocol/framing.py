"""Length-prefixed framing, sans I/O.

A frame is ``[u64 big-endian body length][body]``. :class:`FrameDecoder` follows the
"buffered protocol" shape: the I/O layer asks for :meth:`FrameDecoder.get_buffer`, receives
straight into it (``recv_into``), and reports how many bytes arrived with
:meth:`FrameDecoder.buffer_updated`. Small frames (up to ``SMALL_BUFFER_BYTES``, header
included) share one reusable buffer; a larger frame gets a buffer of its own, so its body is
received in place and handed on without a copy.

Invariants:

- the shared buffer of a connection that carries small frames stays ``IDLE_BUFFER_BYTES``
  long (a head holds a link to every node and driver: hundreds of links). It grows, at most to
  ``SMALL_BUFFER_BYTES``, when a small frame does not fit (to the frame's size, in one step)
  or when a read filled it to its end (a burst: it doubles); it shrinks back once
  ``SHRINK_AFTER_READS`` reads in a row each found it empty and fitted the idle size. Growing
  copies only the part of a frame already here, once; the bytes of each frame are still
  written once by ``recv_into`` and copied once into the frame handed on;

- memory follows the bytes that arrived, never the length a header announces: the buffer of
  a large frame starts at most ``max(GROWTH_START_BYTES, 2 * bytes already here)`` long and
  doubles only when the bytes received have filled it, so a peer that sends a header
  announcing 1 GiB and then stalls costs at most GROWTH_START_BYTES, and a peer that sends
  ``n`` bytes of a frame costs at most ``max(GROWTH_START_BYTES, 2 * n)``;
- that buffer is an anonymous memory map, grown with ``mremap``: growing it never copies the
  bytes already received nor zero-fills the new part (the kernel supplies zero pages as they
  are first written), so a large frame is still written once, by ``recv_into``;
- a header over ``max_message_bytes`` raises ProtocolError before any of its body is stored;
- a view handed out by get_buffer() is valid until the next buffer_updated() or close(),
  which release it; :meth:`close` drops every buffer at once, whatever still refers to the
  decoder (a traceback, a reference cycle), so nothing outlives a closed connection.
"""

from __future__ import annotations

import mmap
import struct
from collections import deque

from .._exceptions import ProtocolError

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "IDLE_BUFFER_BYTES",
    "SMALL_BUFFER_BYTES",
    "Frame",
    "FrameDecoder",
    "frame_header",
]

HEADER = struct.Struct("!Q")
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
# The largest frame (header included) assembled in the shared buffer, and so the most that
# buffer grows to; a larger frame gets a map of its own.
SMALL_BUFFER_BYTES = 256 * 1024
# The shared buffer of a connection without large traffic: a few pulses, replies and batches.
IDLE_BUFFER_BYTES = 16 * 1024
# A grown shared buffer shrinks back after this many reads in a row found it empty and would
# have fitted in the idle size: a stream of medium frames keeps it, a lull gives it back.
SHRINK_AFTER_READS = 8
# The first size of a large frame's own buffer, unless more of its body is here already.
GROWTH_START_BYTES = 1 << 20

# Private, because a shared anonymous map cannot grow: the pages mremap adds to one are not
# backed, and touching them raises SIGBUS.
_PRIVATE = mmap.MAP_PRIVATE
_HUGE = getattr(mmap, "MADV_HUGEPAGE", None)  # Linux: transparent huge pages (store4, issue 9)

# A frame body: bytes for small frames, a view of its own memory map for large ones.
Frame = bytes | memoryview


def frame_header(body_nbytes: int) -> bytes:
    return HEADER.pack(body_nbytes)


class FrameDecoder:
    """Turns a byte stream, split any way at all, into frame bodies."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray(IDLE_BUFFER_BYTES)
        self._quiet_reads = 0  # reads in a row that would have fitted the idle size
        self._start = 0  # first unconsumed byte in _buf
        self._end = 0  # one past the last received byte in _buf
        # The body of a frame too big for _buf: its own map, of which _large_filled bytes
        # have arrived out of _large_size.
        self._large: mmap.mmap | None = None
        self._large_filled = 0
        self._large_size = 0
        self._lent: memoryview | None = None  # the last view get_buffer() handed out
        self._frames: deque[Frame] = deque()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<FrameDecoder buffered={self.buffered_bytes} frames={len(self._frames)} "
            f"closed={self._closed}>"
        )

    @property
    def buffered_bytes(self) -> int:
        """Bytes of buffer this decoder holds now, complete frames not counted."""
        return len(self._buf) + (len(self._large) if self._large is not None else 0)

    @property
    def shared_buffer_bytes(self) -> int:
        """The size of the buffer that small frames share (see IDLE_BUFFER_BYTES)."""
        return len(self._buf)

    def get_buffer(self) -> memoryview:
        """Where the next received bytes must be written (valid until buffer_updated)."""
        if self._closed:
            raise ProtocolError("the frame decoder is closed: its connection has ended")
        self._release_lent()
        large = self._large
        if large is not None:
            if self._large_filled == len(large):
                large.resize(min(self._large_size, 2 * len(large)))
            view = memoryview(large)[self._large_filled :]
        else:
            if self._end == len(self._buf):
                self._make_room()
            view = memoryview(self._buf)[self._end :]
        self._lent = view
        return view

    def buffer_updated(self, nbytes: int) -> None:
        """Record that ``nbytes`` were written into the last buffer from get_buffer()."""
        self._release_lent()
        large = self._large
        if large is not None:
            self._large_filled += nbytes
            if self._large_filled == self._large_size:
                self._frames.append(memoryview(large))
                self._large = None
            return
        self._end += nbytes
        self._parse()
        if len(self._buf) > IDLE_BUFFER_BYTES:
            self._settle(nbytes)

    def feed(self, data: bytes) -> None:
        """Copy ``data`` in, for callers that already hold bytes (tests, in-memory streams)."""
        view = memoryview(data)
        while view.nbytes:
            target = self.get_buffer()
            n = min(target.nbytes, view.nbytes)
            target[:n] = view[:n]
            self.buffer_updated(n)
            view = view[n:]

    def next_frame(self) -> Frame | None:
        """The next complete frame body, or None if none is complete yet."""
        return self._frames.popleft() if self._frames else None

    @property
    def has_frame(self) -> bool:
        """True while a complete frame waits to be taken with next_frame()."""
        return bool(self._frames)

    @property
    def in_progress(self) -> bool:
        """True while part of a frame has arrived (EOF now would truncate it)."""
        return self._large is not None or self._end > self._start

    def close(self) -> None:
        """Drop every buffer, frames not yet taken included; idempotent.

        The memory of a frame in progress is returned to the system now, even if a view of
        it is still referenced somewhere (such a view then fails when used).
        """
        self._closed = True
        self._release_lent()
        large, self._large = self._large, None
        if large is not None:
            try:
                large.close()
            except BufferError:
                pass  # a view of it is still exported; it is freed with the last one
        self._buf = bytearray()
        self._start = self._end = 0
        self._frames.clear()

    def _release_lent(self) -> None:
        if self._lent is not None:
            self._lent.release()
            self._lent = None

    def _compact(self) -> None:
        pending = self._end - self._start
        self._buf[:pending] = self._buf[self._start : self._end]
        self._start, self._end = 0, pending

    def _make_room(self) -> None:
        """The last read filled the shared buffer to its end, so more may be waiting: move
        what waits to its start, in a buffer twice as large while it is under the most."""
        if len(self._buf) < SMALL_BUFFER_BYTES:
            self._resize(min(SMALL_BUFFER_BYTES, 2 * len(self._buf)))
        else:
            self._compact()

    def _resize(self, size: int) -> None:
        """A shared buffer of ``size`` bytes, holding what waits to be parsed at its start."""
        pending = self._end - self._start
        buf = bytearray(size)
        with memoryview(self._buf) as old:
            buf[:pending] = old[self._start : self._end]
        self._buf = buf
        self._start, self._end = 0, pending
        self._quiet_reads = 0

    def _settle(self, nbytes: int) -> None:
        # A grown shared buffer, after a read of nbytes: shrink it after a lull.
        if self._end == 0 and nbytes <= IDLE_BUFFER_BYTES:
            self._quiet_reads += 1
            if self._quiet_reads >= SHRINK_AFTER_READS:
                self._buf = bytearray(IDLE_BUFFER_BYTES)
                self._quiet_reads = 0
        else:
            self._quiet_reads = 0

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
                if size + HEADER.size <= SMALL_BUFFER_BYTES:
                    # A small frame larger than the shared buffer: grow it to fit, at once.
                    grown = 2 * len(buf)
                    while grown < size + HEADER.size:
                        grown *= 2
                    self._resize(min(grown, SMALL_BUFFER_BYTES))
                    return
                # Too big for the shared buffer: it gets a map of its own, received into in
                # place, and sized by what has arrived, not by what the header announces. The
                # part already here is less than the shared buffer, hence less than the body.
                take = min(available, size)
                large = mmap.mmap(-1, min(size, max(GROWTH_START_BYTES, 2 * take)), flags=_PRIVATE)
                if _HUGE is not None:  # 2 MB pages: faulting 4 KB ones costs more than the copy
                    large.madvise(_HUGE)
                large[:take] = buf[body_start : body_start + take]
                self._large, self._large_filled, self._large_size = large, take, size
                self._start = self._end = 0
                return
            if available < size:
                if self._end == len(buf):
                    self._make_room()
                return
            self._frames.append(bytes(buf[body_start : body_start + size]))
            self._start = body_start + size
        if self._start == self._end:
            self._start = self._end = 0
