"""The bulk receiver (``_transport/bulk.py``) inside mutual TLS, on a real loopback connection:
a large body decrypted straight into memory the reader chose, the frames around it intact, and
a sender that hangs up (with or without close_notify) or stalls mid-transfer."""

from __future__ import annotations

import functools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

from actorgrid._protocol.codec import decode, encode
from actorgrid._protocol.messages import Payload, Pulse
from actorgrid._protocol.store import ObjectChunk, chunk_head
from actorgrid._transport.base import FrameStream
from actorgrid._transport.bulk import RECEIVE_SLICE_BYTES, BulkReceiver
from actorgrid._transport.tcp import open_tcp_frame_stream, serve_tcp_frame_streams
from actorgrid._transport.tls import TLSConfig, TlsFrameStream


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSConfig:
    folder: Path = tmp_path_factory.mktemp("tls-bulk")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(folder / "member.pem")
    )
    return TLSConfig(folder / "member.pem", folder / "member.pem", folder / "ca.pem")


@asynccontextmanager
async def _pair(
    tls: TLSConfig, idle_s: float = 30.0
) -> AsyncIterator[tuple[BulkReceiver, FrameStream]]:
    """A bulk receiver on a real TLS loopback connection, and the sending end."""
    secret = secrets.token_bytes(32)
    send_accepted, receive_accepted = trio.open_memory_channel[FrameStream](1)
    done = trio.Event()

    async def handler(stream: FrameStream) -> None:
        await send_accepted.send(stream)
        await done.wait()

    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            functools.partial(serve_tcp_frame_streams, tls=tls), handler, "127.0.0.1", 0, secret
        )
        client = await open_tcp_frame_stream(address, secret, tls=tls)
        assert isinstance(client, TlsFrameStream)
        try:
            yield BulkReceiver(client, idle_s=idle_s), await receive_accepted.receive()
        finally:
            done.set()
            await client.aclose()
            nursery.cancel_scope.cancel(reason="test done")


async def test_a_large_body_is_decrypted_into_the_readers_buffer(tls: TLSConfig) -> None:
    data = secrets.token_bytes(2 * RECEIVE_SLICE_BYTES + 12345)  # several slices, odd end
    chunk = ObjectChunk(3, True, 10 * len(data), Payload(b"", (memoryview(data),)))
    async with _pair(tls) as (bulk, sender), trio.open_nursery() as nursery:
        nursery.start_soon(sender.send_frames, [encode(Pulse()), encode(chunk), encode(Pulse())])
        start, rest = await bulk.receive_head()
        assert rest == 0 and isinstance(decode(start), Pulse)
        start, rest = await bulk.receive_head()
        head = chunk_head(memoryview(start)[4:])
        assert head is not None and (head.rid, head.length) == (3, rest)
        target = bytearray(len(data) + 10)
        await bulk.receive_into(memoryview(target)[5 : 5 + rest])
        assert target[5 : 5 + rest] == data and target[:5] == bytes(5)
        start, rest = await bulk.receive_head()
        assert rest == 0 and isinstance(decode(start), Pulse), "the next frame is intact"
        await bulk.send([encode(Pulse())])  # and the other way, on the same session
        assert isinstance(decode(bytes(await sender.receive_frame() or b"")), Pulse)


async def test_a_tls_sender_that_hangs_up_or_stalls_mid_transfer_fails_the_read(
    tls: TLSConfig,
) -> None:
    async with _pair(tls) as (bulk, sender):
        await sender.send_frames([encode(Pulse())])
        await sender.aclose()  # close_notify: a clean end, but in the middle of a transfer
        assert (await bulk.receive_head())[1] == 0
        with pytest.raises(trio.BrokenResourceError, match="closed the connection mid-transfer"):
            await bulk.receive_head()
    async with _pair(tls, idle_s=0.5) as (bulk, sender):
        with pytest.raises(trio.BrokenResourceError, match=r"sent nothing for 0\.5 s"):
            await bulk.receive_into(memoryview(bytearray(100)))
