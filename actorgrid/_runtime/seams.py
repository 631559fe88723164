"""What a runtime takes from the process that hosts it: its network and its threads.

A real process gets plain framed TCP (``TCP``) and a pool of threads for blocking user code
(``ThreadPool``); that is the default, and nothing on the hot path changes for it: the runtime
calls ``seams.transport.open`` where it called ``open_tcp_frame_stream``. A deterministic
simulation (``actorgrid.testing``) hosts many runtimes in one ``trio.run`` and hands each its
own ``Seams``: an in-memory network that it can fault, and a pool that runs user code inline on
the loop (a thread would let the virtual clock jump while it computes).

Only the two things listed here are injected; a runtime's other process-wide state (the
current runtime, ids, randomness) is made per-runtime or seeded by the simulation itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from .._transport.base import FrameStream
from .._transport.tcp import ListenLimits, open_tcp_frame_stream, serve_tcp_frame_streams
from .._transport.tls import TLSConfig
from .portal import Portal, ThreadPool

__all__ = ["TCP", "Pool", "Seams", "TcpTransport", "Transport", "default_seams"]


class Transport(Protocol):
    """Dial and listen for authenticated frame streams (``_transport/base.FrameStream``)."""

    async def open(
        self, address: str, secret: bytes, *, max_message_bytes: int, tls: TLSConfig | None
    ) -> FrameStream:
        """Connect to ``address`` and shake hands; OSError or ActorgridError on failure."""

    async def serve(
        self,
        handler: Callable[[Any], Awaitable[None]],
        host: str,
        port: int,
        secret: bytes,
        *,
        max_message_bytes: int,
        tls: TLSConfig | None,
        limits: ListenLimits | None,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept streams until cancelled, each to ``handler``; report the address first."""


class TcpTransport:
    """Plain framed TCP (or TLS over it): ``_transport/tcp.py``."""

    def __repr__(self) -> str:
        return "TCP"

    async def open(
        self, address: str, secret: bytes, *, max_message_bytes: int, tls: TLSConfig | None
    ) -> FrameStream:
        return await open_tcp_frame_stream(
            address, secret, max_message_bytes=max_message_bytes, tls=tls
        )

    async def serve(
        self,
        handler: Callable[[Any], Awaitable[None]],
        host: str,
        port: int,
        secret: bytes,
        *,
        max_message_bytes: int,
        tls: TLSConfig | None,
        limits: ListenLimits | None,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await serve_tcp_frame_streams(
            handler,
            host,
            port,
            secret,
            max_message_bytes=max_message_bytes,
            tls=tls,
            limits=limits,
            task_status=task_status,
        )


TCP = TcpTransport()


class Pool(Protocol):
    """Where blocking user code runs (``portal.ThreadPool`` is the real one)."""

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def start(self, fn: Callable[..., Any], *args: Any) -> None: ...

    def close(self) -> None: ...


@attrs.frozen
class Seams:
    """A runtime's network and threads; ``default_seams()`` is a real process's."""

    transport: Transport = TCP
    make_pool: Callable[[Portal], Pool] = ThreadPool


_DEFAULT = Seams()


def default_seams() -> Seams:
    return _DEFAULT
