"""The dashboard's actions other than "kill an actor" (which the browser test clicks): cancel
a task, suspend and resume a node, restart and close a worker, each sent as the page sends
it, over the token-protected WebSocket of a real embedded cluster (``ag.init(dashboard=True)``,
two worker processes), and each seen to happen in the cluster."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import trio_websocket
from conftest import ProcessWatch

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 2, "dashboard": True}
WAIT_S = 30.0
T = TypeVar("T")
_ids = itertools.count(1)


def _act(cluster: ag.Cluster, action: str, target: bytes) -> dict[str, Any]:
    """Send ``action`` on ``target`` as the page does; the dashboard's answer to it."""
    assert cluster.dashboard_url is not None
    base, _, query = cluster.dashboard_url.partition("?")
    url = "ws" + base.removeprefix("http") + "ws?" + query
    rid = next(_ids)

    async def main() -> dict[str, Any]:
        with trio.fail_after(WAIT_S):
            async with trio_websocket.open_websocket_url(url) as ws:
                request = {"id": rid, "action": action, "target": target.hex()}
                await ws.send_message(json.dumps(request))
                while True:
                    message: dict[str, Any] = json.loads(await ws.get_message())
                    if message["type"] == "result" and message["id"] == rid:
                        return message

    return trio.run(main)


def _wait_for(what: str, check: Callable[[], T | None]) -> T:
    deadline = time.monotonic() + WAIT_S
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} did not happen within {WAIT_S} s"
        time.sleep(0.05)
    return found


@ag.remote
def wait_for_file(path: str) -> str:
    while not os.path.exists(path):
        time.sleep(0.02)
    return "done"


@ag.remote
def getpid() -> int:
    return os.getpid()


def test_cancel_a_task_from_the_dashboard(cluster: ag.Cluster, tmp_path: Path) -> None:
    ref = wait_for_file.remote(str(tmp_path / "never"))
    task = _wait_for(
        "the task running",
        lambda: next((t for t in cluster.status().tasks if t.task_id == ref.id), None),
    )
    answer = _act(cluster, "cancel_task", task.task_id)
    assert answer["ok"], answer
    assert "cancelled task wait_for_file" in answer["message"]
    with pytest.raises(ag.TaskCancelledError):
        ag.get(ref, timeout=WAIT_S)

    # Its worker interrupted it: that is reported as cancelled, not as a failure.
    def kinds() -> list[str] | None:
        seen = [e.kind for e in cluster.recent_events() if e.task_id == ref.id]
        return seen if "task_cancelled" in seen else None

    seen = _wait_for("the task_cancelled event", kinds)
    assert "task_failed" not in seen, seen


def test_suspend_then_resume_a_node_from_the_dashboard(cluster: ag.Cluster) -> None:
    (node,) = cluster.nodes()
    answer = _act(cluster, "suspend_node", node.node_id)
    assert answer["ok"], answer
    assert cluster.nodes()[0].state == "suspended"
    assert {w.state for w in cluster.workers()} == {"suspended"}
    waiting = getpid.remote()
    with pytest.raises(ag.GetTimeoutError):  # no worker takes new work meanwhile
        ag.get(waiting, timeout=1)

    answer = _act(cluster, "resume_node", node.node_id)
    assert answer["ok"], answer
    assert cluster.nodes()[0].state == "alive"
    assert ag.get(waiting, timeout=WAIT_S) in {w.pid for w in cluster.workers()}


def test_restart_then_close_a_worker_from_the_dashboard(cluster: ag.Cluster) -> None:
    old, other = cluster.workers()
    gone = ProcessWatch()  # the two this test ends (the cluster's shutdown ends the fresh one)
    gone.add([old.pid, other.pid])
    try:
        answer = _act(cluster, "restart_worker", old.worker_id)
        assert answer["ok"], answer
        fresh = _wait_for(
            "a fresh worker in the restarted slot",
            lambda: [w for w in cluster.workers() if w.pid not in (old.pid, other.pid)],
        )[0]
        gone.wait_gone([old.pid])

        answer = _act(cluster, "close_worker", other.worker_id)
        assert answer["ok"], answer
        gone.wait_gone([other.pid])
        _wait_for("one worker left", lambda: [w.pid for w in cluster.workers()] == [fresh.pid])
        assert ag.get(getpid.remote(), timeout=WAIT_S) == fresh.pid
    finally:
        gone.kill_leftovers()


def test_an_action_on_an_unknown_target_fails_with_a_message(cluster: ag.Cluster) -> None:
    answer = _act(cluster, "restart_worker", b"\x00" * 16)
    assert not answer["ok"]
    assert answer["message"].startswith("restart_worker failed: ")
