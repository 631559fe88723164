"""The worker side of calls: runs tasks and hosts actors in the worker's nursery.

- Sync tasks wait in one FIFO queue and run on pool threads while holding ``num_cpus`` of the
  worker's CPUs, so the loop stays free to answer messages. A pool thread that finishes a task
  takes the next one itself: a burst of tasks costs one thread hand-off, not one per task. A
  sync task blocked in ``ag.get`` lends its CPUs back until it wakes. Async tasks are Trio
  tasks in the worker's nursery.
- An actor is one Trio task holding a bounded inbox. A sync class actor's calls go from the
  inbox into its lane, which one pool thread at a time drains in order; async methods run
  concurrently on the loop, up to ``max_concurrency``, started in order. Remote coroutines
  taking a Context read their inbox as a mailbox.
- Delivery never waits: a message for a full inbox is parked in the actor's overflow and moved
  in, in order, as the actor consumes, so one busy actor never holds up the link's other
  actors, its pulses or its replies. Mailbox senders are held back per (link, actor) by credit
  windows (_scheduler/flow.py), which bound the overflow; method calls are not windowed.
- Messages for an actor id this worker has not seen yet (a caller raced its creator) wait in a
  placeholder inbox for PLACEHOLDER_TIMEOUT_S; ended actors leave a tombstone, so late
  messages get ActorDiedError at once.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import cloudpickle
import trio

from .._exceptions import ActorDiedError, SerializationError, TaskCancelledError
from .._protocol.ids import ActorId, ObjectId, short
from .._protocol.messages import (
    Ack,
    ActorEnded,
    ActorInfo,
    ActorSummary,
    AskReply,
    CallActor,
    CancelById,
    CancelTask,
    CreateActor,
    Credit,
    Deliver,
    DeliveryFailed,
    Event,
    KillActor,
    Payload,
    QueryWorker,
    SubmitTask,
    TaskResult,
    TaskSummary,
    WorkerReport,
)
from .._scheduler.restart import Restart, RestartTracker
from .context import Context, Letter
from .interrupt import Running
from .lineage import current_task
from .output import output_source
from .refs import ObjectRef
from .restarts import ACTOR_RESTART_POLICY, RestartLog
from .serialization import box_error, dumps, loads, system_error

if TYPE_CHECKING:
    from .core import Runtime
    from .peer import Peer

__all__ = ["Executor", "blocking_section"]

log = logging.getLogger("actorgrid.executor")

PLACEHOLDER_TIMEOUT_S = 30.0
# How long a worker cancelling a task with force=True for an operator waits for its answers to
# go out before it kills itself.
_FORCE_FLUSH_S = 1.0
_IDLE_POLL_S = 0.02
_LANE_CAPACITY = 256
_MAX_RUNNERS = 256
MAILBOX_CAPACITY = 1024
DEFAULT_ASYNC_CONCURRENCY = 1000
_TOMBSTONES_MAX = 100_000

_local = threading.local()


@contextmanager
def blocking_section() -> Iterator[None]:
    """Around a blocking wait in user code: lend this task's CPUs to others meanwhile.

    Without it, a task on a one-CPU worker that waits for a task queued behind it on the same
    worker would wait forever.
    """
    hold: tuple[TaskQueue, float] | None = getattr(_local, "hold", None)
    if hold is None or hold[1] == 0:
        yield
        return
    queue, amount = hold
    queue.lend(amount)
    try:
        yield
    finally:
        queue.take_back(amount)


class _TaskItem:
    __slots__ = ("cancelled", "fn", "label", "num_cpus", "payload", "peer", "running", "task_id")

    def __init__(self, peer: Peer, msg: SubmitTask, fn: Callable[..., Any]) -> None:
        self.peer = peer
        self.task_id = msg.task_id
        self.fn = fn
        self.payload = msg.args
        self.num_cpus = msg.num_cpus
        self.label = f"task {getattr(fn, '__qualname__', 'task')}"
        self.cancelled = False
        self.running = Running()


class TaskQueue:
    """Sync tasks waiting for CPUs (fractions allowed), in arrival order.

    Pool threads ("runners") take tasks themselves: a runner that finishes one takes the next
    that fits, so a stream of short tasks does not bounce through the loop. A runner is started
    only while the head of the queue fits in the free CPUs.
    """

    def __init__(self, executor: Executor, total: float) -> None:
        self.executor = executor
        self.total = total
        self.free = total
        self.items: deque[_TaskItem] = deque()
        self.cond = threading.Condition(threading.Lock())
        self.runners = 0
        self.starting = 0

    def push(self, item: _TaskItem) -> None:
        with self.cond:
            self.items.append(item)
            start = self._claim_runner()
        if start:
            self.executor.runtime.pool.start(self._run)

    def remove(self, item: _TaskItem) -> bool:
        with self.cond:
            try:
                self.items.remove(item)
            except ValueError:
                return False
            return True

    def _claim_runner(self) -> bool:
        # Lock held. A runner that finds nothing it may take exits, so a spare claim is
        # harmless; a missing one would strand a task. At most one runner is *starting*
        # (claimed, holding no item yet), and each runner that takes an item claims the next:
        # runners ramp up one per item that fits, not one per push (a burst of pushes on one
        # CPU used to start up to _MAX_RUNNERS pool threads, and the worker's RSS grew).
        if (
            self.items
            and self.starting == 0
            and self.free >= self.items[0].num_cpus
            and self.runners < _MAX_RUNNERS
        ):
            self.runners += 1
            self.starting += 1
            return True
        return False

    def _run(self) -> None:
        with self.cond:
            self.starting -= 1
        while True:
            with self.cond:
                if not self.items or self.free < self.items[0].num_cpus:
                    self.runners -= 1
                    return
                item = self.items.popleft()
                self.free -= item.num_cpus
                start = self._claim_runner()
            if start:
                self.executor.runtime.pool.start(self._run)
            _local.hold = (self, item.num_cpus)
            token = current_task.set(item.task_id)
            name = item.label.removeprefix("task ")
            try:
                with self.executor.runtime.observe.running(item.peer, item.task_id, name) as out:
                    ok, payload = self.executor.call_in_thread(
                        item.fn, item.payload, item.label, item.running
                    )
                    out.set(ok, payload)
            finally:
                current_task.reset(token)
                _local.hold = None
                with self.cond:
                    self.free += item.num_cpus
                    self.cond.notify_all()
            self.executor.finish_from_thread(item, item.peer, ok, payload, not self.items)

    def lend(self, amount: float) -> None:
        with self.cond:
            self.free += amount
            self.cond.notify_all()
            start = self._claim_runner()
        if start:
            self.executor.runtime.pool.start(self._run)

    def take_back(self, amount: float) -> None:
        with self.cond:
            while self.free < amount:
                self.cond.wait()
            self.free -= amount


class _Lane:
    """A sync actor's calls, run in order by one pool thread at a time.

    The loop appends; a drain job on a pool thread runs calls back to back until the lane is
    empty. At most _LANE_CAPACITY calls wait here; more wait in the actor's inbox.
    """

    def __init__(self, executor: Executor, instance: Any, info: ActorInfo) -> None:
        self.executor = executor
        self.instance = instance
        self.info = info
        self.items: deque[_Call] = deque()
        self.lock = threading.Lock()
        self.running = False
        self.closed = False
        self.space = trio.lowlevel.ParkingLot()

    def has_room(self) -> bool:
        return len(self.items) < _LANE_CAPACITY

    def push(self, call: _Call) -> None:
        with self.lock:
            self.items.append(call)
            if self.running:
                return
            self.running = True
        self.executor.runtime.pool.start(self._drain)

    async def wait_room(self) -> None:
        while not self.has_room() and not self.closed:
            await self.space.park()

    def _drain(self) -> None:
        portal = self.executor.runtime.portal
        while True:
            with self.lock:
                if self.closed or not self.items:
                    self.running = False
                    return
                call = self.items.popleft()
                wake = len(self.items) == _LANE_CAPACITY - 1
            if wake:
                portal.call_soon(self.space.unpark_all)
            if call.cancelled:
                result: tuple[bool, Payload] = (False, _cancelled(call.method))
            else:
                method = getattr(self.instance, call.method, None)
                if method is None:
                    error = AttributeError(
                        f"actor class {self.info.label} has no method {call.method!r}"
                    )
                    result = (False, system_error(error))
                else:
                    label = f"{self.info.label}.{call.method}"
                    name = self.info.name or self.info.label
                    with output_source(name, call.peer):
                        result = self.executor.call_in_thread(
                            method, call.payload, label, call.running
                        )
            self.executor.finish_from_thread(call, call.peer, *result, not self.items)

    def close(self, reason: str) -> None:
        with self.lock:
            self.closed = True
            left = list(self.items)
            self.items.clear()
        for call in left:
            _refuse(call, reason)
        self.space.unpark_all()


class _Task:
    __slots__ = ("kind", "label", "peer", "scope")

    def __init__(self, peer: Peer, label: str = "", kind: str = "task") -> None:
        self.peer = peer
        self.scope = trio.CancelScope()
        self.label = label  # for listings (Cluster.status)
        self.kind = kind


class _Call:
    """A method call waiting in (or taken from) an actor's inbox."""

    __slots__ = (
        "actor_id",
        "cancelled",
        "method",
        "payload",
        "peer",
        "running",
        "scope",
        "task_id",
    )

    def __init__(self, peer: Peer, msg: CallActor) -> None:
        self.peer = peer
        self.task_id = msg.task_id
        self.actor_id = msg.actor_id
        self.method = msg.method
        self.payload = msg.args
        self.cancelled = False
        self.scope: trio.CancelScope | None = None
        self.running = Running()

    def answer(self, ok: bool, payload: Payload) -> None:
        self.peer.send(TaskResult(self.task_id, ok, payload))

    def reject(self) -> None:
        self.answer(
            False,
            system_error(
                TypeError(f"method {self.method!r} was called on a remote coroutine actor")
            ),
        )


class _Slot:
    """One actor on this worker (or a placeholder for one that has not arrived yet)."""

    __slots__ = ("actor_id", "done", "info", "lane", "overflow", "receive", "scope", "send")

    def __init__(self, actor_id: ActorId) -> None:
        self.actor_id = actor_id
        self.info: ActorInfo | None = None
        self.lane: _Lane | None = None
        # Messages that came while the mailbox was full, in order; moved in by _pump as it
        # drains. Mailbox messages here are bounded by their senders' credit windows.
        self.overflow: deque[Any] | None = None
        self.send, self.receive = trio.open_memory_channel[Any](MAILBOX_CAPACITY)
        self.scope = trio.CancelScope()
        self.done = trio.Event()


def _construct(
    cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], where: str
) -> tuple[bool, Any]:
    try:
        return True, cls(*args, **kwargs)
    except BaseException as exc:
        return False, box_error(exc, where)


class Executor:
    def __init__(self, runtime: Runtime, num_cpus: float, *, grace_s: float = 5.0) -> None:
        self.runtime = runtime
        self.grace_s = grace_s
        self.queue = TaskQueue(self, num_cpus)
        self.functions: dict[bytes, Callable[..., Any]] = {}
        self.classes: dict[bytes, type] = {}
        self.actors: dict[ActorId, _Slot] = {}
        self.tombstones: OrderedDict[ActorId, str] = OrderedDict()
        self.tasks: dict[ObjectId, _Task | _Call | _TaskItem] = {}
        self._nursery: trio.Nursery | None = None
        self._where_suffix = f"on worker {{}} (pid {os.getpid()}, host {socket.gethostname()})"

    def __repr__(self) -> str:
        return (
            f"<Executor actors={len(self.actors)} tasks={len(self.tasks)} "
            f"cpus_free={self.queue.free:g}/{self.queue.total:g}>"
        )

    def handlers(self) -> dict[type, Callable[[Peer, Any], Any]]:
        return {
            SubmitTask: self.on_submit,
            CreateActor: self.on_create,
            CallActor: self.on_call,
            CancelTask: self.on_cancel,
            CancelById: self.on_cancel_by_id,
            KillActor: self.on_kill,
            Deliver: self.on_deliver,
            QueryWorker: self.on_query,
        }

    def on_query(self, peer: Peer, msg: QueryWorker) -> None:
        actors = tuple(
            ActorSummary(info.actor_id, info.label, info.kind, info.name, info.namespace)
            for slot in list(self.actors.values())
            if (info := slot.info) is not None
        )
        queued = len(self.queue.items)
        reserved = min(max(self.queue.total - self.queue.free, 0.0), self.queue.total)
        tasks = tuple(self._summary(task_id, item) for task_id, item in list(self.tasks.items()))
        peer.send(
            WorkerReport(msg.rid, actors, max(0, len(self.tasks) - queued), queued, tasks, reserved)
        )

    def _summary(self, task_id: ObjectId, item: _Task | _Call | _TaskItem) -> TaskSummary:
        if isinstance(item, _TaskItem):
            state = "running" if item.running.running else "queued"
            return TaskSummary(task_id, item.label.removeprefix("task "), "task", state)
        if isinstance(item, _Task):
            return TaskSummary(task_id, item.label, item.kind, "running")
        slot = self.actors.get(item.actor_id)
        actor = slot.info.label if slot is not None and slot.info is not None else "actor"
        started = item.running.running or item.scope is not None
        return TaskSummary(
            task_id, f"{actor}.{item.method}", "actor call", "running" if started else "queued"
        )

    def on_cancel_by_id(self, peer: Peer, msg: CancelById) -> None:
        """An operator's cancel (Cluster.cancel_task): like CancelTask, with an answer."""
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
        item = self.tasks.pop(task_id, None)
        if item is None:
            return
        label = item.label if not isinstance(item, _Call) else item.method
        error = TaskCancelledError(f"{label} was cancelled by an operator; {why}")
        item.peer.send(TaskResult(task_id, False, system_error(error)))
        with trio.CancelScope(shield=True):
            await item.peer.wait_sent(_FORCE_FLUSH_S)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    def _where(self, label: str) -> str:
        return f"{label} " + self._where_suffix.format(self.runtime.address)

    def call_in_thread(
        self,
        fn: Callable[..., Any],
        payload: Payload,
        label: str,
        running: Running | None = None,
    ) -> tuple[bool, Payload]:
        """On a pool thread: load the arguments (waiting for ref arguments), run user code,
        serialize its outcome. Never raises."""
        try:
            args, kwargs = _loads_args(payload, self.runtime.address)
            if any(isinstance(a, ObjectRef) for a in args) or any(
                isinstance(v, ObjectRef) for v in kwargs.values()
            ):
                get = self.runtime.get_sync
                args = tuple(get(a, None) if isinstance(a, ObjectRef) else a for a in args)
                kwargs = {
                    k: get(v, None) if isinstance(v, ObjectRef) else v for k, v in kwargs.items()
                }
        except BaseException as exc:
            return False, system_error(exc)
        if running is not None:
            ok, value = running.run(fn, *args, **kwargs)
            if not ok:
                return False, box_error(value, self._where(label))
        else:
            try:
                value = fn(*args, **kwargs)
            except BaseException as exc:  # user code may raise SystemExit; report it, don't die
                return False, box_error(exc, self._where(label))
        return self.result_of(value, label)

    def result_of(self, value: Any, label: str) -> tuple[bool, Payload]:
        """The answer for a value that user code returned. Never raises.

        Callers run it outside the try that boxes user exceptions: a result that cannot be
        sent is reported as the runtime's SerializationError (or ValueError, over the message
        cap, which would break the caller's connection), not as an error of the user code.
        """
        try:
            payload = dumps(value)
        except Exception as exc:
            unpicklable = SerializationError(
                f"the result of {self._where(label)} could not be serialized: "
                f"{type(exc).__name__}: {exc}. Return a picklable value (locks, files, sockets "
                "and clients cannot leave the process that made them)"
            )
            return False, system_error(unpicklable)
        limit = self.runtime.max_message_bytes
        if payload.nbytes <= limit:
            return True, payload
        error = ValueError(
            f"the result of {self._where(label)} serializes to {payload.nbytes} bytes, over "
            f"max_message_bytes={limit}; return a smaller value or raise the limit in ag.init()"
        )
        return False, system_error(error)

    def finish_from_thread(
        self, item: _TaskItem | _Call, peer: Peer, ok: bool, payload: Payload, last: bool
    ) -> None:
        """On a pool thread: report a result. The last of a burst goes straight to the
        caller's socket; the others go through the loop, which batches them into few writes."""
        if (
            last
            and not item.cancelled
            and peer.send_threadsafe(TaskResult(item.task_id, ok, payload))
        ):
            self.runtime.portal.call_soon(self._ended, item.task_id)
        elif isinstance(item, _TaskItem):
            self.runtime.portal.call_soon(self.task_done, item, ok, payload)
        else:
            self.runtime.portal.call_soon(self.call_done, item, ok, payload)

    def _ended(self, task_id: ObjectId) -> None:
        self.tasks.pop(task_id, None)
        # Its children keep running (they are this process's); a cancel of it now does nothing.
        self.runtime.children.parent_done(task_id)

    def task_done(self, item: _TaskItem, ok: bool, payload: Payload) -> None:
        self._ended(item.task_id)
        if item.cancelled:
            ok, payload = False, _cancelled(item.label)
        item.peer.send(TaskResult(item.task_id, ok, payload))

    def call_done(self, call: _Call, ok: bool, payload: Payload) -> None:
        self.tasks.pop(call.task_id, None)
        call.answer(ok, payload)

    # --- code and arguments --------------------------------------------------------------------

    @staticmethod
    def _code(cache: dict[bytes, Any], code_id: bytes, blob: bytes | None) -> Any:
        """A function or class by id. Its blob comes only with the first message of a link
        that uses it, so this runs in the message handler, in arrival order."""
        obj = cache.get(code_id)
        if obj is None:
            if blob is None:
                raise SerializationError(
                    f"code {code_id.hex()[:12]} was neither sent nor cached on this worker: "
                    "the earlier call that carried it could not load it (see its error)"
                )
            obj = cache[code_id] = cloudpickle.loads(blob)
        return obj

    async def _load_args(self, payload: Payload) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = _loads_args(payload, self.runtime.address)
        get = self.runtime.get_async
        if any(isinstance(a, ObjectRef) for a in args):
            args = tuple([await get(a) if isinstance(a, ObjectRef) else a for a in args])
        if any(isinstance(v, ObjectRef) for v in kwargs.values()):
            kwargs = {k: await get(v) if isinstance(v, ObjectRef) else v for k, v in kwargs.items()}
        return args, kwargs

    # --- tasks ---------------------------------------------------------------------------------

    def on_submit(self, peer: Peer, msg: SubmitTask) -> None:
        try:
            fn = self._code(self.functions, msg.function_id, msg.function)
        except Exception as exc:
            error = _load_error("function", exc)
            peer.send(TaskResult(msg.task_id, False, system_error(error)))
            if msg.actor is not None:
                self._refuse_actor(msg.actor, f"could not be started: {error}")
            return
        if msg.actor is not None:
            # Claimed here, not when its task first runs: a KillActor or a message that
            # follows must find the actor.
            slot = self._claim_slot(msg.actor)
            if slot is None:
                error = ActorDiedError(f"actor {_describe(msg.actor)} already exists or ended")
                peer.send(TaskResult(msg.task_id, False, system_error(error)))
                return
            task = _Task(peer, msg.actor.label, "coroutine actor")
            self.tasks[msg.task_id] = task
            self.nursery.start_soon(self._run_coroutine_actor, task, slot, fn, msg)
            return
        if not inspect.iscoroutinefunction(fn):
            item = _TaskItem(peer, msg, fn)
            self.tasks[msg.task_id] = item
            self.queue.push(item)
            return
        task = _Task(peer, getattr(fn, "__qualname__", "task"))
        self.tasks[msg.task_id] = task
        self.nursery.start_soon(self._run_task, task, fn, msg)

    async def _run_task(self, task: _Task, fn: Callable[..., Any], msg: SubmitTask) -> None:
        """An async task: a Trio task in this nursery."""
        label = f"task {getattr(fn, '__qualname__', 'task')}"
        result: tuple[bool, Payload] | None = None
        current_task.set(msg.task_id)  # in this Trio task's own context
        observed = self.runtime.observe.running(task.peer, msg.task_id, task.label)
        with task.scope, observed as out:
            try:
                args, kwargs = await self._load_args(msg.args)
            except Exception as exc:
                result = (False, system_error(exc))
            else:
                try:
                    value = await fn(*args, **kwargs)
                except Exception as exc:
                    result = (False, box_error(exc, self._where(label)))
                else:
                    result = self.result_of(value, label)
            out.set(*(result or (False, _cancelled(label))))
        self._finish_task(task, msg.task_id, label, result)

    def _finish_task(
        self, task: _Task, task_id: ObjectId, label: str, result: tuple[bool, Payload] | None
    ) -> None:
        self._ended(task_id)
        if task.scope.cancel_called or result is None:
            result = (False, _cancelled(label))
        task.peer.send(TaskResult(task_id, *result))

    def on_cancel(self, peer: Peer, msg: CancelTask) -> None:
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
        for task_id, item in list(self.tasks.items()):  # O(calls here), once per lost link
            if item.peer is peer and (
                isinstance(item, _TaskItem) or (isinstance(item, _Task) and item.kind == "task")
            ):
                self.runtime.cancel_children(task_id, False)
                self._interrupt(task_id, item)

    def _interrupt(
        self, task_id: ObjectId, item: _Task | _Call | _TaskItem, *, tell_owner: bool = False
    ) -> None:
        """Cancel one call: a queued one never runs, async code is cancelled, sync code gets
        KeyboardInterrupt; whatever still runs after ``grace_s`` gets the process killed."""
        if isinstance(item, _TaskItem):
            item.cancelled = True
            if self.queue.remove(item):
                self.task_done(item, False, _cancelled(item.label))
                return
            item.running.interrupt()
        elif isinstance(item, _Task):
            item.scope.cancel()
        else:
            item.cancelled = True
            if item.scope is not None:
                item.scope.cancel()
            item.running.interrupt()
        self.nursery.start_soon(self._kill_if_still_running, task_id, item, tell_owner)

    async def _kill_if_still_running(
        self, task_id: ObjectId, item: _Task | _Call | _TaskItem, tell_owner: bool = False
    ) -> None:
        await trio.sleep(self.grace_s)
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

    def interrupt_all(self, reason: str) -> None:
        """Cancel every call on this worker (the worker is stopping)."""
        log.info("interrupting %d calls: %s", len(self.tasks), reason)
        for task_id, item in list(self.tasks.items()):
            self._interrupt(task_id, item)

    async def wait_idle(self) -> None:
        """Return once no call is queued or running here."""
        while self.tasks:
            await trio.sleep(_IDLE_POLL_S)

    # --- actors --------------------------------------------------------------------------------

    def _slot_for(self, actor_id: ActorId) -> _Slot | None:
        slot = self.actors.get(actor_id)
        if slot is None:
            if actor_id in self.tombstones:
                return None
            slot = self.actors[actor_id] = _Slot(actor_id)
            self.nursery.start_soon(self._expire_placeholder, slot)
        return slot

    async def _expire_placeholder(self, slot: _Slot) -> None:
        await trio.sleep(PLACEHOLDER_TIMEOUT_S)
        if slot.info is None and self.actors.get(slot.actor_id) is slot:
            await self._end(slot, f"no actor {short(slot.actor_id)} was created on this worker")

    def _dead_reason(self, actor_id: ActorId) -> str:
        return self.tombstones.get(actor_id, f"actor {short(actor_id)} is not alive")

    def _claim_slot(self, info: ActorInfo) -> _Slot | None:
        """The slot of a new actor (taking over its placeholder, if messages came first);
        None if an actor with that id exists or has ended here."""
        if info.actor_id in self.tombstones:
            return None
        slot = self.actors.get(info.actor_id)
        if slot is None:
            slot = self.actors[info.actor_id] = _Slot(info.actor_id)
        elif slot.info is not None:
            return None
        slot.info = info
        if info.mailbox_size and info.mailbox_size != MAILBOX_CAPACITY and not slot.overflow:
            # Messages that came before the actor did stay queued (then it holds more); one
            # whose early messages overflowed keeps the default size.
            early = []
            while True:
                try:
                    early.append(slot.receive.receive_nowait())
                except trio.WouldBlock:
                    break
            slot.send, slot.receive = trio.open_memory_channel[Any](
                max(info.mailbox_size, len(early))
            )
            for item in early:
                slot.send.send_nowait(item)
        return slot

    def _refuse_actor(self, info: ActorInfo, why: str) -> None:
        """An actor that cannot start: end its slot, so its messages are refused and its
        name is freed."""
        slot = self._claim_slot(info)
        if slot is not None:
            self.nursery.start_soon(self._end, slot, f"actor {_describe(info)} {why}")

    def on_create(self, peer: Peer, msg: CreateActor) -> None:
        # The class blob rides only on the first CreateActor of its class on this link, and
        # the spawned tasks may start in any order: load it here, in arrival order.
        try:
            cls = self._code(self.classes, msg.class_id, msg.cls)
        except Exception as exc:
            why = f"could not be created: {_load_error('class', exc)}"
            error = ActorDiedError(f"actor {_describe(msg.actor)} {why}")
            peer.send(TaskResult(msg.task_id, False, system_error(error)))
            self._refuse_actor(msg.actor, why)
            return
        slot = self._claim_slot(msg.actor)
        if slot is None:
            error = ActorDiedError(f"actor {_describe(msg.actor)} already exists or ended")
            peer.send(TaskResult(msg.task_id, False, system_error(error)))
            return
        self.nursery.start_soon(self._run_actor, slot, peer, msg, cls)

    async def _run_actor(self, slot: _Slot, peer: Peer, msg: CreateActor, cls: type) -> None:
        info = msg.actor
        label = _describe(info)
        reason = f"actor {label} was killed"
        try:
            with slot.scope:
                try:
                    args, kwargs = await self._load_args(msg.args)
                except Exception as exc:
                    reason = f"actor {label} could not be created: {exc}"
                    peer.send(TaskResult(msg.task_id, False, system_error(ActorDiedError(reason))))
                    return
                ok, instance = await self.runtime.pool.run(
                    _construct, cls, args, kwargs, self._where(f"{info.label}.__init__")
                )
                if not ok:
                    from .serialization import loads_error

                    reason = f"actor {label} failed in its constructor: {loads_error(instance)}"
                    peer.send(TaskResult(msg.task_id, False, instance))
                    return
                peer.send(TaskResult(msg.task_id, True, dumps(None)))
                if any(inspect.iscoroutinefunction(getattr(cls, m, None)) for m in dir(cls)):
                    await self._serve_async_actor(slot, instance, msg.max_concurrency)
                else:
                    await self._serve_sync_actor(slot, instance)
        finally:
            with trio.CancelScope(shield=True):
                await self._end(slot, reason)

    async def _serve_sync_actor(self, slot: _Slot, instance: Any) -> None:
        assert slot.info is not None
        lane = slot.lane = _Lane(self, instance, slot.info)
        try:
            async for call in slot.receive:
                if not isinstance(call, _Call):
                    call_reject_letter(call, slot.info)
                    continue
                if not lane.has_room():
                    await lane.wait_room()
                lane.push(call)
        finally:
            lane.close(f"actor {_describe(slot.info)} was killed")

    async def _serve_async_actor(self, slot: _Slot, instance: Any, max_concurrency: int) -> None:
        assert slot.info is not None
        limit = trio.Semaphore(max_concurrency or DEFAULT_ASYNC_CONCURRENCY)
        async with trio.open_nursery() as calls:
            async for call in slot.receive:
                if not isinstance(call, _Call):
                    call_reject_letter(call, slot.info)
                    continue
                await limit.acquire()  # calls start in the order they arrived
                calls.start_soon(self._run_async_call, slot.info, instance, call, limit)

    async def _run_async_call(
        self, info: ActorInfo, instance: Any, call: _Call, limit: trio.Semaphore
    ) -> None:
        label = f"{info.label}.{call.method}"
        result: tuple[bool, Payload] | None = None
        call.scope = trio.CancelScope()
        try:
            with call.scope:
                if call.cancelled:
                    call.scope.cancel()
                try:
                    method = getattr(instance, call.method)
                    args, kwargs = await self._load_args(call.payload)
                except Exception as exc:
                    result = (False, system_error(exc))
                else:
                    if inspect.iscoroutinefunction(method):
                        try:
                            value = await method(*args, **kwargs)
                        except Exception as exc:
                            result = (False, box_error(exc, self._where(label)))
                        else:
                            result = self.result_of(value, label)
                    else:
                        result = await self.runtime.pool.run(
                            self.call_in_thread, method, call.payload, label, call.running
                        )
        finally:
            limit.release()
            self.tasks.pop(call.task_id, None)
        if result is None:
            result = (False, _cancelled(call.method))
        call.answer(*result)

    async def _run_coroutine_actor(
        self, task: _Task, slot: _Slot, fn: Callable[..., Any], msg: SubmitTask
    ) -> None:
        """A remote coroutine actor: a Trio task in this nursery, in the slot that on_submit
        claimed for it."""
        info = slot.info
        assert info is not None
        label = _describe(info)
        result: tuple[bool, Payload] | None = None
        reason = f"actor {label} has ended"
        ctx = Context._make(self.runtime, info, slot.receive)
        with task.scope:
            try:
                with slot.scope:
                    # A KillActor handled before this task started has cancelled the scope
                    # already: then no user code runs at all.
                    if not slot.scope.cancel_called:
                        result, reason = await self._call_coroutine_actor(fn, ctx, msg, label)
                if result is None or slot.scope.cancelled_caught:
                    reason = f"actor {label} was killed"
                    result = (False, system_error(ActorDiedError(reason)))
            finally:
                ctx._close(reason)
                with trio.CancelScope(shield=True):
                    await self._end(slot, reason)
        self._finish_task(task, msg.task_id, f"actor {label}", result)

    async def _call_coroutine_actor(
        self, fn: Callable[..., Any], ctx: Context, msg: SubmitTask, label: str
    ) -> tuple[tuple[bool, Payload], str]:
        """Run a coroutine actor's code: its answer, and why it ended.

        Code that raises is run again, on the same mailbox (messages queued for it are kept),
        while the actor has restarts left (``max_restarts``). A crash loop backs off (the
        restart policy's delays, up to ACTOR_RESTART_POLICY.backoff_max_s) and logs at most one
        line per ACTOR_RESTART_LOG_INTERVAL_S, so code that fails at once can neither starve
        this worker's loop (its pulses, its other actors) nor flood the log.
        """
        try:
            args, kwargs = await self._load_args(msg.args)
        except Exception as exc:
            return (False, system_error(exc)), f"actor {label} could not be started: {exc}"
        restarts = msg.actor.max_restarts if msg.actor is not None else 0
        tracker = RestartTracker(ACTOR_RESTART_POLICY)
        quiet = RestartLog()
        while True:
            try:
                value = await fn(ctx, *args, **kwargs)
            except Exception as exc:
                reason = f"actor {label} raised {type(exc).__name__}: {exc}"
                if restarts == 0:
                    return (False, box_error(exc, self._where(f"actor {label}"))), reason
                restarts -= 1 if restarts > 0 else 0
                ctx._fail_open(exc, self._where(f"actor {label}"))
                decision = tracker.on_exit(trio.current_time())
                assert isinstance(decision, Restart)  # the policy never gives up
                line = quiet.line(trio.current_time(), reason, restarts, decision.delay_s)
                if line is not None:
                    log.warning("%s", line)
                self.runtime.publish(
                    Event("actor_restarted", time.time(), pid=os.getpid(), detail=reason)
                )
                # Always a checkpoint, even with no delay: a call that fails before its first
                # await must not hold the loop.
                await trio.sleep(decision.delay_s)
                continue
            return self.result_of(value, f"actor {label}"), f"actor {label} has ended"

    async def _end(self, slot: _Slot, reason: str) -> None:
        """An actor is over: refuse its queued and future messages, free its name."""
        if self.actors.get(slot.actor_id) is slot:
            del self.actors[slot.actor_id]
        self._bury(slot.actor_id, reason)
        slot.send.close()
        while True:
            try:
                item = slot.receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            self._refuse_queued(item, reason)
        overflow = slot.overflow
        while overflow:
            item = overflow.popleft()
            if type(item) is _LetterFrom:
                _taken(item)
            self._refuse_queued(item, reason)
        slot.receive.close()
        info = slot.info
        head = self.runtime.head
        if info is not None and not info.name and not info.detached and head is not None:
            # Its creator registered it with the head (OwnActor): the head forgets it.
            head.send(ActorEnded(0, info.actor_id, reason))
        elif info is not None and info.name and head is not None:
            with trio.move_on_after(5):
                try:
                    await head.request(lambda rid: ActorEnded(rid, info.actor_id, reason))
                except ConnectionError:
                    pass  # the head is gone; it forgets the name with this worker
        slot.done.set()

    def _bury(self, actor_id: ActorId, reason: str) -> None:
        self.tombstones[actor_id] = reason
        while len(self.tombstones) > _TOMBSTONES_MAX:
            self.tombstones.popitem(last=False)

    def _enqueue(self, slot: _Slot, item: Any) -> bool:
        """Into the mailbox or refused (True), or parked in its overflow while the mailbox is
        full (False): a mailbox message's credit goes back once True, or once _pump moves it.

        Never waits: the link's reader must go on delivering to other actors and reading
        pulses, replies and cancels. Senders of mailbox messages are held back by their
        credit windows instead (_scheduler/flow.py), which bounds the overflow.
        """
        overflow = slot.overflow
        if overflow:  # messages wait ahead of this one: keep the order
            overflow.append(item)
            return False
        try:
            slot.send.send_nowait(item)
        except trio.WouldBlock:
            if overflow is None:
                overflow = slot.overflow = deque()
            overflow.append(item)
            self.nursery.start_soon(self._pump, slot, overflow)
            return False
        except trio.ClosedResourceError:
            self._refuse_queued(item, self._dead_reason(slot.actor_id))
        return True

    def _refuse_queued(self, item: Any, reason: str) -> None:
        # A call is listed in self.tasks from its arrival: once refused it is over, and must
        # not stay listed (an interrupt at shutdown would wait out the grace period for it).
        if isinstance(item, _Call):
            self.tasks.pop(item.task_id, None)
        _refuse(item, reason)

    async def _pump(self, slot: _Slot, overflow: deque[Any]) -> None:
        # Runs while the overflow is not empty; _enqueue starts one when it stops being so.
        while overflow:
            item = overflow[0]
            try:
                await slot.send.send(item)
            except trio.ClosedResourceError:
                return  # the actor ended: _end refuses what is left
            overflow.popleft()
            if type(item) is _LetterFrom:
                _taken(item)

    def on_call(self, peer: Peer, msg: CallActor) -> Any:
        call = _Call(peer, msg)
        slot = self._slot_for(msg.actor_id)
        if slot is None:
            _refuse(call, self._dead_reason(msg.actor_id))
            return None
        self.tasks[msg.task_id] = call
        lane = slot.lane
        # Skip the inbox hop only while the feeder waits in receive(): then no call is queued
        # or in transit ahead of this one. An empty inbox is not enough: a call handed to the
        # waiting feeder leaves the inbox at once but reaches the lane only when the feeder
        # runs, and this call must not overtake it.
        if lane is not None and lane.has_room() and slot.receive.statistics().tasks_waiting_receive:
            lane.push(call)
            return None
        self._enqueue(slot, call)
        return None

    def on_deliver(self, peer: Peer, msg: Deliver) -> None:
        letter = _LetterFrom(peer, msg)
        slot = self._slot_for(msg.actor_id)
        if slot is None:
            _taken(letter)
            _refuse(letter, self._dead_reason(msg.actor_id))
        elif self._enqueue(slot, letter):
            _taken(letter)

    def on_kill(self, peer: Peer, msg: KillActor) -> None:
        slot = self.actors.get(msg.actor_id)
        if slot is None:
            if msg.actor_id not in self.tombstones:
                # Killed before its creation arrived (the head kills the actors of a creator
                # that died just after sending it): the creation, when it comes, is refused.
                self._bury(msg.actor_id, f"actor {short(msg.actor_id)} was killed")
            peer.send(Ack(msg.rid))
            return
        slot.scope.cancel()
        if slot.info is None:
            self.nursery.start_soon(self._end, slot, f"actor {short(msg.actor_id)} was killed")

        async def ack_when_done() -> None:
            await slot.done.wait()
            peer.send(Ack(msg.rid))

        self.nursery.start_soon(ack_when_done)


class _LetterFrom(Letter):
    """A mailbox letter that remembers who sent it, to refuse it properly if undeliverable."""

    __slots__ = ("actor_id", "peer", "rid")

    def __init__(self, peer: Peer, msg: Deliver) -> None:
        super().__init__(msg.payload, (peer, msg.rid) if msg.rid else None)
        self.peer = peer
        self.rid = msg.rid
        self.actor_id = msg.actor_id

    def reject(self) -> None:
        _refuse(self, "a class actor has no mailbox: call its methods instead")


def call_reject_letter(item: Any, info: ActorInfo) -> None:
    _refuse(item, f"the {info.label} actor is a class actor; it has no mailbox")


def _taken(letter: _LetterFrom) -> None:
    """A mailbox message left flow control's hands (taken in, or refused): credit it back."""
    n = letter.peer.receive_credits.taken(letter.actor_id)
    if n:
        letter.peer.send(Credit(letter.actor_id, n))


def _refuse(item: Any, reason: str) -> None:
    if isinstance(item, _Call):
        item.answer(False, system_error(ActorDiedError(reason)))
    elif isinstance(item, _LetterFrom):
        if item.rid:
            item.peer.send(AskReply(item.rid, False, system_error(ActorDiedError(reason))))
        else:
            item.peer.send(DeliveryFailed(item.actor_id, reason))


def _load_error(what: str, exc: Exception) -> Exception:
    return SerializationError(
        f"the {what} could not be loaded on the worker: {type(exc).__name__}: {exc} "
        "(is every module it imports installed there?)"
    )


def _describe(info: ActorInfo) -> str:
    return f"{info.label}({info.name!r})" if info.name else f"{info.label}#{short(info.actor_id)}"


def _cancelled(label: str) -> Payload:
    return system_error(TaskCancelledError(f"{label} was cancelled"))


def _loads_args(payload: Payload, address: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    try:
        args, kwargs = loads(payload)
    except Exception as exc:
        raise SerializationError(
            f"the arguments could not be deserialized on worker {address}: "
            f"{type(exc).__name__}: {exc} (is every module they need importable there?)"
        ) from None
    return args, kwargs
