"""Framed, authenticated TCP streams on trio sockets, optionally inside mutual TLS.

Sends use ``sendmsg`` with every part of every queued frame, so a batch of small messages is
one system call and a large buffer is never concatenated. Receives go straight into the
decoder's buffer with ``recv_into``.

With ``tls=``, the TLS handshake comes first and the HMAC handshake then runs inside the TLS
session, both within one deadline (HANDSHAKE_TIMEOUT_S for a client, the listener's
``ListenLimits.handshake_timeout_s`` for a server); the result is a TlsFrameStream (tls.py)
instead of the raw-socket TcpFrameStream.

A server admits connections through a ListenGate (listen.py, deciding with admission.py): a
bounded number may be in their handshake at once, the oldest of the busiest address making
room for a new one, a failed accept backs off, and rejections are logged in counted summaries.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, overload

import trio

from .._exceptions import AuthenticationError, ProtocolError
from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES, Frame, FrameDecoder, frame_header
from .._protocol.handshake import HANDSHAKE_TIMEOUT_S, HELLO_BYTES, PROOF_BYTES, Handshake
from .admission import ListenLimits
from .base import TRAFFIC, Buffer, FrameStream
from .listen import ListenGate, raise_open_file_limit
from .tls import TLSConfig, TlsFrameStream, explain_tls_failure, frame_views
from .tlslink import TlsLink

__all__ = ["ListenLimits", "TcpFrameStream", "open_tcp_frame_stream", "serve_tcp_frame_streams"]

log = logging.getLogger("actorgrid.transport")

_MAX_IOV = 512  # below IOV_MAX (1024 on Linux)
_OPS_PER_CHECKPOINT = 32
# A lone frame up to this size is joined into one bytes and sent with send() (send_nowait).
_JOIN_ONE_MAX_BYTES = 4096


class TcpFrameStream:
    """A frame stream on a plain non-blocking socket, waiting with trio.lowlevel.

    After the handshake the socket is taken over from trio's SocketStream: trio's socket
    methods yield to the scheduler on every call, which tripled a message round trip. Here
    a send or receive that can complete at once does so, and fairness comes from an explicit
    checkpoint every _OPS_PER_CHECKPOINT operations.
    """

    def __init__(self, sock: socket.socket, peer: str, max_message_bytes: int) -> None:
        sock.setblocking(False)
        self._sock = sock
        self.peer = peer
        self._decoder = FrameDecoder(max_message_bytes)
        self._closed = False
        self._ops = 0
        self._pending: list[memoryview] = []
        self._drained = False

    @property
    def sock(self) -> socket.socket:
        """The connected socket (for a receiver that reads its frames itself: bulk.py)."""
        return self._sock

    @property
    def max_message_bytes(self) -> int:
        return self._decoder.max_message_bytes

    @classmethod
    def _adopt(cls, stream: trio.SocketStream, peer: str, max_message_bytes: int) -> TcpFrameStream:
        fd = stream.socket.detach()
        return cls(socket.socket(fileno=fd), peer, max_message_bytes)

    def __repr__(self) -> str:
        return f"<TcpFrameStream peer={self.peer} closed={self._closed}>"

    async def _fair(self) -> None:
        self._ops += 1
        if self._ops % _OPS_PER_CHECKPOINT == 0:
            await trio.lowlevel.checkpoint()

    _views = staticmethod(frame_views)

    def _send_some(
        self, views: list[memoryview], written: list[int] | None = None
    ) -> list[memoryview]:
        """Write what the socket takes now; return the views (or view tails) left over. With
        ``written``, each write's count is appended to it by C code (``list.extend`` of a
        ``map``), before a KeyboardInterrupt could be raised on the way back to Python."""
        sock = self._sock
        i = 0
        while i < len(views):
            try:
                if written is None:
                    sent = sock.sendmsg(views[i : i + _MAX_IOV])
                else:
                    written.extend(map(sock.sendmsg, (views[i : i + _MAX_IOV],)))
                    sent = written[-1]
            except BlockingIOError:
                return views[i:]
            except OSError as exc:
                raise trio.BrokenResourceError(f"send to {self.peer} failed: {exc}") from exc
            TRAFFIC.sent += sent
            while sent and i < len(views):
                n = views[i].nbytes
                if sent >= n:
                    sent -= n
                    i += 1
                else:
                    views[i] = views[i][sent:]  # a partial send leaves a tail
                    sent = 0
        return []

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def send_nowait(self, bodies: Sequence[Sequence[Buffer]]) -> bool:
        """Send without waiting; what the socket cannot take now waits for send_frames.

        True if everything went out. Must not be called while send_frames is waiting.

        A KeyboardInterrupt (Ctrl-C: raised in the main thread between any two bytecodes)
        leaves the stream whole: the rest of a frame the socket took part of is kept for
        send_frames, and a frame of which it took nothing is dropped, as if never sent.
        """
        written: list[int] = []
        if not self._pending and len(bodies) == 1:
            # One frame on an idle socket (a lone message: a ring's hop, a reply): its header
            # and parts joined into one bytes and sent with send(), rather than the views and
            # sendmsg bookkeeping a batch needs. Large parts keep the general path (no copy).
            parts = bodies[0]
            if sum(map(len, parts)) <= _JOIN_ONE_MAX_BYTES:
                frame = b"".join((frame_header(sum(map(len, parts))), *parts))
                try:
                    # (the count stored by C code, before a KeyboardInterrupt could be raised)
                    written.extend(map(self._sock.send, (frame,)))
                    sent = written[0]
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    raise trio.BrokenResourceError(f"send to {self.peer} failed: {exc}") from exc
                except BaseException:
                    if written and written[0] < len(frame):  # (nothing went out: dropped)
                        self._pending = [memoryview(frame)[written[0] :]]
                    raise
                TRAFFIC.sent += sent
                if sent == len(frame):
                    return True
                self._pending = [memoryview(frame)[sent:]]
                return False
        pending = self._pending
        try:
            self._pending = self._send_some(pending + self._views(bodies), written)
        except BaseException:
            taken = sum(written)
            if taken:  # (else nothing of it went out: the queue is as it was)
                self._pending = _skip(pending + self._views(bodies), taken)
            raise
        return not self._pending

    async def send_frames(self, bodies: Sequence[Sequence[Buffer]]) -> None:
        views = self._pending + self._views(bodies)
        self._pending = []
        while views:
            views = self._send_some(views)
            if views:
                await trio.lowlevel.wait_writable(self._sock)
        await self._fair()

    async def receive_frame(self) -> Frame | None:
        decoder = self._decoder
        sock = self._sock
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                self._ops += 1  # _fair, inlined: no coroutine made per frame received
                if self._ops % _OPS_PER_CHECKPOINT == 0:
                    await trio.lowlevel.checkpoint()
                return frame
            if self._drained:
                # The last read emptied the socket, so reading now would most likely fail:
                # wait first. (A read that filled the buffer leaves _drained False, and
                # streaming data is read back to back without waiting.)
                await trio.lowlevel.wait_readable(sock)
            if self._closed:  # by aclose() while we waited: the decoder's buffers are gone
                raise trio.ClosedResourceError(f"the connection to {self.peer} was closed")
            buffer = decoder.get_buffer()
            try:
                n = sock.recv_into(buffer)
            except BlockingIOError:
                self._drained = True
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"receive from {self.peer} failed: {exc}") from exc
            self._drained = n < buffer.nbytes
            TRAFFIC.received += n
            if n == 0:
                if decoder.in_progress:
                    raise ProtocolError(
                        f"{self.peer} closed the connection in the middle of a frame"
                    )
                return None
            decoder.buffer_updated(n)

    @property
    def idle(self) -> bool:
        """True when a receive now would wait: no complete frame is buffered and the last
        read emptied the socket (a reader that steps back then misses nothing: lending.py)."""
        return self._drained and not self._decoder.has_frame

    def receive_nowait(self) -> tuple[list[Frame], bool]:
        """Any thread, while no receive_frame runs: the frames that have arrived, read without
        waiting; and True once the connection has ended (closed, or a read failed), which
        the next receive_frame reports as it would have."""
        decoder = self._decoder
        sock = self._sock
        frames: list[Frame] = []
        read = False
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                frames.append(frame)
                continue
            if self._closed:
                return frames, True
            if read and self._drained:
                # The last read did not fill the buffer, so the socket is most likely empty:
                # a read now would fail (what arrives later makes the caller's poll return).
                return frames, False
            read = True
            buffer = decoder.get_buffer()
            try:
                n = sock.recv_into(buffer)
            except BlockingIOError:
                self._drained = True
                return frames, False
            except OSError:
                return frames, True  # left to receive_frame, which reads it again and fails
            if n == 0:
                return frames, True  # EOF: a read by receive_frame sees it again
            self._drained = n < buffer.nbytes
            TRAFFIC.received += n
            decoder.buffer_updated(n)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._decoder.close()
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()


def _skip(views: list[memoryview], n: int) -> list[memoryview]:
    """``views`` without their first ``n`` bytes."""
    for i, view in enumerate(views):
        if n < view.nbytes:
            return [view[n:], *views[i + 1 :]] if n else views[i:]
        n -= view.nbytes
    return []


class HandshakeFailed(ProtocolError):
    """A handshake that did not complete; ``kind`` sums the reason up in a few words, for the
    server's rejection counts."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


async def _receive_exactly(stream: trio.abc.ReceiveStream, n: int, peer: str, hint: str) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        if not chunk:
            raise HandshakeFailed(
                f"{peer} closed the connection during the handshake{hint}",
                "closed during the handshake",
            )
        data += chunk
    return bytes(data)


async def _handshake(
    stream: trio.abc.Stream, secret: bytes, role: str, peer: str, hint: str
) -> None:
    """The HMAC handshake of handshake.py, over a plain or a TLS stream."""
    shake = Handshake(secret, role, peer)
    await stream.send_all(shake.hello())
    hello = await _receive_exactly(stream, HELLO_BYTES, peer, hint)
    if hello.startswith(_TLS_HANDSHAKE_RECORD):
        raise HandshakeFailed(
            f"{peer} began a TLS handshake, but this end was started without TLS: every "
            "cluster member needs the same tls= setting",
            "TLS on one side only",
        )
    proof = shake.receive_hello(hello)
    await stream.send_all(proof)
    try:
        verdict = shake.receive_proof(await _receive_exactly(stream, PROOF_BYTES, peer, hint))
    except Exception:
        await stream.send_all(b"\x00")
        raise
    await stream.send_all(verdict)
    shake.receive_verdict(await _receive_exactly(stream, 1, peer, hint))


# A TLS record of type "handshake" (22), TLS major version 3: how every ClientHello begins.
_TLS_HANDSHAKE_RECORD = b"\x16\x03"


@contextmanager
def _handshake_errors(
    peer: str, *, tls: bool, server_side: bool, timeout_s: float = HANDSHAKE_TIMEOUT_S
) -> Iterator[None]:
    """Bound the handshake by ``timeout_s`` and turn its failures into ProtocolError (a
    HandshakeFailed, except for a wrong secret: AuthenticationError)."""
    try:
        with trio.fail_after(timeout_s):
            yield
    except AuthenticationError:
        raise
    except HandshakeFailed:
        raise
    except ProtocolError as exc:  # a ConnectionError, so the OSError clause would take it
        raise HandshakeFailed(str(exc), "not an actorgrid handshake") from None
    except trio.TooSlowError:
        raise HandshakeFailed(
            f"{peer} did not finish the handshake within {timeout_s:g} s", "handshake timeout"
        ) from None
    except (trio.BrokenResourceError, OSError) as exc:
        if tls:
            message = explain_tls_failure(exc, peer, server_side=server_side)
            kind = "TLS handshake failed"
        else:
            hint = "" if server_side else _PLAIN_CLIENT_HINT
            message = f"{peer} dropped the connection during the handshake: {exc}{hint}"
            kind = "closed during the handshake"
        raise HandshakeFailed(message, kind) from None


# A plain client whose server hangs up during the handshake is most likely talking to a TLS
# server, which drops a connection whose first bytes are not TLS.
_PLAIN_CLIENT_HINT = (
    ": most likely the server expects TLS: pass tls= with the cluster's certificates"
)


@overload
async def open_tcp_frame_stream(
    address: str,
    secret: bytes,
    *,
    max_message_bytes: int = ...,
    tls: None = None,
) -> TcpFrameStream: ...
@overload
async def open_tcp_frame_stream(
    address: str,
    secret: bytes,
    *,
    max_message_bytes: int = ...,
    tls: TLSConfig,
) -> TlsFrameStream: ...
@overload
async def open_tcp_frame_stream(
    address: str,
    secret: bytes,
    *,
    max_message_bytes: int = ...,
    tls: TLSConfig | None,
) -> FrameStream: ...
async def open_tcp_frame_stream(
    address: str,
    secret: bytes,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    tls: TLSConfig | None = None,
) -> TcpFrameStream | TlsFrameStream:
    """Connect to ``host:port`` and authenticate; raises AuthenticationError on a bad secret.

    With ``tls``, the connection is mutual TLS first (ProtocolError if that fails), then the
    secret is checked inside it.
    """
    raise_open_file_limit()
    host, port = split_address(address)
    context = None if tls is None else tls.client_context()
    stream = await trio.open_tcp_stream(host, port)
    try:
        if context is None:
            with _handshake_errors(address, tls=False, server_side=False):
                await _handshake(stream, secret, "client", address, _PLAIN_CLIENT_HINT)
            return TcpFrameStream._adopt(stream, address, max_message_bytes)
        # Addressed by IP and checked against the cluster's CA only: see client_context.
        link = TlsLink.adopt(stream, context, server_side=False)
        try:
            with _handshake_errors(address, tls=True, server_side=False):
                await link.do_handshake()
                await _handshake(link, secret, "client", address, "")
        except BaseException:
            link.close()
            raise
        return TlsFrameStream(link, address, max_message_bytes)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


# The overloads pair each handler with the streams it is given: TcpFrameStream without TLS,
# any FrameStream when TLS may be on. Past them, the handler is only ever called with a stream
# its overload allows.
_Handler = Callable[[Any], Awaitable[None]]


@overload
async def serve_tcp_frame_streams(
    handler: Callable[[TcpFrameStream], Awaitable[None]],
    host: str,
    port: int,
    secret: bytes,
    *,
    max_message_bytes: int = ...,
    tls: None = None,
    limits: ListenLimits | None = None,
    task_status: trio.TaskStatus[str] = ...,
) -> None: ...
@overload
async def serve_tcp_frame_streams(
    handler: Callable[[FrameStream], Awaitable[None]],
    host: str,
    port: int,
    secret: bytes,
    *,
    max_message_bytes: int = ...,
    tls: TLSConfig | None,
    limits: ListenLimits | None = None,
    task_status: trio.TaskStatus[str] = ...,
) -> None: ...
async def serve_tcp_frame_streams(
    handler: _Handler,
    host: str,
    port: int,
    secret: bytes,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    tls: TLSConfig | None = None,
    limits: ListenLimits | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections until cancelled; each authenticated stream goes to ``handler``.

    Reports ``host:port`` through ``task_status``. A peer that fails the handshake is dropped
    and counted in the rejection log; it never reaches ``handler``. ``limits`` (default
    ``ListenLimits()``) bounds the peers still in their handshake: how many at once (the
    oldest of the address holding most is evicted for a new one) and for how long. A failed
    accept (out of file descriptors, say) backs off and carries on. With ``tls``, every client
    must complete mutual TLS before the HMAC handshake, and ``handler`` gets TlsFrameStreams.
    """
    raise_open_file_limit()
    # Made before listening, so unreadable certificates fail the start, not each connection.
    context = None if tls is None else tls.server_context()
    gate = ListenGate(limits or ListenLimits())
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    serve = _Server(handler, secret, max_message_bytes, context, gate)
    async with trio.open_nursery() as nursery:
        await nursery.start(gate.serve_log)
        task_status.started(f"{bound[0]}:{bound[1]}")
        for listener in listeners:
            nursery.start_soon(serve.accept_loop, listener)


class _Server:
    """What every connection of one serve_tcp_frame_streams call shares."""

    def __init__(
        self,
        handler: _Handler,
        secret: bytes,
        max_message_bytes: int,
        context: ssl.SSLContext | None,
        gate: ListenGate,
    ) -> None:
        self.handler = handler
        self.secret = secret
        self.max_message_bytes = max_message_bytes
        self.context = context
        self.gate = gate

    async def accept_loop(self, listener: trio.SocketListener) -> None:
        async with listener, trio.open_nursery() as nursery:
            while True:
                stream = await self.gate.accept(listener)
                nursery.start_soon(self.serve_one, stream)

    async def serve_one(self, stream: trio.SocketStream) -> None:
        try:
            host, port = stream.socket.getpeername()[:2]
            address, peer = host, f"{host}:{port}"
        except OSError:
            address = peer = "unknown peer"
        # This task owns the accepted socket until the handshake hands it to ``framed``: every
        # other way out closes it, the server's own cancellation (a shutdown while a peer is
        # still in its handshake) included.
        framed: TcpFrameStream | TlsFrameStream | None = None
        try:
            with self.gate.handshake(address):
                framed = await self._handshake(stream, peer)
        except Exception as exc:
            kind = exc.kind if isinstance(exc, HandshakeFailed) else "handshake failed"
            if isinstance(exc, AuthenticationError):
                kind = "wrong secret"
            self.gate.rejected(address, kind, str(exc))
        finally:
            if framed is None:  # rejected, evicted (counted by the gate) or cancelled
                await trio.aclose_forcefully(stream)
        if framed is None:
            return
        try:
            await self.handler(framed)
        except Exception:
            # One connection's failure must never take the server down with it.
            log.exception("connection from %s failed", peer)
        finally:
            await framed.aclose()

    async def _handshake(
        self, stream: trio.SocketStream, peer: str
    ) -> TcpFrameStream | TlsFrameStream:
        timeout_s = self.gate.limits.handshake_timeout_s
        if self.context is None:
            with _handshake_errors(peer, tls=False, server_side=True, timeout_s=timeout_s):
                await _handshake(stream, self.secret, "server", peer, "")
            return TcpFrameStream._adopt(stream, peer, self.max_message_bytes)
        link = TlsLink.adopt(stream, self.context, server_side=True)
        try:
            with _handshake_errors(peer, tls=True, server_side=True, timeout_s=timeout_s):
                await link.do_handshake()
                await _handshake(link, self.secret, "server", peer, "")
        except BaseException:
            link.close()
            raise
        return TlsFrameStream(link, peer, self.max_message_bytes)


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} is not of the form host:port")
    return host.strip("[]") or "127.0.0.1", int(port)
