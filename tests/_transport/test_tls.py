"""Mutual TLS against a live loopback server: who gets in, who is turned away and what each
side is told, how a TLS stream ends, and how TLSConfig travels to other processes."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import secrets
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
import trustme

from actorgrid._exceptions import AuthenticationError, ProtocolError
from actorgrid._protocol.framing import frame_header
from actorgrid._protocol.handshake import HELLO_BYTES, PROOF_BYTES, Handshake
from actorgrid._transport.base import FrameStream
from actorgrid._transport.tcp import (
    ListenLimits,
    open_tcp_frame_stream,
    serve_tcp_frame_streams,
    split_address,
)
from actorgrid._transport.tls import CLOSE_NOTIFY_TIMEOUT_S, TLSConfig, TlsFrameStream

SERVER_HANDSHAKE_TIMEOUT_S = ListenLimits().handshake_timeout_s


def write_tls_config(ca: trustme.CA, folder: Path, name: str) -> TLSConfig:
    """A certificate from ``ca`` for 127.0.0.1, and ``ca`` itself as the trust root."""
    folder.mkdir(parents=True, exist_ok=True)
    ca.cert_pem.write_to_path(str(folder / f"{name}-ca.pem"))
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / f"{name}.pem"))
    return TLSConfig(folder / f"{name}.pem", folder / f"{name}.pem", folder / f"{name}-ca.pem")


@attrs.frozen
class Certificates:
    cluster: TLSConfig  # what the server uses
    stranger: TLSConfig  # a certificate and CA from somewhere else entirely
    impostor: TLSConfig  # a stranger's certificate, trusting the cluster's CA


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("certs")
    cluster = write_tls_config(trustme.CA(), folder, "cluster")
    stranger = write_tls_config(trustme.CA(), folder, "stranger")
    impostor = TLSConfig(stranger.certfile, stranger.keyfile, cluster.cafile)
    return Certificates(cluster, stranger, impostor)


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


@attrs.define
class LiveServer:
    address: str
    secret: bytes
    tls: TLSConfig | None
    accepted: trio.MemoryReceiveChannel[FrameStream]
    rejections: RejectionLog
    handler_calls: list[FrameStream]


@asynccontextmanager
async def live_server(tls: TLSConfig | None) -> AsyncIterator[LiveServer]:
    """serve_tcp_frame_streams on 127.0.0.1, with a handler that hands each stream to the test
    and holds it open until the test is done."""
    secret = secrets.token_bytes(32)
    send_accepted, receive_accepted = trio.open_memory_channel[FrameStream](16)
    handler_calls: list[FrameStream] = []
    test_done = trio.Event()

    async def handler(stream: FrameStream) -> None:
        handler_calls.append(stream)
        await send_accepted.send(stream)
        await test_done.wait()

    rejections = RejectionLog()
    logger = logging.getLogger("actorgrid.transport")
    logger.addHandler(rejections)
    try:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(
                lambda task_status: serve_tcp_frame_streams(
                    handler, "127.0.0.1", 0, secret, tls=tls, task_status=task_status
                )
            )
            try:
                yield LiveServer(address, secret, tls, receive_accepted, rejections, handler_calls)
            finally:
                test_done.set()
                nursery.cancel_scope.cancel(reason="the test using this server is done")
    finally:
        logger.removeHandler(rejections)


@pytest.fixture
async def server(certs: Certificates) -> AsyncIterator[LiveServer]:
    async with live_server(certs.cluster) as s:
        yield s


async def check_still_serving(server: LiveServer) -> None:
    """A correct client connects, reaches the handler, and frames flow both ways."""
    calls_before = len(server.handler_calls)
    client = await open_tcp_frame_stream(server.address, server.secret, tls=server.tls)
    try:
        accepted = await server.accepted.receive()
        assert len(server.handler_calls) == calls_before + 1
        await client.send_frames([[b"ping"]])
        assert await accepted.receive_frame() == b"ping"
        await accepted.send_frames([[b"pong"]])
        assert await client.receive_frame() == b"pong"
    finally:
        await client.aclose()


def context_without_a_certificate(certs: Certificates) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs.cluster.cafile)
    context.check_hostname = False
    return context


async def open_raw_tls_authenticated(
    address: str, secret: bytes, context: ssl.SSLContext
) -> trio.SSLStream[trio.SocketStream]:
    """TLS, then the handshake of handshake.py step by step, leaving the test free to write
    any bytes at all inside the TLS session."""
    stream = trio.SSLStream(await trio.open_tcp_stream(*split_address(address)), context)
    shake = Handshake(secret, "client", address)

    async def receive_exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = await stream.receive_some(n - len(data))
            assert chunk, "the server closed the connection during the handshake"
            data += chunk
        return data

    try:
        await stream.do_handshake()
        await stream.send_all(shake.hello())
        await stream.send_all(shake.receive_hello(await receive_exactly(HELLO_BYTES)))
        await stream.send_all(shake.receive_proof(await receive_exactly(PROOF_BYTES)))
        shake.receive_verdict(await receive_exactly(1))
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


# --- who gets in ------------------------------------------------------------------------------


async def test_mutual_tls_client_round_trips_frames(server: LiveServer) -> None:
    client = await open_tcp_frame_stream(server.address, server.secret, tls=server.tls)
    async with trio.open_nursery() as nursery:
        accepted = await server.accepted.receive()
        assert isinstance(client, TlsFrameStream)
        assert isinstance(accepted, TlsFrameStream)
        nursery.start_soon(client.send_frames, [[b"one"], [b"two", b"-parts"], []])
        assert [await accepted.receive_frame() for _ in range(3)] == [b"one", b"two-parts", b""]
        await accepted.send_frames([[b"back"]])
        assert await client.receive_frame() == b"back"
    await client.aclose()
    assert await accepted.receive_frame() is None
    assert server.rejections.messages == []


async def test_wrong_secret_over_tls_is_refused(server: LiveServer) -> None:
    # The certificate is good, so TLS passes; the cluster secret is still checked inside it.
    with pytest.raises(AuthenticationError, match="secret"):
        await open_tcp_frame_stream(server.address, b"not the cluster secret", tls=server.tls)
    (message,) = await server.rejections.wait_for(1)
    assert "failed authentication" in message
    assert server.handler_calls == []
    await check_still_serving(server)


# --- who is turned away -----------------------------------------------------------------------


async def test_plain_text_client_is_rejected(server: LiveServer) -> None:
    with pytest.raises(ProtocolError, match="the server expects TLS: pass tls="):
        await open_tcp_frame_stream(server.address, server.secret)
    (message,) = await server.rejections.wait_for(1)
    assert "does not speak TLS" in message
    assert "started without tls=" in message
    assert server.handler_calls == []
    await check_still_serving(server)


async def test_certificate_from_another_ca_is_rejected(
    server: LiveServer, certs: Certificates
) -> None:
    with pytest.raises(ProtocolError, match="refused this process's certificate"):
        await open_tcp_frame_stream(server.address, server.secret, tls=certs.impostor)
    (message,) = await server.rejections.wait_for(1)
    assert "presented a certificate that is not signed by the cluster's CA" in message
    assert server.handler_calls == []
    await check_still_serving(server)


async def test_client_refuses_a_server_certificate_from_another_ca(
    server: LiveServer, certs: Certificates
) -> None:
    with pytest.raises(ProtocolError, match=r"is not signed by the cluster's CA in tls\.cafile"):
        await open_tcp_frame_stream(server.address, server.secret, tls=certs.stranger)
    await server.rejections.wait_for(1)  # the server sees the client hang up mid-handshake
    assert server.handler_calls == []
    await check_still_serving(server)


async def test_client_without_a_certificate_is_rejected(
    server: LiveServer, certs: Certificates
) -> None:
    with pytest.raises(trio.BrokenResourceError):
        await open_raw_tls_authenticated(
            server.address, server.secret, context_without_a_certificate(certs)
        )
    (message,) = await server.rejections.wait_for(1)
    assert "presented no certificate" in message
    assert "mutual TLS" in message
    assert server.handler_calls == []
    await check_still_serving(server)


async def test_tls_client_on_a_plain_server_is_told_so(certs: Certificates) -> None:
    async with live_server(tls=None) as server:
        with pytest.raises(ProtocolError, match="the server was most likely started without TLS"):
            await open_tcp_frame_stream(server.address, server.secret, tls=certs.cluster)
        (message,) = await server.rejections.wait_for(1)
        assert "began a TLS handshake, but this end was started without TLS" in message
        assert server.handler_calls == []
        await check_still_serving(server)


async def test_silent_client_times_out_within_the_handshake_limit(
    server: LiveServer, autojump_clock: trio.testing.MockClock
) -> None:
    # Connected, but never starts TLS: the deadline covers the TLS handshake too.
    async with await trio.open_tcp_stream(*split_address(server.address)) as raw:
        connected_at = trio.current_time()
        with contextlib.suppress(trio.BrokenResourceError):  # a reset is a close too
            while await raw.receive_some():
                pass  # pragma: no cover  (a TLS server sends nothing before the ClientHello)
        assert trio.current_time() - connected_at == SERVER_HANDSHAKE_TIMEOUT_S
    (message,) = await server.rejections.wait_for(1)
    assert f"did not finish the handshake within {SERVER_HANDSHAKE_TIMEOUT_S:g} s" in message


async def no_handler(stream: FrameStream) -> None:
    raise AssertionError("no connection was expected")  # pragma: no cover


async def test_unusable_certificates_fail_the_server_start(
    certs: Certificates, tmp_path: Path
) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    broken = TLSConfig(not_pem, certs.cluster.keyfile, certs.cluster.cafile)
    with pytest.raises(ValueError, match="could not load the certificate certfile="):
        await serve_tcp_frame_streams(no_handler, "127.0.0.1", 0, b"secret", tls=broken)
    mismatched = TLSConfig(certs.cluster.certfile, certs.stranger.keyfile, certs.cluster.cafile)
    with pytest.raises(ValueError, match="the key must be the one the certificate was issued"):
        mismatched.client_context()
    with pytest.raises(ValueError, match="cluster's CA certificate from cafile="):
        TLSConfig(certs.cluster.certfile, certs.cluster.keyfile, not_pem).server_context()


# --- how a TLS stream ends --------------------------------------------------------------------


async def test_tls_cut_mid_frame_is_a_protocol_error(
    server: LiveServer, certs: Certificates
) -> None:
    raw = await open_raw_tls_authenticated(
        server.address, server.secret, certs.cluster.client_context()
    )
    accepted = await server.accepted.receive()
    await raw.send_all(frame_header(2) + b"ok" + frame_header(100) + b"x" * 10)
    await trio.aclose_forcefully(raw.transport_stream)  # no close_notify
    assert await accepted.receive_frame() == b"ok"
    with pytest.raises(ProtocolError, match="closed the connection in the middle of a frame"):
        await accepted.receive_frame()


async def test_tls_cut_between_frames_is_a_broken_stream(
    server: LiveServer, certs: Certificates
) -> None:
    # Over TLS an end without close_notify is told apart from a clean close, even between
    # frames: it is what a crash or someone cutting the connection looks like.
    raw = await open_raw_tls_authenticated(
        server.address, server.secret, certs.cluster.client_context()
    )
    accepted = await server.accepted.receive()
    await raw.send_all(frame_header(2) + b"ok")
    await trio.aclose_forcefully(raw.transport_stream)
    assert await accepted.receive_frame() == b"ok"
    with pytest.raises(trio.BrokenResourceError, match="without ending the TLS session"):
        await accepted.receive_frame()


async def test_aclose_is_bounded_when_a_send_is_stuck(
    server: LiveServer, autojump_clock: trio.testing.MockClock
) -> None:
    client = await open_tcp_frame_stream(server.address, server.secret, tls=server.tls)
    await server.accepted.receive()  # and never read: the client's send fills every buffer
    async with trio.open_nursery() as nursery:

        async def send_forever() -> None:
            with pytest.raises((trio.ClosedResourceError, trio.BrokenResourceError)):
                while True:
                    await client.send_frames([[b"x" * (1 << 20)]])

        nursery.start_soon(send_forever)
        await trio.testing.wait_all_tasks_blocked()
        closing_at = trio.current_time()
        await client.aclose()  # close_notify cannot go out: it waits behind the stuck send
        assert trio.current_time() - closing_at == CLOSE_NOTIFY_TIMEOUT_S
        await client.aclose()


# --- TLSConfig ----------------------------------------------------------------------------


def test_missing_file_is_named_with_its_role(certs: Certificates, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(FileNotFoundError) as info:
        TLSConfig(certs.cluster.certfile, certs.cluster.keyfile, missing)
    message = str(info.value)
    assert f"cafile={str(missing)!r} does not exist" in message
    assert "the cluster's CA certificate" in message
    with pytest.raises(FileNotFoundError, match=r"keyfile=.* is a directory"):
        TLSConfig(certs.cluster.certfile, tmp_path, certs.cluster.cafile)


def test_relative_paths_are_made_absolute(
    certs: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Worker processes need not share the cwd of the process that made the config.
    monkeypatch.chdir(Path(certs.cluster.certfile).parent)
    config = TLSConfig("cluster.pem", "cluster.pem", "cluster-ca.pem")
    assert config == certs.cluster
    assert all(os.path.isabs(path) for path in config.to_dict().values())


def test_config_travels_as_json_and_pickle(certs: Certificates) -> None:
    config = certs.impostor
    line = json.dumps({"tls": config.to_dict()})
    assert TLSConfig.from_dict(json.loads(line)["tls"]) == config
    assert pickle.loads(pickle.dumps(config)) == config
    assert isinstance(pickle.loads(pickle.dumps(config)).client_context(), ssl.SSLContext)


def test_from_dict_wants_exactly_the_fields(certs: Certificates) -> None:
    data = certs.cluster.to_dict()
    with pytest.raises(ValueError, match="must have exactly the keys"):
        TLSConfig.from_dict({k: v for k, v in data.items() if k != "keyfile"})
    with pytest.raises(ValueError, match="must have exactly the keys"):
        TLSConfig.from_dict({**data, "password": "x"})


def test_contexts_are_mutual_tls_from_tls_1_2(certs: Certificates) -> None:
    server = certs.cluster.server_context()
    client = certs.cluster.client_context()
    for context in (server, client):
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
        # The cluster's CA is the only trust root, not the system's.
        assert len(context.get_ca_certs()) == 1
    assert not client.check_hostname


# --- big frames and many small ones (tlslink.py reads many records per receive) -------------


def numbered(size: int, seed: int) -> bytes:
    """``size`` bytes that differ from frame to frame and along the frame, so that a lost,
    repeated or misplaced piece changes them."""
    pattern = bytes((seed * 31 + i * 7) % 251 for i in range(251))
    return (pattern * (size // 251 + 1))[:size]


async def test_multi_megabyte_and_small_frames_both_ways_at_once(server: LiveServer) -> None:
    # Both ends send and receive at the same time, so reads and writes of one TLS session
    # interleave (the outgoing data of each side shares one flush, tlslink.py).
    big_sizes = [12 << 20, 3 << 20 | 12345, 1 << 20]
    small = [numbered(n % 3000, n) for n in range(600)]
    client = await open_tcp_frame_stream(server.address, server.secret, tls=server.tls)
    accepted = await server.accepted.receive()
    try:

        async def send(stream: FrameStream, seed: int) -> None:
            for i, size in enumerate(big_sizes):
                await stream.send_frames([[numbered(size, seed + i)]])
                await stream.send_frames([[frame] for frame in small[i::3]])

        async def receive(stream: FrameStream, seed: int) -> None:
            for i, size in enumerate(big_sizes):
                frame = await stream.receive_frame()
                assert frame is not None and len(frame) == size
                assert bytes(frame) == numbered(size, seed + i)
                for expected in small[i::3]:
                    assert await stream.receive_frame() == expected

        with trio.fail_after(120):  # generous: seconds even on a loaded machine
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, client, 1)
                nursery.start_soon(send, accepted, 2)
                nursery.start_soon(receive, accepted, 1)
                nursery.start_soon(receive, client, 2)
    finally:
        await client.aclose()
    assert await accepted.receive_frame() is None


async def test_tls_cut_in_a_big_frame_is_a_protocol_error(
    server: LiveServer, certs: Certificates
) -> None:
    raw = await open_raw_tls_authenticated(
        server.address, server.secret, certs.cluster.client_context()
    )
    accepted = await server.accepted.receive()
    async with trio.open_nursery() as nursery:

        async def send_part_and_die() -> None:
            await raw.send_all(frame_header(10 << 20) + bytes(3 << 20))
            await trio.aclose_forcefully(raw.transport_stream)  # no close_notify

        nursery.start_soon(send_part_and_die)
        with pytest.raises(ProtocolError, match="closed the connection in the middle of a frame"):
            await accepted.receive_frame()


async def test_garbage_after_the_tls_handshake_is_a_clear_error_and_the_server_serves_on(
    server: LiveServer, certs: Certificates
) -> None:
    raw = await open_raw_tls_authenticated(
        server.address, server.secret, certs.cluster.client_context()
    )
    accepted = await server.accepted.receive()
    try:
        await raw.send_all(frame_header(2) + b"ok")
        # Bytes outside the TLS session (not a record of it): an attacker on the path, or a
        # bug writing to the socket.
        await raw.transport_stream.send_all(b"\x17\x03\x03\x00\x20" + b"garbage!" * 4)
        assert await accepted.receive_frame() == b"ok"
        with pytest.raises(trio.BrokenResourceError, match="not valid for this TLS session"):
            await accepted.receive_frame()
    finally:
        await trio.aclose_forcefully(raw)
    await check_still_serving(server)
