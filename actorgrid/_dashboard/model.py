"""What the dashboard shows, without I/O: fed the head's events and cluster views, it keeps
the counters ``/metrics`` reports and turns records into the JSON the page renders.

Events are rendered generically (every field that is set, ids as hex), so kinds and fields
added to ``Event`` later appear without a change here. Counters count the events the
dashboard has seen since it started, the head's remembered history included: they only grow.

Costs: :meth:`DashboardModel.handle_event` is O(1), ``handle_output`` O(lines); :meth:`DashboardModel.snapshot` is
O(cluster), and is called once per refresh interval while a page is open, and per scrape.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from typing import Any

import attrs

from .._protocol.messages import ClusterView, Event
from .._protocol.observe import WorkerOutput

__all__ = [
    "ACTIONS",
    "COUNTED_EVENTS",
    "DashboardModel",
    "event_json",
    "record_json",
]

# What the page may ask for, and the kind of target (an id in hex) each one takes.
ACTIONS = {
    "kill_actor": "actor",
    "cancel_task": "task",
    "restart_worker": "worker",
    "close_worker": "worker",
    "suspend_node": "node",
    "resume_node": "node",
}

# Event kind -> the counter it moves (see metrics.py for what each one means).
COUNTED_EVENTS = {
    "task_submitted": "tasks_submitted",
    "task_finished": "tasks_finished",
    "task_failed": "tasks_failed",
    "task_retried": "tasks_retried",
    "task_cancelled": "tasks_cancelled",
    "worker_restarted": "worker_restarts",
    "worker_died": "worker_deaths",
    "actor_restarted": "actor_restarts",
    "actor_died": "actor_deaths",
    "call_finished": "actor_calls",
    "call_failed": "actor_calls",
    "sends_lost": "sends_lost",  # by the event's count, not one per event
}
# Task events of actor method calls (they carry an actor_id) count as actor calls too.
_ACTOR_CALL_END = frozenset({"task_finished", "task_failed"})

EVENT_HISTORY = 500
LOG_LINES_PER_WORKER = 30
FAILURE_HISTORY = 50
UNKNOWN_NODE = "unknown"


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.name
    if attrs.has(type(value)):
        return record_json(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def record_json(record: Any) -> dict[str, Any]:
    """An attrs record as JSON-able data: bytes as hex, nested records as dicts."""
    return {f.name: _plain(getattr(record, f.name)) for f in attrs.fields(type(record))}


def event_json(event: Event) -> dict[str, Any]:
    """An event with only the fields that are set (kind and time always)."""
    out: dict[str, Any] = {}
    for f in attrs.fields(type(event)):
        value = getattr(event, f.name)
        if f.name in ("kind", "time") or value not in (None, "", (), {}):
            out[f.name] = _plain(value)
    return out


class DashboardModel:
    """Counters and recent history from the event stream; JSON from cluster views."""

    def __init__(self) -> None:
        self.counters: Counter[tuple[str, str]] = Counter()  # (counter, node hex) -> n
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENT_HISTORY)
        self.failures: deque[dict[str, Any]] = deque(maxlen=FAILURE_HISTORY)
        self.actor_restarts: Counter[str] = Counter()  # actor id hex -> restarts seen
        self._node_of: dict[bytes, str] = {}  # worker id -> node id hex, from the last view
        # worker id hex -> its last lines of output, "(source pid=P) text"; workers gone from
        # the last view are forgotten at the next snapshot, so this stays O(workers).
        self.logs: dict[str, deque[str]] = {}

    def __repr__(self) -> str:
        return f"<DashboardModel events={len(self.events)} counters={sum(self.counters.values())}>"

    def handle_event(self, event: Event) -> dict[str, Any] | None:
        """Count ``event``; return it as JSON for the page, or None for a node pulse (the
        page sees those as node figures in the next snapshot)."""
        node = self._node(event)
        counter = COUNTED_EVENTS.get(event.kind)
        if counter is not None:
            self.counters[counter, node] += event.count or 1
        actor_id = getattr(event, "actor_id", None)
        if event.kind in _ACTOR_CALL_END and actor_id:
            self.counters["actor_calls", node] += 1
        if event.kind == "actor_restarted" and actor_id:
            self.actor_restarts[_plain(actor_id)] += 1
        if event.kind == "node_status":
            return None
        data = event_json(event)
        self.events.append(data)
        if event.kind == "task_failed":
            self.failures.append(data)
        return data

    def handle_output(self, msg: WorkerOutput) -> None:
        """Keep each worker's last LOG_LINES_PER_WORKER lines. O(lines)."""
        for line in msg.lines:
            wid = line.worker_id.hex()
            kept = self.logs.get(wid)
            if kept is None:
                kept = self.logs[wid] = deque(maxlen=LOG_LINES_PER_WORKER)
            kept.append(f"({line.source or 'worker'} pid={line.pid}) {line.text[:500]}")
        if msg.dropped:
            for wid in {line.worker_id.hex() for line in msg.lines}:
                self.logs[wid].append(f"(actorgrid) {msg.dropped} lines dropped on this node")

    def _node(self, event: Event) -> str:
        if event.node_id:
            return event.node_id.hex()
        if event.worker_id:
            return self._node_of.get(event.worker_id, UNKNOWN_NODE)
        return UNKNOWN_NODE

    def snapshot(self, view: ClusterView) -> dict[str, Any]:
        """The page's tables for ``view``; also learns which node each worker is on."""
        self._node_of = {w.worker.worker_id: w.worker.node_id.hex() for w in view.workers}
        live = {w.worker.worker_id.hex() for w in view.workers}
        for wid in [wid for wid in self.logs if wid not in live]:
            del self.logs[wid]
        actors = []
        for a in view.actors:
            data = record_json(a)
            data["state"] = "alive"
            data["restarts"] = self.actor_restarts.get(data["actor_id"], 0)
            actors.append(data)
        return {
            "type": "snapshot",
            "nodes": [record_json(n) for n in view.nodes],
            "workers": [record_json(w) for w in view.workers],
            "actors": actors,
            "tasks": [record_json(t) for t in view.tasks],
            "failures": list(self.failures),
            "logs": {wid: list(lines) for wid, lines in self.logs.items()},
        }

    def node_of(self, worker_id: bytes | None) -> str:
        if worker_id is None:
            return UNKNOWN_NODE
        return self._node_of.get(worker_id, UNKNOWN_NODE)
