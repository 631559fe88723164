"""The receive buffer of a connection, over a live loopback TCP connection: small while the
connection carries small frames (a head holds one per node and driver), large frames still
whole, and a buffer grown for medium frames given back after a lull."""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from actorgrid._protocol.framing import (
    IDLE_BUFFER_BYTES,
    SHRINK_AFTER_READS,
    SMALL_BUFFER_BYTES,
)
from actorgrid._transport.tcp import TcpFrameStream, open_tcp_frame_stream, serve_tcp_frame_streams


@asynccontextmanager
async def connected_pair() -> AsyncIterator[tuple[TcpFrameStream, TcpFrameStream]]:
    """(client, server side) of one authenticated loopback connection."""
    secret = secrets.token_bytes(32)
    send_accepted, receive_accepted = trio.open_memory_channel[TcpFrameStream](1)
    done = trio.Event()

    async def handler(stream: TcpFrameStream) -> None:
        await send_accepted.send(stream)
        await done.wait()

    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_tcp_frame_streams, handler, "127.0.0.1", 0, secret)
        client = await open_tcp_frame_stream(address, secret)
        try:
            yield client, await receive_accepted.receive()
        finally:
            done.set()
            await client.aclose()
            nursery.cancel_scope.cancel(reason="the test is done with the connection")


def shared_bytes(stream: TcpFrameStream) -> int:
    return stream._decoder.shared_buffer_bytes


async def ping_pong(client: TcpFrameStream, server: TcpFrameStream, times: int) -> None:
    # One small frame each way at a time: each arrives in a read of its own.
    for i in range(times):
        await client.send_frames([[f"ping {i}".encode()]])
        assert await server.receive_frame() == f"ping {i}".encode()
        await server.send_frames([[b"pong"]])
        assert await client.receive_frame() == b"pong"


async def test_the_buffer_of_a_connection_with_small_frames_is_small() -> None:
    async with connected_pair() as (client, server):
        await ping_pong(client, server, 3)
        assert shared_bytes(server) == shared_bytes(client) == IDLE_BUFFER_BYTES
        assert IDLE_BUFFER_BYTES <= SMALL_BUFFER_BYTES // 16


async def test_large_and_medium_frames_round_trip_and_the_buffer_shrinks_after() -> None:
    rng = random.Random(7)
    large = rng.randbytes(8 << 20)  # a map of its own
    medium = rng.randbytes(SMALL_BUFFER_BYTES - 100)  # the shared buffer, grown to hold it
    async with connected_pair() as (client, server):
        async with trio.open_nursery() as nursery:
            # From a task of its own: more than the socket buffers hold needs a reader meanwhile.
            nursery.start_soon(client.send_frames, [[large], [medium], [medium]])
            assert await server.receive_frame() == large
            assert await server.receive_frame() == medium
            assert await server.receive_frame() == medium
        assert shared_bytes(server) > IDLE_BUFFER_BYTES  # the medium frames grew it
        await ping_pong(client, server, SHRINK_AFTER_READS)
        assert shared_bytes(server) == IDLE_BUFFER_BYTES
        # And grown again when needed.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_frames, [[medium]])
            assert await client.receive_frame() == medium
