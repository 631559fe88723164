"""Cancelling and interrupting the tasks and calls of a worker: one by its owner's or an
operator's cancel, those of a caller whose link closed, all of them when the worker stops.

A queued one never runs; async code is cancelled; sync code gets KeyboardInterrupt; whatever
still runs ``grace_s`` later gets the worker killed, so that its node restarts it.
ExecutorTasks (``running.py``) runs the tasks; this is its base.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .._exceptions import TaskCancelledError
from .._protocol.ids import ObjectId, short
from .._protocol.messages import Ack, CancelById, CancelTask, Payload, TaskResult
from .lanes import _FORCE_FLUSH_S, _IDLE_POLL_S, TaskQueue, _Call, _cancelled, _Task, _TaskItem, log
from .serialization import system_error
from .starting import START_BATCH

if TYPE_CHECKING:
    from .core import Runtime
    from .holdings import Holdings
    from .peer import Peer

__all__ = ["TaskCancels"]


class TaskCancels:
    """Cancels and interrupts the tasks and calls of ExecutorTasks (running.py)."""

    # Defined by ExecutorTasks (running.py); declared so that this layer type-checks alone.
    runtime: Runtime
    grace_s: float
    queue: TaskQueue
    holdings: Holdings
    tasks: dict[ObjectId, _Task | _Call | _TaskItem]
    drain_ended: Callable[[], None]
    task_done: Callable[[_TaskItem, bool, Payload], None]
    _nursery: trio.Nursery | None

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    def on_cancel_by_id(self, peer: Peer, msg: CancelById) -> None:
        """An operator's cancel (Cluster.cancel_task): like CancelTask, with an answer."""
        self.drain_ended()
        if msg.task_id not in self.tasks:
            peer.send(Ack(msg.rid, f"no task {short(msg.task_id)} is running or queued here"))
            return
        peer.send(Ack(msg.rid))
        self.runtime.cancel_children(msg.task_id, msg.force)
        # The owner does not know of this cancel: if the worker is killed, the owner is told
        # that the task was cancelled first, or it would take the lost link for a failure and
        # retry the task.
        if not msg.force:
            self._interrupt(msg.task_id, self.tasks[msg.task_id], tell_owner=True)
            return

        async def answer_then_die() -> None:
            with trio.CancelScope(shield=True):
                await peer.wait_sent(_FORCE_FLUSH_S)
                await self._answer_cancelled(msg.task_id, "force=True kills its worker")
            log.warning("cancel(force=True) of %s: killing this worker", short(msg.task_id))
            os.kill(os.getpid(), signal.SIGKILL)

        self.nursery.start_soon(answer_then_die)

    async def _answer_cancelled(self, task_id: ObjectId, why: str) -> None:
        """Tell the owner of a task an operator cancelled that it was, before this worker is
        killed."""
        self.drain_ended()
        item = self.tasks.pop(task_id, None)
        if item is None:
            return
        label = item.label if not isinstance(item, _Call) else item.method
        error = TaskCancelledError(f"{label} was cancelled by an operator; {why}")
        item.peer.send(TaskResult(task_id, False, system_error(error)))
        with trio.CancelScope(shield=True):
            await item.peer.wait_sent(_FORCE_FLUSH_S)

    def on_cancel(self, peer: Peer, msg: CancelTask) -> None:
        self.drain_ended()  # a call already answered is over: its cancel does nothing
        item = self.tasks.get(msg.task_id)
        if item is None:
            return
        if msg.recursive:
            self.runtime.cancel_children(msg.task_id, msg.force)
        if msg.force:
            log.warning("cancel(force=True) of %s: killing this worker", short(msg.task_id))
            os.kill(os.getpid(), signal.SIGKILL)
        self._interrupt(msg.task_id, item)

    def caller_gone(self, peer: Peer) -> None:
        """The link from a process that submitted tasks here closed (it exited, was killed,
        or went silent): nobody takes their results (the caller, if alive, fails them or
        runs them elsewhere), so they are cancelled, with the tasks they started. Its actors
        are the head's business (it kills those of a creator that left)."""
        self.drain_ended()
        for task_id, item in list(self.tasks.items()):  # O(calls here), once per lost link
            if item.peer is peer and (
                isinstance(item, _TaskItem) or (isinstance(item, _Task) and item.kind == "task")
            ):
                self.runtime.cancel_children(task_id, False)
                self._interrupt(task_id, item)

    def _interrupt(
        self,
        task_id: ObjectId,
        item: _Task | _Call | _TaskItem,
        *,
        tell_owner: bool = False,
        watch: bool = True,
    ) -> None:
        """Cancel one call: a queued one never runs, async code is cancelled, sync code gets
        KeyboardInterrupt; whatever still runs after ``grace_s`` gets the process killed
        (``watch``)."""
        if isinstance(item, _TaskItem):
            item.cancelled = True
            if self.queue.remove(item) or self.holdings.drop_waiting(task_id):
                self.task_done(item, False, _cancelled(item.label))
                return
            item.running.interrupt()
        elif isinstance(item, _Task):
            item.cancel()
        else:
            item.cancelled = True
            if item.scope is not None:
                item.scope.cancel()
            item.running.interrupt()
        if watch:
            try:
                self.nursery.start_soon(self._kill_if_still_running, task_id, item, tell_owner)
            except RuntimeError:  # the worker is stopping: its grace period bounds the call
                log.debug("no watchdog for %s: the worker is stopping", short(task_id))

    async def _kill_if_still_running(
        self, task_id: ObjectId, item: _Task | _Call | _TaskItem, tell_owner: bool = False
    ) -> None:
        await trio.sleep(self.grace_s)
        self.drain_ended()
        if self.tasks.get(task_id) is item:
            log.error(
                "a cancelled call (%s) was still running %g s later: killing this worker so "
                "that its node restarts it",
                short(task_id),
                self.grace_s,
            )
            if tell_owner:
                why = f"it still ran {self.grace_s:g} s later, so its worker was killed"
                await self._answer_cancelled(task_id, why)
            os.kill(os.getpid(), signal.SIGKILL)

    async def interrupt_all(self, reason: str) -> None:
        """Cancel every call on this worker (the worker is stopping), START_BATCH per loop
        turn: 100,000 agents cancelled at once would all end in one turn, seconds in which
        the worker writes no pulse. No watchdog task per call either: the stopping worker
        bounds them all by its grace period (worker.py)."""
        self.drain_ended()
        log.info("interrupting %d calls: %s", len(self.tasks), reason)
        for n, (task_id, item) in enumerate(list(self.tasks.items()), 1):
            if self.tasks.get(task_id) is item:
                self._interrupt(task_id, item, watch=False)
            if n % START_BATCH == 0:
                await trio.lowlevel.checkpoint()

    async def wait_idle(self) -> None:
        """Return once no call is queued or running here."""
        while True:
            self.drain_ended()
            if not self.tasks:
                return
            await trio.sleep(_IDLE_POLL_S)
