"""The head's share of observability: task events in batches, worker output to drivers, and
log files read across nodes.

- TaskEvents (from owners and workers, in columns): kept as they came, at most
  TASK_EVENT_HISTORY events in all (the oldest batches go first), and forwarded as they are
  to every event subscriber. O(1) per batch: an Event record is made only when someone reads
  the history (``history()``: sorted by time then, a task's events come from two processes).
- EventBatch (node and worker life, from node agents): kept in the head's bounded history
  and forwarded, still as one batch, to every event subscriber.
- WorkerOutput (from node agents): each line goes to the driver whose work wrote it (the
  line's ``owner``: the root of its call tree, nested tasks and actor calls included), if
  that driver asked for output, and to no other. A line whose owner is a worker or unknown
  (a call whose root could not be told) goes to every driver that asked. Subscribers with
  ``everything`` (``actorgrid logs --follow``, the dashboard) get all. Cost: O(lines +
  subscribers) per batch, one message per subscriber per batch.
- CallSpans (from workers): sent on to the driver they name (``root``), which adds them to
  its timeline. The head knows a driver's address from its first TaskEvents or
  SubscribeOutput.
- ReadLogs (from ``Cluster.read_logs``): asked of every node whose id starts with the prefix,
  at once; the lines are merged by time and cut to the tail.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

import trio

from .._protocol.messages import Event, EventBatch
from .._protocol.observe import (
    CallSpans,
    LogLines,
    OutputLine,
    ReadLogs,
    SubscribeOutput,
    TaskEvents,
    WorkerOutput,
    expand_task_events,
)
from .._runtime.headlink import TASK_EVENT_HISTORY, merge_by_time
from .._runtime.peer import Peer, PeerClosedError

__all__ = ["ObserveHub"]

READ_LOGS_TIMEOUT_S = 30.0
log = logging.getLogger("actorgrid.head")


class ObserveHub:
    def __init__(
        self,
        events: deque[Event],
        event_subscribers: set[Peer],
        nodes: Callable[[], Collection[tuple[str, Peer]]],
        background: Callable[..., None],
        is_worker: Callable[[str], bool] = lambda address: False,
    ) -> None:
        self._events = events
        # Task events (in EventBatch, from older senders) apart from the cluster's, and the
        # TaskEvents batches as they came, with how many events those hold.
        self.task_events: deque[Event] = deque(maxlen=TASK_EVENT_HISTORY)
        self._task_batches: deque[TaskEvents] = deque()
        self._task_batch_events = 0
        self._event_subscribers = event_subscribers
        self._nodes = nodes  # (node id hex, link) of each node agent
        self._background = background
        self._output_subs: dict[Peer, bool] = {}  # driver -> wants everything
        self._by_address: dict[str, Peer] = {}  # of output subscribers
        self._senders: dict[str, Peer] = {}  # address -> link, of processes that report
        self._is_worker = is_worker

    def handlers(self) -> dict[type, Callable[[Peer, Any], None]]:
        return {
            EventBatch: self._on_batch,
            TaskEvents: self._on_task_events,
            CallSpans: self._on_spans,
            SubscribeOutput: self._on_subscribe_output,
            WorkerOutput: self._on_output,
            ReadLogs: self._on_read_logs,
        }

    def history(self) -> tuple[Event, ...]:
        """The events the head remembers, task events merged in by time."""
        tasks = list(self.task_events)
        for batch in self._task_batches:
            try:
                tasks.extend(expand_task_events(batch))
            except ValueError as exc:
                log.warning("a task event report from %s is malformed: %s", batch.hostname, exc)
        return tuple(merge_by_time(self._events, tasks[-TASK_EVENT_HISTORY:]))

    def forget(self, peer: Peer) -> None:
        hello = peer.remote_hello
        if hello is not None and self._senders.get(hello.address) is peer:
            del self._senders[hello.address]
        self._output_subs.pop(peer, None)
        if hello is not None and self._by_address.get(hello.address) is peer:
            del self._by_address[hello.address]

    def _sender(self, peer: Peer) -> None:
        hello = peer.remote_hello
        if hello is not None and hello.address:
            self._senders[hello.address] = peer

    def _on_batch(self, peer: Peer, batch: EventBatch) -> None:
        for event in batch.events:
            (self.task_events if event.task_id is not None else self._events).append(event)
        for sub in self._event_subscribers:
            sub.send(batch)

    def _on_task_events(self, peer: Peer, batch: TaskEvents) -> None:
        self._sender(peer)
        batches = self._task_batches
        batches.append(batch)
        self._task_batch_events += len(batch)
        while self._task_batch_events - len(batches[0]) >= TASK_EVENT_HISTORY:
            self._task_batch_events -= len(batches.popleft())
        for sub in self._event_subscribers:
            sub.send(batch)

    def _on_spans(self, peer: Peer, msg: CallSpans) -> None:
        root = self._senders.get(msg.root)
        if root is not None:
            root.send(msg)

    def _on_subscribe_output(self, peer: Peer, msg: SubscribeOutput) -> None:
        self._sender(peer)
        self._output_subs[peer] = msg.everything
        hello = peer.remote_hello
        if hello is not None and hello.address:
            self._by_address[hello.address] = peer

    def _on_output(self, peer: Peer, msg: WorkerOutput) -> None:
        if not self._output_subs:
            return
        to: dict[Peer, list[OutputLine]] = {}
        everyone = list(self._output_subs)
        for line in msg.lines:
            owner = self._by_address.get(line.owner)
            if owner is not None:
                to.setdefault(owner, []).append(line)
            elif not line.owner or self._is_worker(line.owner):  # its root is not known
                for sub in everyone:
                    to.setdefault(sub, []).append(line)
        for sub, everything in self._output_subs.items():
            if everything:
                to[sub] = list(msg.lines)
        for sub, lines in to.items():
            sub.send(WorkerOutput(msg.node_id, msg.hostname, tuple(lines), msg.dropped))

    def _on_read_logs(self, peer: Peer, msg: ReadLogs) -> None:
        self._background("reading logs", self._read_logs, peer, msg)

    async def _read_logs(self, peer: Peer, msg: ReadLogs) -> None:
        nodes = [(nid, link) for nid, link in self._nodes() if nid.startswith(msg.node.lower())]
        lines: list[str] = []
        errors: list[str] = []

        async def ask(nid: str, link: Peer) -> None:
            try:
                reply = await link.request(
                    lambda rid: ReadLogs(rid, "", msg.worker, msg.actor, msg.tail)
                )
            except PeerClosedError as exc:
                errors.append(f"node {nid[:8]}: {exc}")
                return
            if isinstance(reply, LogLines):
                lines.extend(reply.lines)
                if reply.error:
                    errors.append(f"node {nid[:8]}: {reply.error}")

        with trio.move_on_after(READ_LOGS_TIMEOUT_S) as scope:
            async with trio.open_nursery() as nursery:
                for nid, link in nodes:
                    nursery.start_soon(ask, nid, link)
        if scope.cancelled_caught:
            errors.append(f"some nodes did not answer within {READ_LOGS_TIMEOUT_S:.0f} s")
        if not nodes:
            errors.append(f"no node's id starts with {msg.node!r}")
        lines.sort()
        if msg.tail:
            lines = lines[-msg.tail :]
        peer.send(LogLines(msg.rid, tuple(lines), "; ".join(errors) or None))
