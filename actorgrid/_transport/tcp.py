"""Framed, authenticated TCP streams on trio sockets.

Sends use ``sendmsg`` with every part of every queued frame, so a batch of small messages is
one system call and a large buffer is never concatenated. Receives go straight into the
decoder's buffer with ``recv_into``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from .._exceptions import AuthenticationError, ProtocolError
from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES, FrameDecoder, frame_header
from .._protocol.handshake import HANDSHAKE_TIMEOUT_S, HELLO_BYTES, PROOF_BYTES, Handshake
from .base import Buffer

__all__ = ["TcpFrameStream", "open_tcp_frame_stream", "serve_tcp_frame_streams"]

log = logging.getLogger("actorgrid.transport")

_MAX_IOV = 512  # below IOV_MAX (1024 on Linux)


class TcpFrameStream:
    def __init__(
        self, stream: trio.SocketStream, peer: str, max_message_bytes: int
    ) -> None:
        self._stream = stream
        self._sock = stream.socket
        self.peer = peer
        self._decoder = FrameDecoder(max_message_bytes)
        self._closed = False

    def __repr__(self) -> str:
        return f"<TcpFrameStream peer={self.peer} closed={self._closed}>"

    async def send_frames(self, bodies: Sequence[Sequence[Buffer]]) -> None:
        parts: list[Buffer] = []
        for body in bodies:
            parts.append(frame_header(sum(memoryview(p).nbytes for p in body)))
            parts.extend(body)
        await self._send_parts(parts)

    async def _send_parts(self, parts: list[Buffer]) -> None:
        views = [memoryview(p).cast("B") for p in parts if memoryview(p).nbytes]
        i = 0
        while i < len(views):
            chunk = views[i : i + _MAX_IOV]
            try:
                sent = await self._sock.sendmsg(chunk)
            except OSError as exc:
                raise trio.BrokenResourceError(f"send to {self.peer} failed: {exc}") from exc
            # Advance past what the kernel took; a partial send leaves a tail to resend.
            while sent and i < len(views):
                n = views[i].nbytes
                if sent >= n:
                    sent -= n
                    i += 1
                else:
                    views[i] = views[i][sent:]
                    sent = 0

    async def receive_frame(self) -> bytes | bytearray | None:
        decoder = self._decoder
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                return frame
            try:
                n = await self._sock.recv_into(decoder.get_buffer())
            except OSError as exc:
                raise trio.BrokenResourceError(f"receive from {self.peer} failed: {exc}") from exc
            if n == 0:
                if decoder.in_progress:
                    raise ProtocolError(f"{self.peer} closed the connection in the middle of a frame")
                return None
            decoder.buffer_updated(n)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._stream.aclose()


async def _receive_exactly(stream: trio.SocketStream, n: int, peer: str) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        if not chunk:
            raise ProtocolError(f"{peer} closed the connection during the handshake")
        data += chunk
    return bytes(data)


async def _handshake(stream: trio.SocketStream, secret: bytes, role: str, peer: str) -> None:
    shake = Handshake(secret, role, peer)
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT_S):
            await stream.send_all(shake.hello())
            proof = shake.receive_hello(await _receive_exactly(stream, HELLO_BYTES, peer))
            await stream.send_all(proof)
            try:
                verdict = shake.receive_proof(await _receive_exactly(stream, PROOF_BYTES, peer))
            except Exception:
                await stream.send_all(b"\x00")
                raise
            await stream.send_all(verdict)
            shake.receive_verdict(await _receive_exactly(stream, 1, peer))
    except (AuthenticationError, ProtocolError):
        raise  # both are ConnectionErrors, so the OSError clause below would swallow them
    except trio.TooSlowError:
        raise ProtocolError(
            f"{peer} did not finish the handshake within {HANDSHAKE_TIMEOUT_S:.0f} s"
        ) from None
    except (trio.BrokenResourceError, OSError) as exc:
        raise ProtocolError(f"{peer} dropped the connection during the handshake: {exc}") from None


async def open_tcp_frame_stream(
    address: str, secret: bytes, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> TcpFrameStream:
    """Connect to ``host:port`` and authenticate; raises AuthenticationError on a bad secret."""
    host, port = split_address(address)
    stream = await trio.open_tcp_stream(host, port)
    try:
        await _handshake(stream, secret, "client", address)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return TcpFrameStream(stream, address, max_message_bytes)


async def serve_tcp_frame_streams(
    handler: Callable[[TcpFrameStream], Awaitable[None]],
    host: str,
    port: int,
    secret: bytes,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections until cancelled; each authenticated stream goes to ``handler``.

    Reports ``host:port`` through ``task_status``. A peer that fails the handshake is logged
    and dropped; it never reaches ``handler``.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    async with trio.open_nursery() as nursery:
        task_status.started(f"{bound[0]}:{bound[1]}")
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, handler, secret, max_message_bytes)


async def _accept_loop(
    listener: trio.SocketListener,
    handler: Callable[[TcpFrameStream], Awaitable[None]],
    secret: bytes,
    max_message_bytes: int,
) -> None:
    async with listener, trio.open_nursery() as nursery:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                log.warning("accept failed: %s", exc)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(_serve_one, stream, handler, secret, max_message_bytes)


async def _serve_one(
    stream: trio.SocketStream,
    handler: Callable[[TcpFrameStream], Awaitable[None]],
    secret: bytes,
    max_message_bytes: int,
) -> None:
    try:
        host, port = stream.socket.getpeername()[:2]
        peer = f"{host}:{port}"
    except OSError:
        peer = "unknown peer"
    try:
        await _handshake(stream, secret, "server", peer)
    except Exception as exc:
        log.warning("rejected connection from %s: %s", peer, exc)
        await trio.aclose_forcefully(stream)
        return
    framed = TcpFrameStream(stream, peer, max_message_bytes)
    try:
        await handler(framed)
    except Exception:
        # One connection's failure must never take the server down with it.
        log.exception("connection from %s failed", peer)
    finally:
        await framed.aclose()


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} is not of the form host:port")
    return host.strip("[]") or "127.0.0.1", int(port)
