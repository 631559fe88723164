"""TCP specifics against a live loopback server: who gets in, who is turned away, and how the
server copes with peers that misbehave before or after the handshake."""

from __future__ import annotations

import functools
import gc
import logging
import random
import secrets
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from actorgrid._exceptions import AuthenticationError, ProtocolError
from actorgrid._protocol.framing import SMALL_BUFFER_BYTES, frame_header
from actorgrid._protocol.handshake import HELLO_BYTES, PROOF_BYTES, Handshake
from actorgrid._transport.tcp import (
    ListenLimits,
    TcpFrameStream,
    open_tcp_frame_stream,
    serve_tcp_frame_streams,
    split_address,
)

SERVER_HANDSHAKE_TIMEOUT_S = ListenLimits().handshake_timeout_s


class RejectionLog(logging.Handler):
    """Collects the server's "rejected ..." warnings and lets a test wait for them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("rejected"):
            self.messages.append(message)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, count: int) -> list[str]:
        while len(self.messages) < count:
            await self._changed.wait()
        return self.messages

    async def wait_for_text(self, text: str) -> str:
        while True:
            for message in self.messages:
                if text in message:
                    return message
            await self._changed.wait()


@attrs.define
class LiveServer:
    address: str
    secret: bytes
    accepted: trio.MemoryReceiveChannel[TcpFrameStream]
    rejections: RejectionLog
    handler_calls: list[TcpFrameStream]


@asynccontextmanager
async def live_server(
    max_message_bytes: int = 1 << 30, limits: ListenLimits | None = None
) -> AsyncIterator[LiveServer]:
    """serve_tcp_frame_streams on 127.0.0.1, with a handler that hands each stream to the test
    and holds it open until the test is done."""
    secret = secrets.token_bytes(32)
    send_accepted, receive_accepted = trio.open_memory_channel[TcpFrameStream](16)
    handler_calls: list[TcpFrameStream] = []
    test_done = trio.Event()

    async def handler(stream: TcpFrameStream) -> None:
        handler_calls.append(stream)
        await send_accepted.send(stream)
        await test_done.wait()

    rejections = RejectionLog()
    logger = logging.getLogger("actorgrid.transport")
    logger.addHandler(rejections)
    try:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(
                serve_tcp_frame_streams, max_message_bytes=max_message_bytes, limits=limits
            )
            address = await nursery.start(serve, handler, "127.0.0.1", 0, secret)
            try:
                yield LiveServer(address, secret, receive_accepted, rejections, handler_calls)
            finally:
                test_done.set()
                nursery.cancel_scope.cancel(reason="the test using this server is done")
    finally:
        logger.removeHandler(rejections)


@pytest.fixture
async def server() -> AsyncIterator[LiveServer]:
    async with live_server() as s:
        yield s


async def open_raw(address: str) -> trio.SocketStream:
    return await trio.open_tcp_stream(*split_address(address))


async def receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        assert chunk, "the server closed the connection during the handshake"
        data += chunk
    return data


async def receive_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server sends before it closes (a reset counts as a close too: the
    server may close with our unread bytes in its buffer)."""
    data = b""
    try:
        while chunk := await stream.receive_some():
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


async def open_raw_authenticated(address: str, secret: bytes) -> trio.SocketStream:
    """A client that speaks the handshake as documented in handshake.py, step by step, then
    leaves the test free to write any bytes at all."""
    stream = await open_raw(address)
    shake = Handshake(secret, "client", address)
    await stream.send_all(shake.hello())
    await stream.send_all(shake.receive_hello(await receive_exactly(stream, HELLO_BYTES)))
    await stream.send_all(shake.receive_proof(await receive_exactly(stream, PROOF_BYTES)))
    shake.receive_verdict(await receive_exactly(stream, 1))
    return stream


async def check_still_serving(server: LiveServer) -> None:
    """A correct client connects, reaches the handler, and frames flow both ways."""
    calls_before = len(server.handler_calls)
    client = await open_tcp_frame_stream(server.address, server.secret)
    try:
        accepted = await server.accepted.receive()
        assert len(server.handler_calls) == calls_before + 1
        await client.send_frames([[b"ping"]])
        assert await accepted.receive_frame() == b"ping"
        await accepted.send_frames([[b"pong"]])
        assert await client.receive_frame() == b"pong"
    finally:
        await client.aclose()


# --- authentication -----------------------------------------------------------------------


async def test_correct_secret_connects(server: LiveServer) -> None:
    await check_still_serving(server)
    assert server.rejections.messages == []


async def test_wrong_secret_is_refused_and_the_server_keeps_serving(server: LiveServer) -> None:
    with pytest.raises(AuthenticationError, match="secret"):
        await open_tcp_frame_stream(server.address, b"not the cluster secret")
    (message,) = await server.rejections.wait_for(1)
    assert "failed authentication" in message
    assert server.handler_calls == []
    await check_still_serving(server)


async def test_several_wrong_secrets_in_a_row_are_logged_once_then_counted() -> None:
    async with live_server(limits=ListenLimits(log_interval_s=0.5)) as server:
        for attempt in range(3):
            with pytest.raises(AuthenticationError):
                await open_tcp_frame_stream(server.address, f"guess {attempt}".encode())
        summary = await server.rejections.wait_for_text("more connections")
        assert summary.startswith("rejected 2 more connections from 127.0.0.1 in the last")
        assert summary.endswith(": wrong secret")
        first, _ = server.rejections.messages
        assert first.startswith("rejected a connection from 127.0.0.1: ")
        assert "failed authentication" in first
        assert server.handler_calls == []
        await check_still_serving(server)


async def test_wrong_secret_on_the_server_side_is_caught_by_the_client() -> None:
    # The client checks the server too: a server with another secret is not trusted.
    async with live_server() as server:
        with pytest.raises(AuthenticationError, match="secret"):
            await open_tcp_frame_stream(server.address, secrets.token_bytes(32))


async def test_documented_handshake_is_what_the_server_speaks(server: LiveServer) -> None:
    async with await open_raw_authenticated(server.address, server.secret) as raw:
        accepted = await server.accepted.receive()
        await raw.send_all(frame_header(5) + b"hello")
        assert await accepted.receive_frame() == b"hello"


# --- peers that are not actorgrid peers ---------------------------------------------------


async def test_random_bytes_are_rejected(server: LiveServer) -> None:
    garbage = random.Random(7).randbytes(HELLO_BYTES)
    assert not garbage.startswith(b"AGRD")
    async with await open_raw(server.address) as raw:
        await raw.send_all(garbage)
        await receive_until_closed(raw)
    (message,) = await server.rejections.wait_for(1)
    assert "not an actorgrid peer" in message
    assert server.handler_calls == []
    await check_still_serving(server)


async def test_plain_text_client_is_rejected(server: LiveServer) -> None:
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
    async with await open_raw(server.address) as raw:
        await raw.send_all(request)
        await receive_until_closed(raw)
    (message,) = await server.rejections.wait_for(1)
    assert "is not an actorgrid peer (handshake began with b'GET ')" in message
    assert server.handler_calls == []
    await check_still_serving(server)


async def test_client_that_hangs_up_mid_hello_is_rejected(server: LiveServer) -> None:
    async with await open_raw(server.address) as raw:
        await raw.send_all(b"AGRD\x00")
        await raw.send_eof()
        await receive_until_closed(raw)
    (message,) = await server.rejections.wait_for(1)
    assert "closed the connection during the handshake" in message
    await check_still_serving(server)


async def test_half_a_hello_then_silence_times_out(
    server: LiveServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with await open_raw(server.address) as raw:
        await raw.send_all(Handshake(b"any", "client").hello()[: HELLO_BYTES // 2])
        stalled_at = trio.current_time()
        await receive_until_closed(raw)
        # The server gives up exactly when its handshake deadline passes, not before.
        assert trio.current_time() - stalled_at == SERVER_HANDSHAKE_TIMEOUT_S
    (message,) = await server.rejections.wait_for(1)
    assert f"did not finish the handshake within {SERVER_HANDSHAKE_TIMEOUT_S:g} s" in message
    assert server.handler_calls == []
    await check_still_serving(server)


async def test_a_stalled_client_does_not_block_others(server: LiveServer) -> None:
    # Real clock on purpose: under autojump, any wait on I/O would jump straight to the
    # stalled handshake's deadline. The good client is done long before it.
    async with await open_raw(server.address) as stalled:
        await stalled.send_all(b"AG")
        await check_still_serving(server)
        assert server.rejections.messages == []


async def test_a_server_stopped_during_a_handshake_closes_that_connection() -> None:
    # A worker restarted just before shutdown dials in while the server is being cancelled:
    # the connection still in its handshake is closed by the server, not left to the garbage
    # collector (a ResourceWarning, an error under this suite's filters).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with live_server() as server:
            raw = await open_raw(server.address)
            await receive_exactly(raw, HELLO_BYTES)  # the server is in its handshake
        gc.collect()
    async with raw:
        assert await receive_until_closed(raw) == b""
    assert [w.message for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert server.rejections.messages == []  # stopping is not a rejection


async def test_client_refuses_a_server_that_is_not_actorgrid() -> None:
    async def http_server(stream: trio.SocketStream) -> None:
        # Reads what the client sends before answering, and lets the client hang up first,
        # so the client sees the answer rather than a reset.
        async with stream:
            await stream.receive_some()
            await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await receive_until_closed(stream)

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, host="127.0.0.1"), http_server, 0
        )
        port = listener.socket.getsockname()[1]
        with pytest.raises(ProtocolError, match="is not an actorgrid peer"):
            await open_tcp_frame_stream(f"127.0.0.1:{port}", b"secret")
        nursery.cancel_scope.cancel()


# --- after the handshake ------------------------------------------------------------------


async def test_frame_over_max_message_bytes_raises_on_the_receiver(server: LiveServer) -> None:
    client = await open_tcp_frame_stream(server.address, server.secret, max_message_bytes=1000)
    try:
        accepted = await server.accepted.receive()
        await accepted.send_frames([[b"x" * 1000]])  # exactly the limit is fine
        assert await client.receive_frame() == b"x" * 1000
        # TCP checks on the receiving side, where the limit protects memory.
        await accepted.send_frames([[b"x" * 600, b"y" * 401]])
        with pytest.raises(ProtocolError, match=r"1001 bytes exceeds max_message_bytes=1000"):
            await client.receive_frame()
    finally:
        await client.aclose()


async def test_server_enforces_its_own_max_message_bytes() -> None:
    async with live_server(max_message_bytes=64) as server:
        raw = await open_raw_authenticated(server.address, server.secret)
        async with raw:
            accepted = await server.accepted.receive()
            # Only the header: the receiver refuses before the body would be allocated.
            await raw.send_all(frame_header(1 << 40))
            with pytest.raises(ProtocolError, match="max_message_bytes=64"):
                await accepted.receive_frame()


@pytest.mark.parametrize(
    "sent",
    [
        frame_header(100)[:3],  # part of a header
        frame_header(100),  # a header, no body
        frame_header(100) + b"x" * 99,  # all but the last byte
        frame_header(2) + b"ok" + frame_header(100) + b"x" * 10,  # after a whole frame
        frame_header(4 * SMALL_BUFFER_BYTES) + b"x" * SMALL_BUFFER_BYTES,  # a big frame
    ],
    ids=["header", "no-body", "one-short", "after-a-frame", "big-frame"],
)
async def test_connection_closed_mid_frame(server: LiveServer, sent: bytes) -> None:
    raw = await open_raw_authenticated(server.address, server.secret)
    accepted = await server.accepted.receive()

    async def send_then_close() -> None:
        async with raw:
            await raw.send_all(sent)

    async with trio.open_nursery() as nursery:
        # Sent from its own task: more than the socket buffers hold needs a reader meanwhile.
        nursery.start_soon(send_then_close)
        if sent.startswith(frame_header(2) + b"ok"):
            assert await accepted.receive_frame() == b"ok"
        with pytest.raises(ProtocolError, match="closed the connection in the middle of a frame"):
            await accepted.receive_frame()


async def test_connection_closed_between_frames_is_a_clean_end(server: LiveServer) -> None:
    async with await open_raw_authenticated(server.address, server.secret) as raw:
        accepted = await server.accepted.receive()
        await raw.send_all(frame_header(2) + b"ok" + frame_header(0))
    assert await accepted.receive_frame() == b"ok"
    assert await accepted.receive_frame() == b""
    assert await accepted.receive_frame() is None


def test_split_address() -> None:
    assert split_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert split_address("[::1]:9000") == ("::1", 9000)
    assert split_address(":9000") == ("127.0.0.1", 9000)
    for bad in ("localhost", "host:", "host:http"):
        with pytest.raises(ValueError, match="host:port"):
            split_address(bad)


async def test_lone_frames_sent_without_waiting_arrive_whole_and_in_order_past_a_full_socket() -> (
    None
):
    # Lone small frames take send_nowait's one-send path; sent while the reader reads nothing,
    # one of them finds the socket full and is cut (or not sent at all): its tail and every
    # frame after it must still arrive whole, in order, once send_frames finishes them.
    from tests._transport.test_conformance import tcp_frame_stream_pair

    async with tcp_frame_stream_pair() as (a, b):
        filler = random.Random(0).randbytes(3000)
        bodies = []
        for i in range(100_000):
            bodies.append([b"%6d" % i, filler])
            if not a.send_nowait([bodies[-1]]):
                break
        assert len(bodies) < 100_000, "the socket never filled up"
        assert a.pending, "the frame the socket did not take waits for send_frames"
        rest = [[b"rest %d" % i, filler] for i in range(3)]
        with trio.fail_after(30):  # a cut frame would leave the receiver waiting for good
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.send_frames, rest)
                received = [await b.receive_frame() for _ in range(len(bodies) + len(rest))]
    assert [bytes(frame or b"") for frame in received] == [b"".join(p) for p in bodies + rest]
