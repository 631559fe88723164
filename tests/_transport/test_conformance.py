"""One conformance suite for every FrameStream: the in-memory twin, and TCP on loopback both
plain and inside mutual TLS.

Each test gets a connected pair ``(a, b)`` and checks only what the FrameStream interface in
``actorgrid/_transport/base.py`` promises, so a new transport is added by adding a pair here.
"""

from __future__ import annotations

import array
import functools
import random
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio
import trio.testing
import trustme

from actorgrid._transport.base import Buffer, FrameStream
from actorgrid._transport.memory import MemoryNetwork, memory_frame_stream_pair
from actorgrid._transport.tcp import open_tcp_frame_stream, serve_tcp_frame_streams
from actorgrid._transport.tls import TLSConfig

Pair = tuple[FrameStream, FrameStream]


@pytest.fixture(scope="session")
def tls_config(tmp_path_factory: pytest.TempPathFactory) -> TLSConfig:
    """One certificate from a throwaway CA, presented by both ends."""
    ca = trustme.CA()
    folder = tmp_path_factory.mktemp("tls")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(folder / "member.pem")
    )
    return TLSConfig(folder / "member.pem", folder / "member.pem", folder / "ca.pem")


@asynccontextmanager
async def tcp_frame_stream_pair(tls: TLSConfig | None = None) -> AsyncIterator[Pair]:
    """A client stream and the server's end of it, over a real loopback connection."""
    secret = secrets.token_bytes(32)
    send_accepted, receive_accepted = trio.open_memory_channel[FrameStream](1)
    test_done = trio.Event()

    async def handler(stream: FrameStream) -> None:
        await send_accepted.send(stream)
        await test_done.wait()  # the server closes the stream when the handler returns

    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            functools.partial(serve_tcp_frame_streams, tls=tls), handler, "127.0.0.1", 0, secret
        )
        client = await open_tcp_frame_stream(address, secret, tls=tls)
        try:
            yield client, await receive_accepted.receive()
        finally:
            test_done.set()
            await client.aclose()
            nursery.cancel_scope.cancel(reason="the test using this pair is done")


@asynccontextmanager
async def memory_pair() -> AsyncIterator[Pair]:
    a, b = memory_frame_stream_pair()
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


@asynccontextmanager
async def simulated_pair() -> AsyncIterator[Pair]:
    """A connection between two hosts of a simulated network (actorgrid.testing's)."""
    network = MemoryNetwork()
    accepted = trio.Event()
    server: list[FrameStream] = []
    test_done = trio.Event()

    async def handler(stream: FrameStream) -> None:
        server.append(stream)
        accepted.set()
        await test_done.wait()

    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            functools.partial(network.endpoint("b").serve, handler, "b", 0, b"")
        )
        client = await network.endpoint("a").open(address, b"", max_message_bytes=1 << 26)
        await accepted.wait()
        try:
            yield client, server[0]
        finally:
            test_done.set()
            await client.aclose()
            nursery.cancel_scope.cancel(reason="the test using this pair is done")


PAIRS: dict[str, Callable[[TLSConfig], AbstractAsyncContextManager[Pair]]] = {
    "memory": lambda tls: memory_pair(),
    "simulated": lambda tls: simulated_pair(),
    "tcp": lambda tls: tcp_frame_stream_pair(),
    "tls": tcp_frame_stream_pair,
}


@pytest.fixture(params=sorted(PAIRS))
async def pair(request: pytest.FixtureRequest, tls_config: TLSConfig) -> AsyncIterator[Pair]:
    async with PAIRS[request.param](tls_config) as (a, b):
        yield a, b


def random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


async def send_each(stream: FrameStream, bodies: Sequence[Sequence[Buffer]]) -> None:
    for body in bodies:
        await stream.send_frames([body])


async def receive_n(stream: FrameStream, n: int) -> list[bytes]:
    received = []
    for _ in range(n):
        frame = await stream.receive_frame()
        assert frame is not None, f"end of stream after {len(received)} of {n} frames"
        received.append(bytes(frame))
    return received


def joined(body: Sequence[Buffer]) -> bytes:
    return b"".join(bytes(memoryview(part).cast("B")) for part in body)


BIG = random_bytes(20 * 1024 * 1024, seed=20)


def varied_bodies() -> list[list[Buffer]]:
    numbers = array.array("q", range(1000))
    return [
        [b"one part"],
        [],  # an empty body, given as no parts
        [b""],  # and as one empty part
        [b"head:", bytearray(b"middle:"), memoryview(b"tail")],
        [b"", b"between empty parts", b""],
        [memoryview(numbers)],  # a buffer whose items are 8 bytes wide
        [b"\x00" * 7, memoryview(BIG)[: 300 * 1024]],  # bigger than the decoder's shared buffer
        [b"envelope", memoryview(BIG), b"trailer"],  # ~20 MB in three parts
        [b"after the big one"],
    ]


async def test_frames_arrive_in_order_and_intact(pair: Pair) -> None:
    a, b = pair
    bodies = varied_bodies()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_each, a, bodies)
        received = await receive_n(b, len(bodies))
    assert received == [joined(body) for body in bodies]


async def test_peer_is_a_string(pair: Pair) -> None:
    a, b = pair
    assert isinstance(a.peer, str)
    assert isinstance(b.peer, str)


async def test_batches_of_many_bodies(pair: Pair) -> None:
    a, b = pair
    # More parts in one batch than one sendmsg takes, and more frames than the in-memory
    # channel buffers, so both transports must keep going while the receiver catches up.
    batches = [
        [[i.to_bytes(4, "big"), b"-" * (i % 7), random_bytes(i % 300, seed=i)] for i in range(n)]
        for n in (1, 1500, 0, 64, 65)
    ]
    total = sum(len(batch) for batch in batches)
    async with trio.open_nursery() as nursery:

        async def send_batches() -> None:
            for batch in batches:
                await a.send_frames(batch)

        nursery.start_soon(send_batches)
        received = await receive_n(b, total)
    assert received == [joined(body) for batch in batches for body in batch]


async def test_both_directions_at_once(pair: Pair) -> None:
    a, b = pair
    bodies_ab = [[random_bytes(1 << 20, seed=i)] for i in range(8)]
    bodies_ba = [[random_bytes(1 << 20, seed=100 + i)] for i in range(8)]
    results: dict[str, list[bytes]] = {}

    async def receive_into(name: str, stream: FrameStream, n: int) -> None:
        results[name] = await receive_n(stream, n)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_each, a, bodies_ab)
        nursery.start_soon(send_each, b, bodies_ba)
        nursery.start_soon(receive_into, "b", b, len(bodies_ab))
        nursery.start_soon(receive_into, "a", a, len(bodies_ba))
    assert results["b"] == [joined(body) for body in bodies_ab]
    assert results["a"] == [joined(body) for body in bodies_ba]


async def test_clean_eof_after_the_peer_closes(pair: Pair) -> None:
    a, b = pair
    await a.send_frames([[b"first"], [b"second"], []])
    await a.aclose()
    # Frames sent before the close are still delivered, then the end of stream, for good.
    assert await receive_n(b, 3) == [b"first", b"second", b""]
    assert await b.receive_frame() is None
    assert await b.receive_frame() is None


async def test_clean_eof_with_nothing_sent(pair: Pair) -> None:
    a, b = pair
    await b.aclose()
    assert await a.receive_frame() is None


async def test_aclose_is_idempotent(pair: Pair) -> None:
    a, b = pair
    await a.aclose()
    await a.aclose()
    await b.aclose()
    await b.aclose()
    await a.aclose()


async def test_receive_after_aclose_raises_closed(pair: Pair) -> None:
    a, b = pair
    await a.send_frames([[b"never read"]])
    await b.aclose()
    # Closing drops what was received but not read, with the buffers holding it.
    with pytest.raises(trio.ClosedResourceError):
        await b.receive_frame()


async def test_aclose_while_a_receive_waits_on_the_peer(pair: Pair) -> None:
    a, b = pair
    async with trio.open_nursery() as nursery:
        result: list[bytes | bytearray | None] = []

        async def receive() -> None:
            result.append(await b.receive_frame())

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        await a.aclose()
    assert result == [None]


async def test_send_nowait_leaves_the_rest_to_send_frames(
    pair: Pair, request: pytest.FixtureRequest
) -> None:
    a, b = pair
    # More than any socket buffer takes at once, so a real transport has some left pending.
    first = [[b"small"], [memoryview(BIG)[: 8 * 1024 * 1024]], [b"last of the first"]]
    second = [[b"second"]]
    sent_all = a.send_nowait(first)
    assert a.pending is not sent_all
    async with trio.open_nursery() as nursery:

        async def send_rest() -> None:
            await a.send_frames(second)
            assert not a.pending

        nursery.start_soon(send_rest)
        received = await receive_n(b, len(first) + len(second))
    assert received == [joined(body) for body in first + second]
    assert a.send_nowait([]), "with nothing queued, sending nothing sends everything"
