"""A flood of worker output: the calls go on at their pace, and what the node agent cannot
forward is dropped, counted and reported at the driver (every line is shown or counted).

An embedded cluster of its own (two workers), whose node agent runs in this process with a
small forwarding bound, so that a flood a test can make quickly overflows it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

import actorgrid as ag
from actorgrid._node import output as node_output

FLOOD_LINES = 60_000
SINK_BOUND = 500  # lines per forwarding interval (0.1 s); the default is 20,000
WAIT_S = 60.0
CALL_LATENCY_LIMIT_S = 2.0  # a no-op call takes milliseconds; generous for a loaded machine


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch, processes) -> Iterator[ag.Cluster]:
    monkeypatch.setattr(node_output, "SINK_MAX_LINES", SINK_BOUND)
    cluster = ag.init(num_workers=2)
    try:
        processes.add(w.pid for w in cluster.workers())
        yield cluster
    finally:
        ag.shutdown()
        processes.wait_gone()


@ag.remote
def flood(lines: int) -> float:
    started = time.monotonic()
    for start in range(0, lines, 1000):
        print("".join(f"flood line {i}\n" for i in range(start, start + 1000)), end="")
    return time.monotonic() - started


@ag.remote
def noop() -> None:
    return None


def test_a_flood_of_output_is_dropped_with_a_count_and_does_not_slow_the_calls(
    cluster: ag.Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    ag.get(noop.remote(), timeout=WAIT_S)  # both workers up, the code sent
    ref = flood.remote(FLOOD_LINES)
    latencies = []
    # One CPU each: the flood takes one worker, these calls the other, while it floods.
    while ag.wait([ref], timeout=0)[1] or not latencies:
        sent = time.monotonic()
        ag.get(noop.remote(), timeout=WAIT_S)
        latencies.append(time.monotonic() - sent)
    took = ag.get(ref, timeout=WAIT_S)
    assert max(latencies) < CALL_LATENCY_LIMIT_S, latencies
    # Printing never waits for the driver: the pipe is read without pause.
    assert took < WAIT_S / 2

    out = err = ""
    dropped = shown = 0
    deadline = time.monotonic() + WAIT_S
    while shown + dropped < FLOOD_LINES:
        assert time.monotonic() < deadline, f"{shown} lines shown, {dropped} counted dropped"
        got = capsys.readouterr()
        out += got.out
        err += got.err
        shown = len(re.findall(r"^\(flood pid=\d+ node=\S+\) flood line \d+$", out, re.M))
        dropped = sum(int(n) for n in re.findall(r"(\d+) lines of worker output were dropped", err))
    assert shown + dropped == FLOOD_LINES
    assert dropped > 0 and shown > 0
    assert "`actorgrid logs`" in err  # where the dropped lines are still to be read
