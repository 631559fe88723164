"""A bulk receiver: one connection whose frames the caller reads itself, header first, so
that a large body goes straight into memory the caller chose (a segment of the node's object
store) instead of a buffer of the connection's own that is copied from afterwards.

The connection is an ordinary one, dialled and authenticated like every other (the HMAC
handshake on the cluster secret, ``tcp.py``); only its receiving side differs. Frames are
read exactly: the frame and envelope lengths, the envelope, then what follows it, so that no
read takes bytes of the next frame. Over TLS the same: the session decrypts straight into
the caller's memory (``tlslink.py``).

Reads wait on the loop, each at most ``RECEIVE_SLICE_BYTES`` long (a large body does not
keep the loop busy for long at once), and fail when nothing arrives for ``idle_s``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

import trio

from .._exceptions import ProtocolError
from .._protocol.codec import ENVELOPE_LENGTH
from .._protocol.framing import HEADER
from .base import TRAFFIC, Buffer
from .tcp import TcpFrameStream
from .tls import TlsFrameStream
from .tlslink import TlsLink

__all__ = ["RECEIVE_SLICE_BYTES", "BulkReceiver"]

RECEIVE_SLICE_BYTES = 4 << 20

_HEAD = struct.Struct(HEADER.format + ENVELOPE_LENGTH.format.lstrip("!"))  # body, envelope


class BulkReceiver:
    """Reads the frames of ``stream`` (which must not have received any yet) itself."""

    def __init__(self, stream: TcpFrameStream | TlsFrameStream, *, idle_s: float) -> None:
        self._stream = stream
        self._link: TlsLink | None = None
        if isinstance(stream, TlsFrameStream):
            self._link = stream.link
            self._sock: socket.socket = stream.link.sock
        else:
            self._sock = stream.sock
        self.peer = stream.peer
        self.idle_s = idle_s
        self.max_message_bytes = stream.max_message_bytes

    def __repr__(self) -> str:
        return f"<BulkReceiver peer={self.peer}>"

    async def send(self, bodies: Sequence[Sequence[Buffer]]) -> None:
        await self._stream.send_frames(bodies)

    async def receive_head(self) -> tuple[bytes, int]:
        """The next frame's start (envelope length and envelope: a frame body of its own when
        nothing follows), and how many bytes follow it in the frame (its buffers), which the
        caller receives with :meth:`receive_into` before the next head."""
        head = bytearray(_HEAD.size)
        await self.receive_into(memoryview(head))
        size, envelope = _HEAD.unpack(head)
        if size > self.max_message_bytes or ENVELOPE_LENGTH.size + envelope > size:
            raise ProtocolError(
                f"{self.peer} sent a frame of {size} bytes with an envelope of {envelope}: "
                f"not a frame (or over max_message_bytes={self.max_message_bytes})"
            )
        start = bytearray(ENVELOPE_LENGTH.size + envelope)
        start[: ENVELOPE_LENGTH.size] = head[HEADER.size :]
        await self.receive_into(memoryview(start)[ENVELOPE_LENGTH.size :])
        return bytes(start), size - len(start)

    async def receive_into(self, view: memoryview) -> None:
        """Fill ``view`` with the next bytes of the stream."""
        if self._link is not None:
            await self._receive_tls_into(self._link, view)
            return
        sock = self._sock
        got, n = 0, view.nbytes
        while got < n:
            try:
                k = sock.recv_into(view[got : min(n, got + RECEIVE_SLICE_BYTES)])
            except BlockingIOError:
                with trio.move_on_after(self.idle_s) as idle:
                    await trio.lowlevel.wait_readable(sock)
                if idle.cancelled_caught:
                    raise trio.BrokenResourceError(
                        f"{self.peer} sent nothing for {self.idle_s:g} s in the middle of a "
                        "transfer: it is hung or cut off"
                    ) from None
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"receive from {self.peer} failed: {exc}") from exc
            if k == 0:
                raise trio.BrokenResourceError(f"{self.peer} closed the connection mid-transfer")
            got += k
            TRAFFIC.received += k
            if k == RECEIVE_SLICE_BYTES:
                await trio.lowlevel.checkpoint()

    async def _receive_tls_into(self, link: TlsLink, view: memoryview) -> None:
        got, n = 0, view.nbytes
        while got < n:
            k = -1
            with trio.move_on_after(self.idle_s):
                try:
                    k = await link.receive_into(view[got : min(n, got + RECEIVE_SLICE_BYTES)])
                except trio.BrokenResourceError as exc:
                    raise trio.BrokenResourceError(
                        f"receive from {self.peer} failed: {exc}"
                    ) from exc
            if k < 0:
                raise trio.BrokenResourceError(
                    f"{self.peer} sent nothing for {self.idle_s:g} s in the middle of a "
                    "transfer: it is hung or cut off"
                )
            if k == 0:
                raise trio.BrokenResourceError(f"{self.peer} closed the connection mid-transfer")
            got += k
            if k == RECEIVE_SLICE_BYTES:
                await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self._stream.aclose()
