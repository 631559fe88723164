"""What a process records about the calls it owns and runs: task events and timeline spans.

Costs, since this sits on the call path: recording is a tuple appended to a bounded deque
(any thread, no lock, no message); nothing is built or sent per call. Every
EVENT_FLUSH_INTERVAL_S one TaskEvents goes to the head with what gathered, at most
EVENT_BATCH_MAX events, in columns (``_protocol/observe.py``): packing costs a few appends per
event, and the head decodes a handful of byte strings per batch whatever it holds (a cattrs
record per event cost the embedded head ~7% of a no-op task's time). A process producing
events faster than that keeps the newest and reports how many it dropped. No Event record is
built anywhere until someone reads them (``Cluster.events()``, ``tasks()``, the dashboard).

Who records what:

- the owner (the process that called ``f.remote()``): ``task_submitted``, ``task_scheduled``
  (worker_id: where), ``task_retried``, ``task_cancelled`` (for a task no worker got, or a
  forced cancel), ``actor_created``, and ``call_finished``/``call_failed`` when an actor
  method call it sent is answered;
- the worker: ``task_started``, then ``task_finished``, ``task_failed`` (error: "Type:
  message") or ``task_cancelled``.

Each report also carries what this process's links carried (``_transport.base.TRAFFIC``);
a process with no events reports that every TRAFFIC_REPORT_S.

The owner also keeps a span per task and actor call it sent (name, worker, argument bytes,
sent and answered times), at most TIMELINE_MAX_SPANS, for ``ag.timeline()``.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._exceptions import TaskCancelledError
from .._protocol.ids import ActorId, NodeId, ObjectId, WorkerId
from .._protocol.messages import ActorInfo, Event, EventBatch, Message, Payload
from .._protocol.observe import (
    TRACEBACK_MARK,
    CallSpans,
    SubscribeOutput,
    TaskEventRecord,
    TaskEvents,
    WorkerOutput,
    expand_task_events,
    pack_task_events,
)
from .._scheduler.traffic import TrafficTable
from .._transport.base import TRAFFIC
from .output import OutputPrinter, current_root, output_source
from .serialization import loads_error

if TYPE_CHECKING:
    from .headlink import EventFeed
    from .peer import Peer

__all__ = ["EVENT_FLUSH_INTERVAL_S", "Observer", "write_timeline"]

EVENT_FLUSH_INTERVAL_S = 0.2
EVENT_BATCH_MAX = 4000
TRAFFIC_REPORT_S = 2.0
TIMELINE_MAX_SPANS = 1_000_000
# Calls sent and not answered yet, kept for their spans, at most (the oldest go first).
OPEN_MAX = 1_000_000
OUTPUT_TICK_S = 0.5
# A failed task's traceback travels with its event up to this long (its end: the raise).
TRACEBACK_MAX_CHARS = 4000
# A driver leaving waits until this long after its last answer (at most), so that what the
# calls printed, a few batching intervals behind their answers, is shown before it goes.
OUTPUT_SETTLE_S = 0.3

# Calls sent on behalf of drivers' work kept until the next report, at most.
ROOT_SPANS_MAX = 50_000

# (name, worker, argument bytes, sent, answered, ok); a name is a string, or (class, method)
# for an actor call (joined when written).
Span = tuple[str | tuple[str, str], WorkerId | None, int, float, float, bool]
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

    def __init__(
        self, observer: Observer, peer: Peer | None, task_id: ObjectId, name: str, root: str
    ) -> None:
        super().__init__()
        self._observer = observer
        self._task_id = task_id
        self._name = name
        self._source = output_source(name, peer, root)

    def __enter__(self) -> TaskRun:
        obs = self._observer
        obs.record("task_started", self._task_id, self._name, obs.worker_id)
        obs.roots[self._task_id] = self._source.root
        self._source.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._source.__exit__()
        obs = self._observer
        obs.roots.pop(self._task_id, None)
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
        self.follow_everything = False  # subscribed to every worker's output (followers)
        self.address = ""  # this process's, once connected to the head
        # Set by a worker process once it knows who it is.
        self.worker_id: WorkerId | None = None
        self.node_id: NodeId | None = None
        self.hostname = ""
        # A simulation on virtual time lengthens it: each flush is a wake-up of the whole run.
        self.flush_interval_s = EVENT_FLUSH_INTERVAL_S
        # Spans: task_id -> (name, worker, argument bytes, sent at); done: + answered at, ok.
        # A name is a string, or (class, method) for an actor call (joined when written).
        self._open: dict[
            ObjectId, tuple[str | tuple[str, str], WorkerId | None, int, float, str]
        ] = {}
        # Root driver of each task running here (see output_source), and the spans of calls
        # sent here on behalf of a driver's work, until the next report (CallSpans).
        self.roots: dict[ObjectId, str] = {}
        self._root_spans: dict[str, list[Span]] = {}
        self._root_span_count = 0
        self.spans: deque[Span] = deque(maxlen=TIMELINE_MAX_SPANS)
        self._names: dict[bytes, str] = {}  # function id -> name
        self.last_answer = 0.0  # time.time() of the last answer to a call sent here
        # What each process reported its links carried, filled where TaskEvents arrive (a
        # subscriber: the dashboard); a process's row goes when it exits (worker_died).
        self.traffic = TrafficTable()
        self._reported_traffic = (0, 0)

    def handlers(self, feed: EventFeed) -> dict[type, Callable[[Peer, Any], None]]:
        def on_batch(peer: Peer, batch: EventBatch) -> None:
            for event in batch.events:
                feed.push(event)

        def on_spans(peer: Peer, msg: CallSpans) -> None:
            self.spans.extend(
                (n, WorkerId(w) if w else None, b, s, a, ok) for n, w, b, s, a, ok in msg.spans
            )

        def on_task_events(peer: Peer, batch: TaskEvents) -> None:
            self.traffic.report(
                (batch.node_id, batch.hostname, batch.pid), batch.sent_bytes, batch.received_bytes
            )
            for event in expand_task_events(batch):
                feed.push(event)

        def on_output(peer: Peer, msg: WorkerOutput) -> None:
            if self.printer is not None:
                if self.follow_everything:  # shown here: only the lines of our own calls
                    mine = tuple(line for line in msg.lines if line.owner == self.address)
                    if mine or msg.dropped:
                        self.printer.handle(attrs.evolve(msg, lines=mine))
                else:
                    self.printer.handle(msg)
            for follower in self.followers:
                follower(msg)

        def on_event(event: Event) -> None:  # every event this process is sent
            if event.kind == "worker_died" and event.pid is not None:
                self.traffic.ended((event.node_id, event.hostname, event.pid))
            elif event.kind in ("node_closed", "node_zombie") and event.node_id is not None:
                self.traffic.node_ended(event.node_id)

        feed.listeners.append(on_event)
        return {
            EventBatch: on_batch,
            TaskEvents: on_task_events,
            WorkerOutput: on_output,
            CallSpans: on_spans,
        }

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
        root: str = "",
    ) -> None:
        """A task was sent to ``worker_id``; ``root``: the driver whose work it is part of,
        when sent by a worker (see ``root_of``)."""
        name = self.name_of(function_id, blob)
        self.record("task_scheduled", task_id, name, worker_id)
        self._open[task_id] = (name, worker_id, nbytes, time.time(), root)
        if len(self._open) > OPEN_MAX:
            self._forget_oldest()

    def call_made(self, task_id: ObjectId) -> None:
        """Any thread, where ``handle.method.remote()`` runs: the call belongs to the root of
        the call running here. Taken now, not when the loop sends it: a sync actor's call
        sent through the loop (a burst, a handle still being placed, a resend after a
        restart) would otherwise see the loop's context, which is no call's."""
        root = current_root()
        if root:
            self._open[task_id] = ("", None, 0, 0.0, root)
            if len(self._open) > OPEN_MAX:
                self._forget_oldest()

    def call_sent(
        self, task_id: ObjectId, label: str, method: str, worker_id: WorkerId | None, nbytes: int
    ) -> str:
        """An actor method call was sent (again, for a resend); returns its root
        (CallActor.root): the driver whose work the call that made it is part of, or ""."""
        made = self._open.get(task_id)
        root = made[4] if made is not None else current_root()
        self._open[task_id] = ((label, method), worker_id, nbytes, time.time(), root)
        if made is None and len(self._open) > OPEN_MAX:
            self._forget_oldest()
        return root

    def _forget_oldest(self) -> None:
        # Calls that end with no answer (their worker died) are never popped by answered().
        # A tenth goes at once: finding the oldest walks the dict's front, once per many calls.
        try:
            oldest = list(islice(self._open, OPEN_MAX // 10))
        except RuntimeError:  # another thread changed it meanwhile: the next call tries again
            return
        for task_id in oldest:
            self._open.pop(task_id, None)

    def root_of(self, parent: ObjectId | None) -> str:
        """SubmitTask.root of a task started by the task ``parent`` running here."""
        return self.roots.get(parent, "") if parent is not None else ""

    def forget(self, task_id: ObjectId) -> None:
        """A call that is never answered (``quiet.py``) was sent: no span, no event."""
        self._open.pop(task_id, None)

    def answered(self, task_id: ObjectId, ok: bool, when: float | None = None) -> None:
        """A call's answer, which came at ``when`` (time.time(); default: now)."""
        now = self.last_answer = time.time() if when is None else when
        sent = self._open.pop(task_id, None)
        if sent is not None:
            name, worker_id, nbytes, when, root = sent
            span = (name, worker_id, nbytes, when, now, ok)
            if not root:
                self.spans.append(span)
            elif self._root_span_count < ROOT_SPANS_MAX:
                self._root_spans.setdefault(root, []).append(span)
                self._root_span_count += 1
            if isinstance(name, tuple):  # an actor method call
                kind = "call_finished" if ok else "call_failed"
                self._records.append(
                    (kind, now, task_id, f"{name[0]}.{name[1]}", worker_id, None, None)
                )
                self._recorded += 1

    def running(self, peer: Peer | None, task_id: ObjectId, name: str, root: str = "") -> TaskRun:
        """Around user code of a task on this worker: its output is tagged with ``name`` and
        its root (SubmitTask.root, else the sender); its start and end are recorded."""
        return TaskRun(self, peer, task_id, name, root)

    def take_root_spans(self) -> list[CallSpans]:
        """The spans gathered for each driver since the last call, one CallSpans each."""
        if not self._root_spans:
            return []
        out = [
            CallSpans(
                root,
                tuple(
                    (n if isinstance(n, str) else f"{n[0]}.{n[1]}", w or b"", b, s, a, ok)
                    for n, w, b, s, a, ok in spans
                ),
            )
            for root, spans in self._root_spans.items()
        ]
        self._root_spans = {}
        self._root_span_count = 0
        return out

    # --- flushing (loop) -------------------------------------------------------------------

    def take(self, force: bool = False) -> TaskEvents | None:
        """The events gathered since the last call, packed; None if there are none (unless
        ``force``: a report of this process's traffic alone)."""
        if not self._recorded and not force:
            return None
        records = list(self._records)
        dropped = max(self._recorded - len(records), 0)
        self._records.clear()
        self._recorded = 0
        self._reported_traffic = (TRAFFIC.sent, TRAFFIC.received)
        packed = self._packed
        return pack_task_events(
            # A record with no error and no actor is packed as it is (no note): nearly all.
            [r if r[5] is None and r[6] is None else packed(r) for r in records],
            node_id=self.node_id,
            hostname=self.hostname,
            pid=os.getpid() if self.worker_id is not None else None,
            sent_bytes=TRAFFIC.sent,
            received_bytes=TRAFFIC.received,
            dropped=dropped,
        )

    @staticmethod
    def _packed(record: _Record) -> TaskEventRecord:
        kind, when, task_id, name, worker_id, error, actor_id = record
        if error is None:
            return kind, when, task_id, name, worker_id, "", actor_id
        text = ""
        if isinstance(error, Payload):
            if kind in ("task_failed", "call_failed"):
                exc = loads_error(error)
                cause = getattr(exc, "cause", None) or exc
                # A worker interrupts a cancelled task's thread with KeyboardInterrupt
                # (interrupt.py): no user code in a worker gets one otherwise.
                if isinstance(exc, TaskCancelledError) or isinstance(cause, KeyboardInterrupt):
                    kind = "task_cancelled"
                text = f"{type(cause).__name__}: {cause}"
                trace = getattr(exc, "remote_traceback", "")
                if kind == "task_failed" and trace:  # the dashboard's recent failures show it
                    text += TRACEBACK_MARK + trace[-TRACEBACK_MAX_CHARS:]
        elif isinstance(error, str):
            text = error
        return kind, when, task_id, name, worker_id, text, actor_id

    async def serve(self, send: Callable[[Message], object]) -> None:
        """Send the events gathered every EVENT_FLUSH_INTERVAL_S; show folded output counts."""
        next_tick = 0.0
        next_traffic = trio.current_time() + TRAFFIC_REPORT_S
        while True:
            await trio.sleep(self.flush_interval_s)
            now = trio.current_time()
            traffic_due = now >= next_traffic and self._reported_traffic != (
                TRAFFIC.sent,
                TRAFFIC.received,
            )
            batch = self.take(force=traffic_due)
            if batch is not None:
                send(batch)
                next_traffic = now + TRAFFIC_REPORT_S
            for spans in self.take_root_spans():
                send(spans)
            if self.printer is not None and trio.current_time() >= next_tick:
                next_tick = trio.current_time() + OUTPUT_TICK_S
                self.printer.tick()

    def show_output(self, log_to_driver: bool) -> None:
        """At a driver: print the output of the calls it sends (``log_to_driver``)."""
        self.log_to_driver = log_to_driver
        self.printer = OutputPrinter(time.monotonic) if log_to_driver else None

    def follow(self, listener: Callable[[WorkerOutput], None], head: Peer | None) -> None:
        """Loop: call ``listener`` with every worker's output from now on (``actorgrid logs
        --follow``, the dashboard's log lines)."""
        self.followers.append(listener)
        if not self.follow_everything:
            self.follow_everything = True
            if head is not None:
                head.send(SubscribeOutput(everything=True))

    def on_head_connected(self, head: Peer, address: str = "") -> None:
        self.address = address or self.address
        if self.log_to_driver or self.follow_everything:
            head.send(SubscribeOutput(everything=self.follow_everything))

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
