"""The machine's own limits, measured in the same run as the workloads they bound.

Each actorgrid figure is printed beside its ratio to one of these, so a figure from a loaded or
slow machine still says how close to the wire the runtime is:

- ``socket_rtt_us``: a raw blocking-socket ping-pong of 64 bytes between two processes over
  loopback TCP (median).
- ``trio_rtt_us``: the same ping-pong with ``trio.SocketStream`` at both ends (median).
- ``trio_oneway_msgs_per_s``: 64-byte messages sent one ``send_all`` each from one Trio
  process to another, which counts them (unbatched: what one frame per call costs).
- ``hop_bound_per_s``: one-way latency bound of a ring, ``1 / (trio_rtt / 2)`` hops/s.
- ``memcpy_mb_per_s``: copying 100 MB (``array_bytes``) from one buffer to another, best of 3
  (in MB/s, the unit of the argument workloads it bounds).
- ``spawn_import_trio_s``: ``python -c "import trio"`` from spawn to exit (median).
- ``process_rss_mb``: the RSS of a Python process that imported trio (one worker at best), and
  ``cluster_rss_bound_mb``: that times the processes of an embedded cluster (driver + workers).

Every child process here is started in its own session and killed if it outlives its run.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from workloads import MB, Sizes

__all__ = ["LIMITS", "Limit", "measure_limits"]

MESSAGE = b"x" * 64
CHILD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Limit:
    key: str
    title: str
    unit: str


LIMITS = {
    limit.key: limit
    for limit in (
        Limit("socket_rtt_us", "raw socket ping-pong", "µs"),
        Limit("trio_rtt_us", "trio TCP ping-pong", "µs"),
        Limit("trio_oneway_msgs_per_s", "trio one-way, unbatched", "msgs/s"),
        Limit("hop_bound_per_s", "one-way latency bound", "hops/s"),
        Limit("memcpy_mb_per_s", "memcpy", "MB/s"),
        Limit("spawn_import_trio_s", "spawn + import trio", "s"),
        Limit("process_rss_mb", "python + trio, one process", "MB"),
        Limit("cluster_rss_bound_mb", "python + trio, times driver + workers", "MB"),
    )
}

# The echo peers: argv[1] is the port to connect to, argv[2] the number of round trips (or
# of one-way messages). They exit on EOF.
_SOCKET_ECHO = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while data := s.recv(65536):
    s.sendall(data)
"""

_TRIO_ECHO = """
import sys, trio
async def main():
    stream = await trio.open_tcp_stream("127.0.0.1", int(sys.argv[1]))
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
trio.run(main)
"""

_TRIO_COUNT = """
import sys, trio
async def main():
    expected = int(sys.argv[2]) * 64
    stream = await trio.open_tcp_stream("127.0.0.1", int(sys.argv[1]))
    async with stream:
        got = 0
        while got < expected:
            data = await stream.receive_some(1 << 20)
            if not data:
                return
            got += len(data)
        await stream.send_all(b"!")
trio.run(main)
"""

_RSS = """
import trio, psutil
print(psutil.Process().memory_info().rss)
"""


def _child(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _listener() -> socket.socket:
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(CHILD_TIMEOUT_S)
    return lsock


def socket_rtt_us(round_trips: int) -> float:
    """Median µs of a 64-byte blocking-socket round trip to an echoing process."""
    with _listener() as lsock:
        proc = _child(_SOCKET_ECHO, str(lsock.getsockname()[1]))
        try:
            conn, _ = lsock.accept()
            with conn:
                conn.settimeout(CHILD_TIMEOUT_S)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                samples = []
                for _ in range(round_trips + 10):
                    started = time.perf_counter_ns()
                    conn.sendall(MESSAGE)
                    got = 0
                    while got < len(MESSAGE):
                        got += len(conn.recv(65536)) or _eof()
                    samples.append((time.perf_counter_ns() - started) / 1_000)
        finally:
            _reap(proc)
    return statistics.median(samples[10:])


def _eof() -> int:
    raise RuntimeError("the echo process closed its connection early")


def trio_rtt_us(round_trips: int) -> float:
    """Median µs of a 64-byte round trip, trio.SocketStream at both ends."""
    import trio

    samples: list[float] = []

    async def main() -> None:
        with _listener() as lsock:
            proc = _child(_TRIO_ECHO, str(lsock.getsockname()[1]))
            try:
                conn, _ = await trio.to_thread.run_sync(lsock.accept)
                conn.setblocking(False)
                async with trio.SocketStream(trio.socket.from_stdlib_socket(conn)) as stream:
                    with trio.fail_after(CHILD_TIMEOUT_S):
                        for _ in range(round_trips + 10):
                            started = time.perf_counter_ns()
                            await stream.send_all(MESSAGE)
                            got = 0
                            while got < len(MESSAGE):
                                got += len(await stream.receive_some(65536)) or _eof()
                            samples.append((time.perf_counter_ns() - started) / 1_000)
            finally:
                _reap(proc)

    trio.run(main)
    return statistics.median(samples[10:])


def trio_oneway_msgs_per_s(messages: int) -> float:
    """64-byte messages/s, one send_all each, until the counting process has them all."""
    import trio

    elapsed = 0.0

    async def main() -> None:
        nonlocal elapsed
        with _listener() as lsock:
            proc = _child(_TRIO_COUNT, str(lsock.getsockname()[1]), str(messages))
            try:
                conn, _ = await trio.to_thread.run_sync(lsock.accept)
                conn.setblocking(False)
                async with trio.SocketStream(trio.socket.from_stdlib_socket(conn)) as stream:
                    with trio.fail_after(CHILD_TIMEOUT_S):
                        started = time.perf_counter()
                        for _ in range(messages):
                            await stream.send_all(MESSAGE)
                        if await stream.receive_some(1) != b"!":
                            _eof()
                        elapsed = time.perf_counter() - started
            finally:
                _reap(proc)

    trio.run(main)
    return messages / elapsed


def memcpy_mb_per_s(nbytes: int) -> float:
    """MB/s of one copy of ``nbytes`` between two buffers already in memory (best of 3)."""
    src = bytearray(os.urandom(1 << 20)) * max(1, nbytes >> 20)
    dst = bytearray(len(src))
    dst[:] = src  # touch every page of dst once, so page faults are not counted
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        memoryview(dst)[:] = src
        best = min(best, time.perf_counter() - started)
    return len(src) / MB / best


def spawn_import_trio_s(runs: int) -> float:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import trio"], check=True, timeout=CHILD_TIMEOUT_S)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def process_rss_mb() -> float:
    out = subprocess.run(
        [sys.executable, "-c", _RSS], capture_output=True, check=True, timeout=CHILD_TIMEOUT_S
    )
    return int(out.stdout) / MB


# A derived limit and the measured one it comes from.
_DERIVED_FROM = {"hop_bound_per_s": "trio_rtt_us", "cluster_rss_bound_mb": "process_rss_mb"}


def measure_limits(sizes: Sizes, num_workers: int, wanted: set[str]) -> dict[str, Any]:
    """The limits in ``wanted`` (keys of LIMITS), each ``{"value": ...}`` or
    ``{"error": ...}``; a failed measurement fails only the ratios that use it."""
    measures = {
        "socket_rtt_us": lambda: socket_rtt_us(sizes.round_trips),
        "trio_rtt_us": lambda: trio_rtt_us(sizes.round_trips),
        "trio_oneway_msgs_per_s": lambda: trio_oneway_msgs_per_s(sizes.pipelined),
        "memcpy_mb_per_s": lambda: memcpy_mb_per_s(sizes.array_bytes),
        "spawn_import_trio_s": lambda: spawn_import_trio_s(sizes.cold_start_runs),
        "process_rss_mb": process_rss_mb,
    }
    needed = {_DERIVED_FROM.get(key, key) for key in wanted}
    if "trio_rtt_us" in needed:
        needed.add("socket_rtt_us")  # the round trip's own floor, shown beside it
    out: dict[str, Any] = {}
    for key, measure in measures.items():
        if key not in needed:
            continue
        print(f"  limit {key} ...", end=" ", file=sys.stderr, flush=True)
        try:
            value = measure()
        except Exception as exc:
            print(f"FAILED ({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
            out[key] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        print(f"{value:.6g}", file=sys.stderr, flush=True)
        out[key] = {"value": value}
    for key, base in _DERIVED_FROM.items():
        if key not in wanted:
            continue
        if "value" not in out.get(base, {}):
            out[key] = {"error": f"{base} was not measured"}
        elif key == "hop_bound_per_s":
            out[key] = {"value": 1e6 / (out[base]["value"] / 2)}
        else:
            out[key] = {"value": out[base]["value"] * (1 + num_workers)}
    return out
