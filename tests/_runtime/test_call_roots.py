"""Calls a sync actor makes in a burst stay in its driver's call tree.

A sync actor method runs in a thread; the first of its calls goes straight out, the rest of a
burst go through the worker's event loop. Each must still carry the root of the call tree
(the driver whose work it is): the driver's ``ag.timeline()`` holds every one of them, and
what the callee prints is shown by that driver.

One embedded cluster (two workers, real processes); the driver's output is read through
pytest's ``capsys``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

import actorgrid as ag
from actorgrid._protocol.ids import ObjectId
from actorgrid._runtime import observe

BURST = 300
TIMEOUT_S = 60.0


@ag.remote
class Echo:
    def echo(self, i: int) -> int:
        print(f"echoed {i}")  # every line differs: identical ones would be folded
        return i


@ag.remote
class Caller:
    def burst(self, echo: ag.ActorHandle[Echo], n: int) -> int:
        refs = [echo.echo.remote(i) for i in range(n)]
        return sum(ag.get(refs, timeout=TIMEOUT_S))


def _echo_spans(path: Path, count: int) -> list[dict[str, object]]:
    """The driver's timeline's Echo.echo spans once ``count`` have come (a worker reports
    the spans of the calls it made every flush interval)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        ag.timeline(path)
        events = json.loads(path.read_text())["traceEvents"]
        spans = [e for e in events if e["ph"] == "X" and e["name"] == "Echo.echo"]
        if len(spans) >= count:
            return spans
        assert time.monotonic() < deadline, f"{len(spans)} of {count} calls in the timeline"
        time.sleep(0.1)


def test_every_call_of_a_sync_actors_burst_is_in_its_drivers_timeline_and_output(
    cluster: ag.Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    echo = Echo.remote()
    caller = Caller.remote()
    assert ag.get(caller.burst.remote(echo, BURST), timeout=TIMEOUT_S) == sum(range(BURST))

    spans = _echo_spans(tmp_path / "trace.json", BURST)
    assert len(spans) == BURST
    workers = {f"worker {w.worker_id.hex()[:8]}" for w in cluster.workers()}
    rows = {
        e["tid"]: e["args"]["name"]
        for e in json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
        if e["name"] == "thread_name"
    }
    assert {rows[e["tid"]] for e in spans} <= workers  # each on the row of Echo's worker

    out = ""
    deadline = time.monotonic() + TIMEOUT_S
    while len(shown := set(re.findall(r"^\(Echo pid=\d+[^)]*\) echoed (\d+)$", out, re.M))) < BURST:
        assert time.monotonic() < deadline, f"{len(shown)} of {BURST} lines shown:\n{out}"
        time.sleep(0.05)
        out += capsys.readouterr().out
    assert shown == {str(i) for i in range(BURST)}
    ag.kill(caller)
    ag.kill(echo)


def test_calls_never_answered_are_forgotten_past_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    # A call whose worker died gets no answer: what was kept for its span must not stay.
    monkeypatch.setattr(observe, "OPEN_MAX", 100)
    observer = observe.Observer()
    for i in range(1000):
        task_id = ObjectId(i.to_bytes(16, "big"))
        observer.call_made(task_id)
        observer.call_sent(task_id, "Echo", "echo", None, 10)
    assert len(observer._open) <= 100
    newest = ObjectId((999).to_bytes(16, "big"))
    observer.answered(newest, True)  # the newest are kept: its span is written
    assert [span[0] for span in observer.spans] == [("Echo", "echo")]
