"""Task events (``Cluster.events()``, ``Cluster.tasks()``) and ``ag.timeline``.

Events of a task come from its owner (submitted, scheduled, retried) and from the worker
that runs it (started, finished or failed), each batched per interval; the head's history
and this driver's hold them in time order.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import actorgrid as ag

EVENT_TIMEOUT_S = 30.0


def _task_events(cluster: ag.Cluster, task_id: bytes, count: int) -> list[ag.Event]:
    """The task's events once ``count`` have come (owner and worker report separately)."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while True:
        events = [e for e in cluster.recent_events() if e.task_id == task_id]
        if len(events) >= count:
            return events
        assert time.monotonic() < deadline, f"not {count} events for the task: {events}"
        time.sleep(0.05)


@ag.remote(max_retries=1, retry_exceptions=[ValueError])
def flaky(marker: str) -> str:
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError("the first try fails")
    return "second try"


def test_a_task_that_fails_once_and_is_retried_has_its_events_in_order(
    cluster: ag.Cluster, tmp_path: Path
) -> None:
    ref = flaky.remote(str(tmp_path / "tried"))
    assert ag.get(ref) == "second try"
    events = _task_events(cluster, ref.id, 8)
    assert [e.kind for e in events] == [
        "task_submitted",
        "task_scheduled",
        "task_started",
        "task_failed",
        "task_retried",
        "task_scheduled",
        "task_started",
        "task_finished",
    ]
    assert all(e.name == "flaky" for e in events)
    failed = events[3]
    assert failed.error == "ValueError: the first try fails"
    assert "the first try fails" in events[4].error
    workers = {w.worker_id for w in cluster.workers()}
    for e in events:
        if e.kind in ("task_scheduled", "task_started", "task_finished", "task_failed"):
            assert e.worker_id in workers
    assert [e.time for e in events] == sorted(e.time for e in events)

    (record,) = [t for t in cluster.tasks() if t.task_id == ref.id]
    assert (record.name, record.state, record.attempts) == ("flaky", "finished", 2)
    assert record.worker_id in workers
    assert record.duration_s is not None and 0 <= record.duration_s < EVENT_TIMEOUT_S


def test_on_event_streams_a_tasks_events_as_they_happen(cluster: ag.Cluster) -> None:
    EXPECTED = {"task_submitted", "task_scheduled", "task_started", "task_finished"}
    seen: list[str] = []
    done = threading.Event()
    ref_id: list[bytes] = []

    def on_event(event: ag.Event) -> None:
        if ref_id and event.task_id == ref_id[0]:
            seen.append(event.kind)
            # The owner's and the worker's batches come in either order.
            if set(seen) == EXPECTED:
                done.set()

    stop = cluster.on_event(on_event)
    try:
        ref = square.remote(3)
        ref_id.append(ref.id)
        assert ag.get(ref) == 9
        assert done.wait(EVENT_TIMEOUT_S), f"not every event of the task came; saw {seen}"
    finally:
        stop()
    assert sorted(seen) == sorted(EXPECTED)  # each once


@ag.remote
def square(x: int) -> int:
    return x * x


@ag.remote
def cube(x: int) -> int:
    return x**3


@ag.remote
class Adder:
    def add(self, data: bytes) -> int:
        return len(data)


def test_timeline_writes_one_span_per_task_and_call_one_row_per_worker(
    cluster: ag.Cluster, tmp_path: Path
) -> None:
    assert ag.get([cube.remote(i) for i in range(6)]) == [i**3 for i in range(6)]
    adder = Adder.remote()
    assert ag.get([adder.add.remote(b"x" * 1000) for _ in range(3)]) == [1000] * 3
    path = tmp_path / "trace.json"
    assert ag.timeline(path) >= 9
    trace = json.loads(path.read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    squares = [e for e in spans if e["name"] == "cube"]
    adds = [e for e in spans if e["name"] == "Adder.add"]
    assert len(squares) == 6 and len(adds) == 3
    assert all(e["dur"] >= 0 and e["args"]["ok"] for e in squares + adds)
    assert all(e["args"]["argument_bytes"] > 1000 for e in adds)
    rows = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    workers = {w.worker_id.hex()[:8] for w in cluster.workers()}
    assert {rows[e["tid"]] for e in squares} <= {f"worker {w}" for w in workers}
    ag.kill(adder)


def test_creating_an_actor_is_an_event_with_its_name(cluster: ag.Cluster) -> None:
    adder = Adder.options(name="event-adder").remote()
    assert ag.get(adder.add.remote(b"ab")) == 2
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while not (
        created := [
            e
            for e in cluster.recent_events()
            if e.kind == "actor_created" and e.name == "event-adder"
        ]
    ):
        assert time.monotonic() < deadline, "no actor_created event"
        time.sleep(0.05)
    (event,) = created
    assert event.actor_id is not None
    assert event.worker_id in {w.worker_id for w in cluster.workers()}
    ag.kill(adder)
