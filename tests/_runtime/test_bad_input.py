"""Bad input at the runtime level, against a live cluster: strangers with the wrong secret or
random bytes, authenticated peers sending garbage, and messages over ``max_message_bytes``.
After each, the cluster must keep working.

The cluster is started with a known secret, so that a test can pass the handshake and then
misbehave.
"""

from __future__ import annotations

import logging
import os
import secrets

import numpy as np
import pytest
import trio

import actorgrid as ag
from actorgrid._protocol.codec import encode
from actorgrid._protocol.framing import frame_header
from actorgrid._protocol.ids import new_node_id, new_object_id, new_worker_id
from actorgrid._protocol.messages import Hello, ObjectValue, Payload, RegisterWorker, WorkerInfo
from actorgrid._runtime.objects import _object_value
from actorgrid._runtime.refs import ObjectEntry
from actorgrid._runtime.serialization import loads_error
from actorgrid._transport.tcp import open_tcp_frame_stream, split_address

SECRET = secrets.token_bytes(32)
MAX_MESSAGE_BYTES = 1_000_000
CLUSTER_OPTIONS = {"num_workers": 2, "max_message_bytes": MAX_MESSAGE_BYTES, "secret": SECRET}
CLOSE_TIMEOUT_S = 15.0  # above the 10 s handshake timeout

pytestmark = pytest.mark.usefixtures("cluster")


@pytest.fixture(autouse=True)
def quiet_rejections(caplog: pytest.LogCaptureFixture) -> None:
    # The runtime logs each rejected or broken connection; that is expected here.
    caplog.set_level(logging.CRITICAL, logger="actorgrid")


@ag.remote
def square(x):
    return x * x


@ag.remote
def nbytes(array):
    return array.nbytes


@ag.remote
def make_bytes(n):
    return np.ones(n, dtype=np.uint8)


@ag.remote
class Counter:
    def __init__(self, payload=None):
        self.value = 0

    def incr(self, payload=None):
        self.value += 1
        return self.value


@ag.remote
async def inbox(ctx: ag.Context):
    async for msg in ctx.mailbox:
        if msg == "stop":
            return "stopped"


def _addresses(cluster: ag.Cluster) -> list[str]:
    return [cluster.address] + [w.address for w in cluster.workers()]


def _assert_cluster_works(cluster: ag.Cluster) -> None:
    assert ag.get([square.remote(i) for i in range(20)], timeout=30) == [i * i for i in range(20)]
    name = f"alive-{os.urandom(6).hex()}"
    counter = Counter.options(name=name).remote()
    assert ag.get(ag.get_actor(name).incr.remote(), timeout=30) == 1
    assert ag.get(counter.incr.remote(), timeout=30) == 2
    assert len(cluster.workers()) == 2


async def _read_until_closed(stream: trio.SocketStream) -> bytes:
    """What the server sent before it closed the connection."""
    received = bytearray()
    with trio.fail_after(CLOSE_TIMEOUT_S):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            received += chunk
    return bytes(received)


# --- strangers -----------------------------------------------------------------------------------


def test_wrong_secret_is_rejected_by_head_and_workers(cluster) -> None:
    async def main() -> None:
        for address in _addresses(cluster):
            with pytest.raises(ag.AuthenticationError):
                await open_tcp_frame_stream(address, secrets.token_bytes(32))

    trio.run(main)
    _assert_cluster_works(cluster)


def test_random_bytes_are_rejected(cluster) -> None:
    async def main() -> None:
        for address in _addresses(cluster):
            host, port = split_address(address)
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                try:
                    await stream.send_all(os.urandom(4096))
                except trio.BrokenResourceError:
                    continue  # closed before we finished writing: rejected
                received = await _read_until_closed(stream)
            # The server said at most its own hello before hanging up: no proof, no frames.
            assert len(received) <= 38, received

    trio.run(main)
    _assert_cluster_works(cluster)


def test_silent_strangers_do_not_block_others(cluster) -> None:
    async def main() -> None:
        idle = []
        try:
            for address in _addresses(cluster):
                host, port = split_address(address)
                idle.append(await trio.open_tcp_stream(host, port))
            # While the strangers say nothing, everyone else is served as usual.
            await trio.to_thread.run_sync(_assert_cluster_works, cluster)
        finally:
            for stream in idle:
                await stream.aclose()

    trio.run(main)


# --- authenticated peers that misbehave --------------------------------------------------------------


def _garbage_after_handshake(address: str, frames: list[list[bytes]]) -> None:
    async def main() -> None:
        stream = await open_tcp_frame_stream(address, SECRET, max_message_bytes=1 << 30)
        try:
            try:
                await stream.send_frames(frames)
            except trio.BrokenResourceError:
                return
            with trio.fail_after(CLOSE_TIMEOUT_S):
                while True:
                    try:
                        frame = await stream.receive_frame()
                    except (trio.BrokenResourceError, ag.ProtocolError):
                        return
                    if frame is None:
                        return  # the server closed the connection
        finally:
            await stream.aclose()

    trio.run(main)


def _hello() -> list[bytes]:
    return list(encode(Hello("driver", "127.0.0.1:1", os.getpid())))


def test_garbage_frames_close_the_connection(cluster) -> None:
    for address in _addresses(cluster):
        _garbage_after_handshake(address, [[os.urandom(64)]])
        _garbage_after_handshake(address, [_hello(), [os.urandom(256)]])
    _assert_cluster_works(cluster)


def test_oversized_and_truncated_frames_close_the_connection(cluster) -> None:
    for address in _addresses(cluster):
        # A body over max_message_bytes.
        _garbage_after_handshake(address, [_hello(), [b"x" * (MAX_MESSAGE_BYTES + 1)]])
        # A header announcing 8 GiB: refused before any body arrives.
        _raw_after_handshake(address, frame_header(8 << 30) + b"partial")
        # A frame cut short by the end of the connection.
        _raw_after_handshake(address, frame_header(100) + b"truncated")
    _assert_cluster_works(cluster)


def _raw_after_handshake(address: str, data: bytes) -> None:
    """Authenticate, say hello, then write ``data`` as raw bytes (not framed) and hang up."""

    async def main() -> None:
        stream = await open_tcp_frame_stream(address, SECRET)
        try:
            await stream.send_frames([_hello()])
            await trio.to_thread.run_sync(_send_raw, stream, data)
        finally:
            await stream.aclose()

    trio.run(main)


def _send_raw(stream, data: bytes) -> None:
    # The frame stream only writes whole frames; its socket is the way to write less.
    sock = stream._sock
    sock.setblocking(True)
    try:
        sock.sendall(data)
    finally:
        sock.setblocking(False)


def test_out_of_place_message_closes_the_connection(cluster) -> None:
    fake = WorkerInfo(new_worker_id(), new_node_id(), "127.0.0.1:9", 1, "nowhere", 1.0)
    for worker in cluster.workers():
        # RegisterWorker is for the head; a worker must not accept it.
        _garbage_after_handshake(worker.address, [_hello(), list(encode(RegisterWorker(1, fake)))])
    _assert_cluster_works(cluster)


# --- max_message_bytes ---------------------------------------------------------------------------


def test_oversized_messages_fail_at_the_call_site(cluster) -> None:
    # Arguments, results and puts over the cap go through the node object store (see
    # test_store_message_cap.py); a message travels inline, so the cap refuses it.
    big = np.zeros(2 * MAX_MESSAGE_BYTES, dtype=np.uint8)
    assert ag.get(nbytes.remote(big), timeout=30) == big.nbytes
    agent = inbox.remote()
    with pytest.raises(ValueError, match="max_message_bytes") as info:
        ag.send(agent, big)
    assert str(MAX_MESSAGE_BYTES) in str(info.value)
    ag.send(agent, "stop")
    assert ag.get(agent, timeout=30) == "stopped"
    _assert_cluster_works(cluster)


def test_results_and_puts_over_the_cap_go_through_the_store(cluster) -> None:
    assert ag.get(make_bytes.remote(2 * MAX_MESSAGE_BYTES), timeout=30).nbytes == (
        2 * MAX_MESSAGE_BYTES
    )
    ref = ag.put(np.zeros(2 * MAX_MESSAGE_BYTES, dtype=np.uint8))
    assert ag.get(nbytes.remote(ref), timeout=30) == 2 * MAX_MESSAGE_BYTES
    _assert_cluster_works(cluster)


def test_an_owner_never_sends_an_object_over_the_cap() -> None:
    # Sent, it would make the borrower close the connection; it is refused with an error.
    entry = ObjectEntry(new_object_id(), "127.0.0.1:1")
    entry.set_value(Payload(b"x" * 101))
    reply = _object_value(7, entry, 100)
    assert not reply.ok
    with pytest.raises(ValueError, match="max_message_bytes=100"):
        raise loads_error(reply.value)
    assert _object_value(7, entry, 101) == ObjectValue(7, True, entry.payload)
