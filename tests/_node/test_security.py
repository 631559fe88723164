"""Security by default, against a live cluster: whatever a stranger sends, the head and the
workers log it, drop that one connection, and keep serving real clients.

Hypothesis drives the byte streams: arbitrary handshakes, and arbitrary frames after a valid
handshake (the frames of a peer that knows the secret but speaks nonsense). The specific
cases (wrong secret, random bytes, a stalled handshake, oversized and out-of-place frames) are
in tests/_runtime/test_bad_input.py and tests/_transport; this file adds the fuzzing, the
missing secret and the log lines.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actorgrid as ag
from actorgrid._protocol.handshake import HELLO_BYTES, PROOF_BYTES, Handshake
from actorgrid._transport.admission import ListenLimits

SOCKET_TIMEOUT_S = 10.0
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SECRET = os.urandom(32)


@pytest.fixture(scope="module")
def grid() -> Iterator[ag.Cluster]:
    cluster = ag.init(num_workers=1, secret=SECRET, pulse_interval=0.5)
    try:
        yield cluster
    finally:
        ag.shutdown()


@ag.remote
def double(x: int) -> int:
    return 2 * x


def _servers(cluster: ag.Cluster) -> list[tuple[str, int]]:
    addresses = [cluster.address, *(w.address for w in cluster.workers())]
    return [(a.rpartition(":")[0], int(a.rpartition(":")[2])) for a in addresses]


def _connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=SOCKET_TIMEOUT_S)
    sock.settimeout(SOCKET_TIMEOUT_S)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def _authenticated(address: tuple[str, int]) -> socket.socket:
    """A raw socket past the handshake, as a client holding the secret."""
    sock = _connect(address)
    shake = Handshake(SECRET, "client", f"{address[0]}:{address[1]}")
    sock.sendall(shake.hello())
    sock.sendall(shake.receive_hello(_recv_exactly(sock, HELLO_BYTES)))
    verdict = shake.receive_proof(_recv_exactly(sock, PROOF_BYTES))
    sock.sendall(verdict)
    shake.receive_verdict(_recv_exactly(sock, 1))
    return sock


def _still_serves(cluster: ag.Cluster) -> None:
    assert ag.get(double.remote(21), timeout=30) == 42
    assert len(cluster.workers()) == 1


@FUZZ
@given(data=st.binary(min_size=1, max_size=600))
def test_fuzzed_handshakes_are_dropped_and_the_cluster_keeps_serving(
    grid: ag.Cluster, data: bytes
) -> None:
    for address in _servers(grid):
        with _connect(address) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                continue
            answer = _read_until_closed(sock)
        # At most the server's own hello: no proof of the secret, and never a frame.
        assert len(answer) <= HELLO_BYTES
    _still_serves(grid)


_frames = st.lists(
    st.one_of(
        st.binary(max_size=64),  # a body that is not an envelope
        st.builds(  # a plausible header with a body of another length
            lambda n, body: struct.pack("!Q", n) + body,
            st.integers(min_value=0, max_value=2**64 - 1),
            st.binary(max_size=32),
        ),
        st.builds(  # a well-framed body holding garbage after an envelope length
            lambda body: struct.pack("!Q", len(body) + 4) + struct.pack("!I", len(body)) + body,
            st.binary(max_size=64),
        ),
    ),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(frames=_frames)
def test_fuzzed_frames_after_a_valid_handshake_close_only_that_connection(
    grid: ag.Cluster, frames: list[bytes]
) -> None:
    for address in _servers(grid):
        with _authenticated(address) as sock:
            try:
                sock.sendall(b"".join(frames))
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                continue
            _read_until_closed(sock)  # the server hangs up; it may have said Hello first
    _still_serves(grid)


def test_rejections_are_logged_with_the_reason(
    grid: ag.Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    head = _servers(grid)[0]
    with caplog.at_level(logging.WARNING, logger="actorgrid"):
        with _connect(head) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            _read_until_closed(sock)
        with _authenticated(head) as sock:
            sock.sendall(struct.pack("!Q", 3) + b"abc")
            sock.shutdown(socket.SHUT_WR)
            _read_until_closed(sock)
        _still_serves(grid)
        # Rejections are logged at once when the first of their kind from an address in a
        # window of ListenLimits.log_interval_s, else counted in the summary that ends it.
        deadline = time.monotonic() + 2 * ListenLimits().log_interval_s + 5
        while not any(_is_http_rejection(r.getMessage()) for r in caplog.records):
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.1)
    messages = [r.getMessage() for r in caplog.records]
    assert any("closing connection" in m for m in messages), messages


def _is_http_rejection(message: str) -> bool:
    # The request is shorter than a hello, so the server waits for the rest until it times out.
    return message.startswith("rejected") and (
        "did not finish the handshake" in message or "handshake timeout" in message
    )


_DRIVER = """
import sys
import actorgrid as ag
try:
    ag.init(address=sys.argv[1], **({"secret": bytes.fromhex(sys.argv[2])} if len(sys.argv) > 2 else {}))
except Exception as exc:
    print(type(exc).__name__, exc)
    sys.exit(3)
"""


def _driver(tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "ACTORGRID_SECRET"}
    env["ACTORGRID_CLUSTER_FILE"] = str(tmp_path / "no-cluster.json")
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,  # not the repository root, whose source tree would shadow the install
    )
    return done.returncode, done.stdout


def test_a_driver_without_the_secret_is_told_how_to_give_it(
    grid: ag.Cluster, tmp_path: Path
) -> None:
    code, out = _driver(tmp_path, grid.address)
    assert code == 3
    assert out.startswith("ValueError") and "needs its secret" in out and grid.address in out
    _still_serves(grid)


def test_a_driver_with_a_wrong_secret_gets_an_authentication_error(
    grid: ag.Cluster, tmp_path: Path
) -> None:
    code, out = _driver(tmp_path, grid.address, os.urandom(32).hex())
    assert code == 3
    assert out.startswith("AuthenticationError") and grid.address in out, out
    _still_serves(grid)
