"""The listener's shell around admission.py, live on loopback: eviction of idle handshakes,
the configurable handshake deadline, accept() failures, buffers freed with their connection,
and the open-file limit."""

from __future__ import annotations

import errno
import functools
import logging
import resource
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from actorgrid._exceptions import ProtocolError
from actorgrid._protocol.framing import GROWTH_START_BYTES, frame_header
from actorgrid._protocol.handshake import HELLO_BYTES, PROOF_BYTES, Handshake
from actorgrid._transport.admission import ACCEPT_BACKOFF_MIN_S, ListenLimits
from actorgrid._transport.listen import ListenGate
from actorgrid._transport.tcp import (
    TcpFrameStream,
    open_tcp_frame_stream,
    serve_tcp_frame_streams,
    split_address,
)


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@asynccontextmanager
async def serving(
    limits: ListenLimits,
) -> AsyncIterator[tuple[str, bytes, Warnings, list[TcpFrameStream]]]:
    secret = secrets.token_bytes(32)
    accepted: list[TcpFrameStream] = []
    done = trio.Event()

    async def handler(stream: TcpFrameStream) -> None:
        accepted.append(stream)
        await done.wait()

    warnings = Warnings()
    logger = logging.getLogger("actorgrid.transport")
    logger.addHandler(warnings)
    try:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(serve_tcp_frame_streams, limits=limits)
            address = await nursery.start(serve, handler, "127.0.0.1", 0, secret)
            try:
                yield address, secret, warnings, accepted
            finally:
                done.set()
                nursery.cancel_scope.cancel(reason="the test is done")
    finally:
        logger.removeHandler(warnings)


async def closed_by_server(stream: trio.SocketStream) -> None:
    """Read (the server's hello, at most) until the server closes the connection."""
    try:
        while await stream.receive_some():
            pass
    except trio.BrokenResourceError:
        pass  # a reset is a close too


async def test_the_oldest_idle_handshake_makes_room_for_a_new_client() -> None:
    limits = ListenLimits(max_unauthenticated=2, handshake_timeout_s=600)
    async with serving(limits) as (address, secret, warnings, _):
        first = await trio.open_tcp_stream(*split_address(address))
        second = await trio.open_tcp_stream(*split_address(address))
        await trio.testing.wait_all_tasks_blocked()
        # Both slots are taken by strangers; a real client still gets in, by evicting the
        # oldest of them.
        client = await open_tcp_frame_stream(address, secret)
        await client.aclose()
        with trio.fail_after(30):  # long before the handshake deadline
            await closed_by_server(first)
        assert any("evicted: too many unauthenticated connections" in m for m in warnings.messages)
        await first.aclose()
        await second.aclose()


async def test_the_handshake_deadline_is_configurable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(ListenLimits(handshake_timeout_s=1.5)) as (address, _, warnings, _):
        async with await trio.open_tcp_stream(*split_address(address)) as raw:
            connected_at = trio.current_time()
            await closed_by_server(raw)
            assert trio.current_time() - connected_at == 1.5
        await trio.testing.wait_all_tasks_blocked()
        assert any("did not finish the handshake within 1.5 s" in m for m in warnings.messages)


class FailingListener:
    """Fails accept() with ``error`` ``failures`` times, then hands out ``stream``."""

    def __init__(self, failures: int, error: OSError, stream: object) -> None:
        self.failures = failures
        self.error = error
        self.stream = stream

    async def accept(self) -> object:
        await trio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            raise self.error
        return self.stream


async def test_accept_failures_back_off_and_never_raise(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    gate = ListenGate(ListenLimits())
    stream = object()
    listener = FailingListener(5, OSError(errno.EMFILE, "Too many open files"), stream)
    started = trio.current_time()
    with caplog.at_level(logging.WARNING, logger="actorgrid.transport"):
        assert await gate.accept(listener) is stream  # type: ignore[arg-type]
    # 10, 20, 40, 80 and 160 ms: doubling from the first back-off.
    assert trio.current_time() - started == pytest.approx(31 * ACCEPT_BACKOFF_MIN_S)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("accept failed: EMFILE"), lines


async def test_running_out_of_descriptors_evicts_an_idle_handshake(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = ListenGate(ListenLimits())
    evicted = trio.Event()

    async def idle_handshake(task_status: trio.TaskStatus[None]) -> None:
        with gate.handshake("10.0.0.1") as scope:
            task_status.started()
            await trio.sleep_forever()
        assert scope.cancelled_caught
        evicted.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(idle_handshake)
        listener = FailingListener(1, OSError(errno.EMFILE, "Too many open files"), object())
        await gate.accept(listener)  # type: ignore[arg-type]
        await evicted.wait()
    assert len(gate.admission) == 0


async def test_a_connection_closed_mid_frame_frees_its_buffer() -> None:
    async with serving(ListenLimits()) as (address, secret, _, accepted):
        raw = await trio.open_tcp_stream(*split_address(address))
        shake = Handshake(secret, "client")
        await raw.send_all(shake.hello())
        await raw.send_all(shake.receive_hello(await _exactly(raw, HELLO_BYTES)))
        await raw.send_all(shake.receive_proof(await _exactly(raw, PROOF_BYTES)))
        shake.receive_verdict(await _exactly(raw, 1))
        while not accepted:
            await trio.sleep(0.01)
        (stream,) = accepted
        async with trio.open_nursery() as nursery:

            async def send_then_close() -> None:
                async with raw:
                    await raw.send_all(frame_header(1 << 30) + b"x" * 3 * GROWTH_START_BYTES)

            nursery.start_soon(send_then_close)
            with pytest.raises(ProtocolError, match="in the middle of a frame"):
                await stream.receive_frame()
        # The decoder held what arrived, not what the header announced.
        assert stream._decoder.buffered_bytes < 8 * GROWTH_START_BYTES
        await stream.aclose()
        assert stream._decoder.buffered_bytes == 0


async def _exactly(stream: trio.SocketStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        assert chunk
        data += chunk
    return data


_RAISE_LIMIT = """
import resource
from actorgrid._transport.listen import raise_open_file_limit
raise_open_file_limit()
print(*resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 512:
        pytest.skip(f"the hard open-file limit here is {hard}: too low to lower it further")
    low = 256
    out = subprocess.run(
        [sys.executable, "-c", _RAISE_LIMIT],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard)),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    raised = int(out[0])
    assert raised > low
    assert raised == hard or hard == resource.RLIM_INFINITY
