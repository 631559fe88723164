"""The bulk receiver (``_transport/bulk.py``) on a real loopback connection: frames read header
first, a large body straight into memory the reader chose, frames split any way by the
network, and a sender that stalls or hangs up mid-transfer."""

from __future__ import annotations

import functools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from actorgrid._exceptions import ProtocolError
from actorgrid._protocol.codec import decode, encode
from actorgrid._protocol.messages import Payload, Pulse
from actorgrid._protocol.store import ObjectChunk, chunk_head
from actorgrid._transport.base import FrameStream
from actorgrid._transport.bulk import RECEIVE_SLICE_BYTES, BulkReceiver
from actorgrid._transport.tcp import TcpFrameStream, open_tcp_frame_stream, serve_tcp_frame_streams


@asynccontextmanager
async def _pair(idle_s: float = 30.0) -> AsyncIterator[tuple[BulkReceiver, FrameStream]]:
    """A bulk receiver on a real, authenticated loopback connection, and the sending end."""
    secret = secrets.token_bytes(32)
    send_accepted, receive_accepted = trio.open_memory_channel[FrameStream](1)
    done = trio.Event()

    async def handler(stream: FrameStream) -> None:
        await send_accepted.send(stream)
        await done.wait()

    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            functools.partial(serve_tcp_frame_streams), handler, "127.0.0.1", 0, secret
        )
        client = await open_tcp_frame_stream(address, secret)
        assert isinstance(client, TcpFrameStream)
        try:
            yield BulkReceiver(client, idle_s=idle_s), await receive_accepted.receive()
        finally:
            done.set()
            await client.aclose()
            nursery.cancel_scope.cancel(reason="test done")


async def test_a_large_body_lands_in_the_readers_buffer_and_small_frames_decode() -> None:
    data = secrets.token_bytes(3 * RECEIVE_SLICE_BYTES + 12345)  # several slices, odd end
    chunk = ObjectChunk(3, True, 10 * len(data), Payload(b"", (memoryview(data),)))
    async with _pair() as (bulk, sender), trio.open_nursery() as nursery:
        nursery.start_soon(sender.send_frames, [encode(Pulse()), encode(chunk), encode(Pulse())])
        start, rest = await bulk.receive_head()
        assert rest == 0 and isinstance(decode(start), Pulse)
        start, rest = await bulk.receive_head()
        head = chunk_head(memoryview(start)[4:])
        assert head is not None and (head.rid, head.total, head.length) == (
            3,
            10 * len(data),
            rest,
        )
        target = bytearray(len(data) + 10)
        await bulk.receive_into(memoryview(target)[5 : 5 + rest])
        assert target[5 : 5 + rest] == data and target[:5] == bytes(5)
        start, rest = await bulk.receive_head()
        assert rest == 0 and isinstance(decode(start), Pulse), "the next frame is intact"


async def test_a_sender_that_hangs_up_or_stalls_mid_transfer_fails_the_read() -> None:
    async with _pair() as (bulk, sender):
        await sender.send_frames([encode(Pulse())])
        await sender.aclose()
        assert (await bulk.receive_head())[1] == 0
        with pytest.raises(trio.BrokenResourceError, match="closed the connection"):
            await bulk.receive_head()
    async with _pair() as (bulk, sender):
        await sender.send_frames([[b"\x00\x00\x01\x00", b"xy"]])  # its envelope runs past its end
        with pytest.raises(ProtocolError, match="not a frame"):
            await bulk.receive_head()
    async with _pair(idle_s=0.5) as (bulk, sender):
        with pytest.raises(trio.BrokenResourceError, match=r"sent nothing for 0\.5 s"):
            await bulk.receive_into(memoryview(bytearray(100)))


def test_the_chunk_head_is_read_from_the_codecs_envelope_and_nothing_else() -> None:
    data = memoryview(b"abcdef")
    parts = encode(ObjectChunk(7, True, 1000, Payload(b"", (data,))))
    head = chunk_head(bytes(parts[1]))
    assert head is not None and (head.rid, head.ok, head.total, head.length) == (7, True, 1000, 6)
    assert chunk_head(bytes(encode(Pulse())[1])) is None
    assert chunk_head(b"\xc1 not msgpack") is None
    error = encode(ObjectChunk(7, False, 0, Payload(b"boxed error")))
    assert chunk_head(bytes(error[1])) is None, "an error carries no bytes of the file"
