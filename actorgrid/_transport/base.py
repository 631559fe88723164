"""The one small interface every transport implements; ``tests/_transport`` checks them all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .._protocol.framing import Frame

Buffer = bytes | bytearray | memoryview


class Traffic:
    """Bytes this process's TCP and TLS links wrote and read since it started (frames as
    they go on the socket; TLS counts plaintext). One add per socket call; read by the task
    event reports (``/metrics``: bytes sent and received per node)."""

    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0


TRAFFIC = Traffic()


class FrameStream(Protocol):
    """An ordered, reliable stream of frames between two authenticated processes.

    ``send_frames`` writes whole frame bodies (each given as parts written back to back) in
    order; only one task may send at a time. ``receive_frame`` returns the next body (bytes,
    or for a large one a memoryview of a buffer of its own), or None at a clean end of stream;
    a stream cut mid-frame raises ProtocolError. ``aclose`` is idempotent and frees the
    stream's receive buffers.
    """

    peer: str

    @property
    def pending(self) -> bool:
        """True while send_nowait has left bytes that send_frames must write first."""

    def send_nowait(self, bodies: Sequence[Sequence[Buffer]]) -> bool: ...

    async def send_frames(self, bodies: Sequence[Sequence[Buffer]]) -> None: ...

    async def receive_frame(self) -> Frame | None: ...

    async def aclose(self) -> None: ...
