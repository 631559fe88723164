"""The public side of observability: ``Cluster.read_logs``/``follow_logs``/``tasks`` and
``ag.timeline``.

``task_records(events)`` folds task events (from the head's history) into one record per
task: its latest state, worker and duration. It is pure and O(events).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from .._exceptions import ActorgridError
from .._protocol.ids import WorkerId
from .._protocol.messages import Event
from .._protocol.observe import LogLines, ReadLogs, WorkerOutput
from .._runtime.core import current_runtime
from .._runtime.observe import write_timeline
from .._runtime.output import prefix_of
from .lookup import short_id

if TYPE_CHECKING:
    from .._runtime.core import Runtime

__all__ = ["ObserveMethods", "TaskRecord", "task_records", "timeline"]

# Workers report the calls they sent for a driver every EVENT_FLUSH_INTERVAL_S (0.2 s), one
# hop through the head: a timeline waits this long after the last answer for them.
SPANS_SETTLE_S = 0.6

_STATES = {
    "task_submitted": "submitted",
    "task_scheduled": "scheduled",
    "task_started": "running",
    "task_finished": "finished",
    "task_failed": "failed",
    "task_cancelled": "cancelled",
    "task_retried": "retried",
}


@attrs.frozen
class TaskRecord:
    """A task as the cluster's recent events tell it (``Cluster.tasks()``)."""

    task_id: bytes
    name: str  # the function
    state: str  # submitted, scheduled, running, finished, failed, cancelled, retried
    worker_id: WorkerId | None  # where it ran last
    duration_s: float | None  # from its last start to its end (None: not ended)
    error: str = ""  # for a failed task: "Type: message"
    attempts: int = 0  # times it started
    started: float | None = None  # when its last start was (seconds since the epoch)

    @property
    def short_id(self) -> str:
        return short_id(self.task_id)


def task_records(events: Iterable[Event]) -> list[TaskRecord]:
    """One record per task seen in ``events``, in the order they were submitted."""
    rows: dict[bytes, dict[str, Any]] = {}
    for e in events:
        state = _STATES.get(e.kind)
        if state is None or e.task_id is None:
            continue
        row = rows.setdefault(
            e.task_id,
            {
                "name": e.name,
                "state": state,
                "worker": None,
                "start": None,
                "end": None,
                "error": "",
                "attempts": 0,
            },
        )
        row["name"] = row["name"] or e.name
        if e.worker_id is not None:
            row["worker"] = e.worker_id
        if e.kind == "task_started":
            row["start"], row["end"] = e.time, None
            row["attempts"] += 1
        elif e.kind in ("task_finished", "task_failed", "task_cancelled"):
            row["end"] = e.time
            row["error"] = e.error
        # A start seen after the end it belongs to (two sources) must not undo the end.
        if not (
            e.kind == "task_started"
            and row["state"] in ("finished", "failed")
            and row["end"] is not None
        ):
            row["state"] = state
    return [
        TaskRecord(
            tid,
            r["name"],
            r["state"],
            r["worker"],
            r["end"] - r["start"] if r["start"] is not None and r["end"] is not None else None,
            r["error"],
            r["attempts"],
            r["start"],
        )
        for tid, r in rows.items()
    ]


class ObserveMethods:
    """``Cluster``'s logs and task listings (a base class of it)."""

    _runtime: Runtime

    async def read_logs_async(
        self, *, node: str = "", worker: str = "", actor: str = "", tail: int = 0
    ) -> list[str]:
        """The lines of the nodes' worker log files (all nodes, or those whose id starts with
        ``node``; workers whose id starts with ``worker``; calls of the actor named or of the
        class ``actor``), oldest first; the last ``tail`` lines (0: all the files hold)."""
        reply = await self._runtime.head_request(
            lambda rid: ReadLogs(rid, node, worker, actor, max(tail, 0))
        )
        assert isinstance(reply, LogLines)
        if reply.error and not reply.lines:
            raise ActorgridError(f"could not read the logs: {reply.error}")
        return list(reply.lines)

    def read_logs(
        self, *, node: str = "", worker: str = "", actor: str = "", tail: int = 0
    ) -> list[str]:
        """See ``read_logs_async``."""
        rt = self._runtime
        lines: list[str] = rt.portal.run(
            lambda: self.read_logs_async(node=node, worker=worker, actor=actor, tail=tail)
        )
        return lines

    def follow_logs(
        self,
        callback: Callable[[str], None],
        *,
        node: str = "",
        worker: str = "",
        actor: str = "",
    ) -> None:
        """From now on, call ``callback(line)`` (on the runtime's thread) for every line a
        worker writes in a call (filtered as ``read_logs`` filters), as "(source pid=P
        node=H) text" (``actorgrid logs --follow``)."""
        rt = self._runtime

        def on_output(msg: WorkerOutput) -> None:
            if not msg.node_id.hex().startswith(node.lower()):
                return
            for line in msg.lines:
                if line.worker_id.hex().startswith(worker.lower()) and (
                    not actor or line.source == actor
                ):
                    callback(f"{prefix_of(line, msg.hostname)} {line.text}")

        rt.on_loop(rt.observe.follow, on_output, rt.head)

    async def tasks_async(self) -> list[TaskRecord]:
        return task_records(await self._runtime.subscribe_events(None))

    def tasks(self) -> list[TaskRecord]:
        """The tasks in the cluster's recent events (the head keeps the last 10,000 task events),
        with their state, worker and duration."""
        records: list[TaskRecord] = self._runtime.portal.run(self.tasks_async)
        return records


def timeline(path: str | os.PathLike[str]) -> int:
    """Write every task and actor call of this session's work as Chrome trace events (open in
    chrome://tracing or https://ui.perfetto.dev): the calls this process sent, and those the
    workers sent on its behalf (nested tasks, actor calls made by its tasks and actors); one
    row per worker they ran on, one span per call from sending to answer, with its name and
    argument size. Workers report their calls a few times a second: this waits until
    SPANS_SETTLE_S after the last answer this process got (at most that long). Returns the
    number of spans."""
    rt = current_runtime()
    observer = rt.observe
    wait_s = min(observer.last_answer + SPANS_SETTLE_S - time.time(), SPANS_SETTLE_S)
    if wait_s > 0 and not rt.portal.in_loop_thread():
        time.sleep(wait_s)
    return write_timeline(path, observer)
