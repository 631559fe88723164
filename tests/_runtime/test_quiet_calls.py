"""A call whose ref its caller drops at once (``handle.method.remote(...)`` as a statement)
is answered by no one (``_runtime/quiet.py``): it still runs, in order with the caller's
other calls; the caller keeps nothing in flight for it (no in-flight entry, no owner record),
so nothing waits for an answer that never comes; its error is not lost but logged on its
worker and reported as a ``call_failed`` event naming the method; a call whose ref is kept is
answered as before. Real processes: the driver's calls (an owned actor) and an actor's calls
from its worker's pool thread (an actor owned by the driver: the handle ring's hop)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import actorgrid as ag
from actorgrid._runtime import current

DEADLINE_S = 60.0


def _in_flight(rt: Any) -> int:
    """Calls this process keeps for an answer: on its links and in its owner state."""
    state = rt._owner_state
    return sum(len(p.inflight) for p in list(rt.peers.values())) + (
        len(state) if state is not None else 0
    )


def _sent(rt: Any) -> set[Any]:
    """The calls this process's links keep in flight for an answer."""
    return {task_id for p in list(rt.peers.values()) for task_id in list(p.inflight)}


def _wait_for(path: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not os.path.exists(path):  # the test creates it once it has looked
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@ag.remote
class Recorder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def add(self, i: int) -> int:
        self.seen.append(i)
        return i

    def wait_for(self, path: str) -> None:
        _wait_for(path)

    def fail(self, why: str) -> None:
        raise ValueError(why)

    def log(self) -> list[int]:
        return list(self.seen)


@ag.remote
class Relay:
    """Calls the recorder from its worker's pool thread, as the handle ring's hop does."""

    def pass_on(self, recorder: Any, path: str, n: int) -> int:
        """The calls kept here for an answer once all ``n`` were sent."""
        recorder.wait_for.remote(path)  # every call below queues behind this one
        kept = None
        for i in range(n):
            if i % 3:
                recorder.add.remote(i)  # dropped at once: quiet
            else:
                kept = recorder.add.remote(i)  # kept for a moment: answered
        rt = current.get()
        deadline = time.monotonic() + DEADLINE_S
        while kept is not None and kept.id not in _sent(rt):  # the loop sends bursts
            assert time.monotonic() < deadline, "the last kept call was never sent"
            time.sleep(0.01)
        return len(_sent(rt))

    def in_flight(self) -> int:
        return _in_flight(current.get())


def _wait_drained(rt: Any) -> int:
    deadline = time.monotonic() + DEADLINE_S
    while (left := _in_flight(rt)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return left


def test_dropped_calls_run_in_order_and_leave_nothing_in_flight(
    cluster: ag.Cluster, tmp_path: Path
) -> None:
    rt: Any = current.get()
    recorder = Recorder.remote()
    assert ag.get(recorder.log.remote(), timeout=DEADLINE_S) == []
    gate = str(tmp_path / "open")
    recorder.wait_for.remote(gate)  # runs until the gate opens: nothing below can finish
    for i in range(30):
        recorder.add.remote(i)
    kept = recorder.add.remote(30)
    deadline = time.monotonic() + DEADLINE_S
    while kept.id not in _sent(rt):  # so all before it were sent too (calls keep order)
        assert time.monotonic() < deadline, "the kept call was never sent"
        time.sleep(0.01)
    # Not one is answered yet (the gate holds the actor): the owner keeps only the kept ref's
    # call for its answer, none of the dropped ones.
    assert _sent(rt) == {kept.id}
    assert len(rt._owner_state) <= 1
    Path(gate).touch()
    assert ag.get(kept, timeout=DEADLINE_S) == 30
    assert ag.get(recorder.log.remote(), timeout=DEADLINE_S) == list(range(31))
    assert _wait_drained(rt) == 0
    ag.kill(recorder)


def test_an_actors_dropped_calls_from_its_pool_thread(cluster: ag.Cluster, tmp_path: Path) -> None:
    recorder, relay = Recorder.remote(), Relay.remote()
    gate = str(tmp_path / "open")
    held = ag.get(relay.pass_on.remote(recorder, gate, 60), timeout=DEADLINE_S)
    # Only the kept ones (a third) wait for their answers there; the recorder is still shut.
    assert held == len(range(0, 60, 3))
    Path(gate).touch()
    # The relay's calls keep their order; this test's own calls come on another link.
    deadline = time.monotonic() + DEADLINE_S
    while len(seen := ag.get(recorder.log.remote(), timeout=DEADLINE_S)) < 60:
        assert time.monotonic() < deadline, f"the recorder saw only {seen}"
        time.sleep(0.01)
    assert seen == list(range(60))
    while (left := ag.get(relay.in_flight.remote(), timeout=DEADLINE_S)) != 0:
        assert time.monotonic() < deadline, f"the relay keeps {left} calls in flight"
        time.sleep(0.05)
    ag.kill(relay)
    ag.kill(recorder)


def test_a_dropped_calls_error_is_reported_with_its_method(cluster: ag.Cluster) -> None:
    rt: Any = current.get()
    recorder = Recorder.remote()
    why = f"no answer wanted {os.getpid()} {time.monotonic_ns()}"
    recorder.fail.remote(why)
    # The actor runs on after it: later calls are answered; nothing waits for the failed one.
    assert ag.get(recorder.add.remote(1), timeout=DEADLINE_S) == 1
    assert _wait_drained(rt) == 0
    deadline = time.monotonic() + DEADLINE_S
    while True:
        failed = [e for e in cluster.recent_events() if e.kind == "call_failed" and why in e.error]
        if failed:
            break
        assert time.monotonic() < deadline, "the dropped call's error was never reported"
        time.sleep(0.1)
    assert failed[0].name == "Recorder.fail"
    assert failed[0].error.startswith("ValueError")
    workers = {w.worker_id for w in cluster.workers()}
    assert failed[0].worker_id in workers
    # A kept ref's error still comes to its caller.
    kept = recorder.fail.remote("kept")
    try:
        ag.get(kept, timeout=DEADLINE_S)
    except ValueError as exc:
        assert "kept" in str(exc)
    else:
        raise AssertionError("a kept call's error did not reach its caller")
    ag.kill(recorder)
