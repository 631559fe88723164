"""Actor method calls are events too (``call_finished``, ``call_failed``), recorded by the
caller when the answer comes, and reported with the task events in the same compact batches."""

from __future__ import annotations

import time

import pytest

import actorgrid as ag

EVENT_TIMEOUT_S = 30.0


@ag.remote
class Greeter:
    def greet(self, name: str) -> str:
        if not name:
            raise ValueError("no name")
        return f"hello {name}"


def test_actor_calls_are_events_with_their_method_and_outcome(cluster: ag.Cluster) -> None:
    greeter = Greeter.remote()
    ok = greeter.greet.remote("ada")
    failed = greeter.greet.remote("")
    assert ag.get(ok) == "hello ada"
    with pytest.raises(ValueError, match="no name"):
        ag.get(failed)
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while True:
        events = {e.task_id: e for e in cluster.recent_events() if e.kind.startswith("call_")}
        if ok.id in events and failed.id in events:
            break
        assert time.monotonic() < deadline, f"no call events for both calls: {events}"
        time.sleep(0.05)
    assert (events[ok.id].kind, events[ok.id].name) == ("call_finished", "Greeter.greet")
    assert (events[failed.id].kind, events[failed.id].name) == ("call_failed", "Greeter.greet")
    workers = {w.worker_id for w in cluster.workers()}
    assert events[ok.id].worker_id in workers
    ag.kill(greeter)
