"""The listener limits are the user's to set (issue 15): ``ag.init(listen_limits=...)`` for
an embedded cluster (its head, its workers and the driver's own listener), and
``--max-unauthenticated`` / ``--handshake-timeout`` (or the same keys in a ``--config`` TOML
file) for ``actorgrid start``, ``up`` and ``node``. Real processes and loopback sockets:
connections that never authenticate are evicted beyond the cap, and closed after the
handshake timeout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import actorgrid as ag

START_TIMEOUT_S = 60.0


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setblocking(False)
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the listener has closed this connection (EOF or reset); it sends nothing
    before the handshake, so any readable state here is the close."""
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _wait_closed(sock: socket.socket, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if _closed_by_peer(sock):
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"the listener did not close an idle connection within {timeout} s")


def _evicts_the_oldest(address: str) -> None:
    oldest, *rest = socks = [_connect(address) for _ in range(2)]
    try:
        time.sleep(0.2)  # both are counted by the listener before the third comes
        socks.append(_connect(address))
        _wait_closed(oldest, 20)
        assert not any(_closed_by_peer(s) for s in rest + socks[2:])
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture
def limited_cluster(processes) -> Iterator[ag.Cluster]:
    cluster = ag.init(
        num_workers=1,
        listen_limits=ag.ListenLimits(max_unauthenticated=2, handshake_timeout_s=30.0),
    )
    try:
        processes.add(w.pid for w in cluster.workers())
        yield cluster
    finally:
        ag.shutdown()
        processes.wait_gone()


def test_init_listen_limits_cap_unauthenticated_connections_on_the_head_and_workers(
    limited_cluster: ag.Cluster,
) -> None:
    (worker,) = limited_cluster.workers()
    # Two may wait in their handshake at once (the default is 128): a third evicts the oldest.
    _evicts_the_oldest(limited_cluster.address)
    _evicts_the_oldest(worker.address)


def test_the_cli_handshake_timeout_from_a_config_file_closes_idle_connections(
    tmp_path: Path, processes
) -> None:
    config = tmp_path / "head.toml"
    config.write_text("num_workers = 0\nhandshake_timeout = 0.5\nmax_unauthenticated = 64\n")
    env = {**os.environ, "ACTORGRID_CLUSTER_FILE": str(tmp_path / "cluster.json")}
    env.pop("ACTORGRID_ADDRESS", None)
    env.pop("ACTORGRID_SECRET", None)
    out = tmp_path / "head.out"
    with out.open("w") as f:
        head = subprocess.Popen(
            [sys.executable, "-m", "actorgrid.cli", "start", "--head", "--config", str(config)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    processes.add([head.pid])
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ctrl-C" not in out.read_text() and head.poll() is None:
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        assert head.poll() is None, out.read_text()
        line = next(x for x in out.read_text().splitlines() if "--address" in x).split()
        sock = _connect(line[line.index("--address") + 1])
        try:
            # 0.5 s instead of the default 5 s; the bound leaves room for a loaded machine.
            assert _wait_closed(sock, 4.5) >= 0.4
        finally:
            sock.close()
    finally:
        head.terminate()
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
