"""What a process records about the calls it owns and runs: task events and timeline spans.

Costs, since this sits on the call path: recording is a tuple appended to a bounded deque
(any thread, no lock, no message); nothing is built or sent per call. Every
EVENT_FLUSH_INTERVAL_S one EventBatch goes to the head with what gathered, at most
EVENT_BATCH_MAX events: a process producing events faster than that keeps the newest and
reports how many it dropped (``EventBatch.dropped``), so tens of thousands of tiny tasks a
second cost the head link a few KB per interval, not a message per task.

Who records what:

- the owner (the process that called ``f.remote()``): ``task_submitted``, ``task_scheduled``
  (worker_id: where), ``task_retried``, ``task_cancelled`` (for a task no worker got, or a
  forced cancel);
- the worker: ``task_started``, then ``task_finished``, ``task_failed`` (error: "Type:
  message") or ``task_cancelled``; ``actor_created``.

The owner also keeps a span per task and actor call it sent (name, worker, argument bytes,
sent and answered times), at most TIMELINE_MAX_SPANS, for ``ag.timeline()``.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from .._exceptions import TaskCancelledError
from .._protocol.ids import ActorId, NodeId, ObjectId, WorkerId
from .._protocol.messages import ActorInfo, Event, EventBatch, Message, Payload
from .._protocol.observe import SubscribeOutput, WorkerOutput
from .output import OutputPrinter, output_source
from .serialization import loads_error

if TYPE_CHECKING:
    from .headlink import EventFeed
    from .peer import Peer

__all__ = ["EVENT_FLUSH_INTERVAL_S", "Observer", "write_timeline"]

EVENT_FLUSH_INTERVAL_S = 0.2
EVENT_BATCH_MAX = 500
TIMELINE_MAX_SPANS = 1_000_000
OUTPUT_TICK_S = 0.5
# A driver leaving waits until this long after its last answer (at most), so that what the
# calls printed, a few batching intervals behind their answers, is shown before it goes.
OUTPUT_SETTLE_S = 0.3

# (kind, time, task_id, name, worker_id, error payload or text, actor_id)
_Record = tuple[str, float, ObjectId | None, str, WorkerId | None, Any, ActorId | None]


class Outcome:
    """Filled in by the code that ran a call: how it ended."""

    __slots__ = ("ok", "payload")

    def __init__(self) -> None:
        self.ok = True
        self.payload: Payload | None = None

    def set(self, ok: bool, payload: Payload) -> None:
        self.ok = ok
        self.payload = payload


class TaskRun(Outcome):
    """The context of one task's user code (``Observer.running``); a class, not a generator:
    it is on every task's path."""

    __slots__ = ("_name", "_observer", "_source", "_task_id")

    def __init__(self, observer: Observer, peer: Peer | None, task_id: ObjectId, name: str):
        super().__init__()
        self._observer = observer
        self._task_id = task_id
        self._name = name
        self._source = output_source(name, peer)

    def __enter__(self) -> TaskRun:
        obs = self._observer
        obs.record("task_started", self._task_id, self._name, obs.worker_id)
        self._source.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._source.__exit__()
        obs = self._observer
        if exc_type is not None:  # cancelled (trio.Cancelled passes through here)
            kind = "task_cancelled"
        else:
            kind = "task_finished" if self.ok else "task_failed"
        obs.record(kind, self._task_id, self._name, obs.worker_id, self.payload)


class Observer:
    """One process's task events, timeline spans and (at a driver) printed worker output."""

    def __init__(self) -> None:
        self._records: deque[_Record] = deque(maxlen=EVENT_BATCH_MAX)
        self._recorded = 0  # since the last flush; more than the deque holds were dropped
        self.log_to_driver = False
        self.printer: OutputPrinter | None = None
        self.followers: list[Callable[[WorkerOutput], None]] = []  # Cluster.follow_logs
        # Set by a worker process once it knows who it is.
        self.worker_id: WorkerId | None = None
        self.node_id: NodeId | None = None
        self.hostname = ""
        # A simulation on virtual time lengthens it: each flush is a wake-up of the whole run.
        self.flush_interval_s = EVENT_FLUSH_INTERVAL_S
        # Spans: task_id -> (name, worker, argument bytes, sent at); done: + answered at, ok.
        # A name is a string, or (class, method) for an actor call (joined when written).
        self._open: dict[ObjectId, tuple[str | tuple[str, str], WorkerId | None, int, float]] = {}
        self.spans: deque[
            tuple[str | tuple[str, str], WorkerId | None, int, float, float, bool]
        ] = deque(maxlen=TIMELINE_MAX_SPANS)
        self._names: dict[bytes, str] = {}  # function id -> name
        self.last_answer = 0.0  # time.time() of the last answer to a call sent here

    def handlers(self, feed: EventFeed) -> dict[type, Callable[[Peer, Any], None]]:
        def on_batch(peer: Peer, batch: EventBatch) -> None:
            for event in batch.events:
                feed.push(event)

        def on_output(peer: Peer, msg: WorkerOutput) -> None:
            if self.printer is not None:
                self.printer.handle(msg)
            for follower in self.followers:
                follower(msg)

        return {EventBatch: on_batch, WorkerOutput: on_output}

    # --- recording (any thread) --------------------------------------------------------------

    def record(
        self,
        kind: str,
        task_id: ObjectId | None,
        name: str = "",
        worker_id: WorkerId | None = None,
        error: Any = None,
        actor_id: ActorId | None = None,
    ) -> None:
        self._records.append((kind, time.time(), task_id, name, worker_id, error, actor_id))
        self._recorded += 1

    def actor_created(self, info: ActorInfo, worker_id: WorkerId | None) -> None:
        """At the actor's owner: its constructor returned on ``worker_id``."""
        name = info.name or info.label
        self.record("actor_created", None, name, worker_id, actor_id=info.actor_id)

    def name_of(self, function_id: bytes, blob: Callable[[], bytes]) -> str:
        """The name of the function a task runs (its code object holds it)."""
        name = self._names.get(function_id)
        if name is None:
            obj = getattr(getattr(blob, "__self__", None), "obj", None)
            name = self._names[function_id] = getattr(obj, "__qualname__", "task")
        return name

    def task_sent(
        self,
        task_id: ObjectId,
        function_id: bytes,
        blob: Callable[[], bytes],
        worker_id: WorkerId | None,
        nbytes: int,
    ) -> None:
        name = self.name_of(function_id, blob)
        self.record("task_scheduled", task_id, name, worker_id)
        self._open[task_id] = (name, worker_id, nbytes, time.time())

    def call_sent(
        self, task_id: ObjectId, label: str, method: str, worker_id: WorkerId | None, nbytes: int
    ) -> None:
        self._open[task_id] = ((label, method), worker_id, nbytes, time.time())

    def answered(self, task_id: ObjectId, ok: bool) -> None:
        now = self.last_answer = time.time()
        span = self._open.pop(task_id, None)
        if span is not None:
            self.spans.append((*span, now, ok))

    def running(self, peer: Peer | None, task_id: ObjectId, name: str) -> TaskRun:
        """Around user code of a task on this worker: its output is tagged with ``name``;
        its start and end are recorded."""
        return TaskRun(self, peer, task_id, name)

    # --- flushing (loop) -------------------------------------------------------------------

    def take(self) -> EventBatch | None:
        if not self._recorded:
            return None
        records = list(self._records)
        dropped = max(self._recorded - len(records), 0)
        self._records.clear()
        self._recorded = 0
        return EventBatch(tuple(self._event(*r) for r in records), dropped)

    def _event(
        self,
        kind: str,
        when: float,
        task_id: ObjectId | None,
        name: str,
        worker_id: WorkerId | None,
        error: Any,
        actor_id: ActorId | None,
    ) -> Event:
        text = ""
        if isinstance(error, Payload) and kind == "task_failed":
            exc = loads_error(error)
            cause = getattr(exc, "cause", None) or exc
            if isinstance(exc, TaskCancelledError):
                kind = "task_cancelled"
            text = f"{type(cause).__name__}: {cause}"
        elif isinstance(error, str):
            text = error
        detail = f"task {task_id.hex()[:8]}: {text}" if kind == "task_retried" and task_id else ""
        return Event(
            kind,
            when,
            detail=detail,
            node_id=self.node_id,
            worker_id=worker_id,
            pid=os.getpid() if self.worker_id is not None else None,
            hostname=self.hostname,
            task_id=task_id,
            actor_id=actor_id,
            name=name,
            error=text,
        )

    async def serve(self, send: Callable[[Message], object]) -> None:
        """Send the events gathered every EVENT_FLUSH_INTERVAL_S; show folded output counts."""
        next_tick = 0.0
        while True:
            await trio.sleep(self.flush_interval_s)
            batch = self.take()
            if batch is not None:
                send(batch)
            if self.printer is not None and trio.current_time() >= next_tick:
                next_tick = trio.current_time() + OUTPUT_TICK_S
                self.printer.tick()

    def show_output(self, log_to_driver: bool) -> None:
        """At a driver: print the output of the calls it sends (``log_to_driver``)."""
        self.log_to_driver = log_to_driver
        self.printer = OutputPrinter(time.monotonic) if log_to_driver else None

    def on_head_connected(self, head: Peer) -> None:
        if self.log_to_driver:
            head.send(SubscribeOutput())

    async def settle(self) -> None:
        """At a driver that shows output: wait for the output of its last calls (bounded by
        OUTPUT_SETTLE_S after the last answer)."""
        if self.printer is not None:
            await trio.sleep(
                min(max(0.0, self.last_answer + OUTPUT_SETTLE_S - time.time()), OUTPUT_SETTLE_S)
            )

    def close(self) -> None:
        if self.printer is not None:
            self.printer.close()


def write_timeline(path: str | os.PathLike[str], observer: Observer) -> int:
    """Write ``observer``'s spans as Chrome trace events to ``path``: one row per worker,
    one span per call. Returns the number of spans written."""
    rows: dict[WorkerId | None, int] = {}
    events: list[dict[str, Any]] = []
    spans = list(observer.spans)
    for name, worker, nbytes, sent, answered, ok in spans:
        if isinstance(name, tuple):
            name = f"{name[0]}.{name[1]}"
        tid = rows.get(worker)
        if tid is None:
            tid = rows[worker] = len(rows) + 1
            label = f"worker {worker.hex()[:8]}" if worker is not None else "waiting"
            events.append(
                {"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": label}}
            )
        events.append(
            {
                "name": name,
                "cat": "call",
                "ph": "X",
                "ts": sent * 1e6,
                "dur": max(answered - sent, 0.0) * 1e6,
                "pid": 1,
                "tid": tid,
                "args": {"argument_bytes": nbytes, "ok": ok},
            }
        )
    events.insert(0, {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "session"}})
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
    return len(spans)
