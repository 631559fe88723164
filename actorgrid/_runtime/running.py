"""The executor's base: its state and the tasks it runs (cancelling them: ``cancelling.py``).

Executor (``executor.py``) extends it with hosting actors; see there for the picture."""

from __future__ import annotations

import inspect
import os
import socket
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle
import trio

from .._exceptions import ActorDiedError, SerializationError
from .._protocol.ids import ActorId, ObjectId
from .._protocol.messages import (
    ActorCalls,
    ActorInfo,
    ActorSummary,
    CallActor,
    CancelById,
    CancelTask,
    CreateActor,
    CreateAgents,
    Deliver,
    DeliverToKey,
    KillActor,
    Payload,
    Publish,
    QueryWorker,
    StreamAck,
    SubmitTask,
    SubmitTasks,
    TaskResult,
    TaskSummary,
    WorkerReport,
)
from .cancelling import TaskCancels
from .holdings import Holdings
from .interrupt import Running
from .lanes import (
    TaskQueue,
    _Call,
    _cancelled,
    _describe,
    _load_error,
    _loads_args,
    _Slot,
    _Task,
    _TaskItem,
    send_results,
)
from .lineage import current_task
from .producing import WorkerStreams
from .refs import ObjectRef
from .serialization import box_error, dumps_result, system_error
from .starting import Starter

# Bookkeeping of actor calls answered straight from their pool thread waits at most this long
# for a turn of the loop (ExecutorTasks._ended_later; a call, cancel or listing drains it at
# once): a worker that goes quiet is tidy again within it, for one wake-up of its loop per
# period.
ENDED_DRAIN_S = 1.0

if TYPE_CHECKING:
    from .core import Runtime
    from .peer import Peer


class ExecutorTasks(TaskCancels):
    """Runs tasks; cancels and interrupts tasks and calls."""

    # Defined by Executor (executor.py: hosting actors), which the handlers and the cancel and
    # interrupt paths here reach; declared so that this layer type-checks on its own.
    on_create: Callable[[Peer, CreateActor], None]
    on_call: Callable[[Peer, CallActor], Any]
    on_deliver: Callable[[Peer, Deliver], None]
    on_deliver_to_key: Callable[[Peer, DeliverToKey], None]
    on_publish: Callable[[Peer, Publish], None]
    on_kill: Callable[[Peer, KillActor], None]
    _claim_slot: Callable[[ActorInfo], _Slot | None]
    _refuse_actor: Callable[[ActorInfo, str], None]
    _start_agent: Callable[[Peer, _Slot, Callable[..., Any], SubmitTask], None]

    def __init__(self, runtime: Runtime, num_cpus: float, *, grace_s: float = 5.0) -> None:
        self.runtime = runtime
        self.grace_s = grace_s
        self.queue = TaskQueue(self, num_cpus)
        self.holdings = Holdings({})  # the worker's share of its node's resources
        self.functions: dict[bytes, Callable[..., Any]] = {}
        # Plain sync functions run here before, by id, with their task label: queued at once.
        self._sync_functions: dict[bytes, tuple[Callable[..., Any], str]] = {}
        self.classes: dict[bytes, type] = {}
        self.actors: dict[ActorId, _Slot] = {}
        self.detached: dict[ActorId, CreateActor] = {}  # reported to a restarted head
        self.tombstones: OrderedDict[ActorId, str] = OrderedDict()
        self.tasks: dict[ObjectId, _Task | _Call | _TaskItem] = {}
        # Actor calls whose answer their pool thread wrote straight to the caller's socket:
        # their bookkeeping (_ended) waits for the loop's next turn that has work (a call
        # arriving, a cancel, a listing, or every ENDED_DRAIN_S), rather than waking the loop
        # once per call for it. Appended by pool threads, drained on the loop (deque: atomic).
        self._ended_later: deque[ObjectId] = deque()
        # Answers that pool threads finished while others were pending, for the loop to send
        # in batches (_send_answers): one hop to the loop and one TaskResults per caller for
        # all that a turn of the loop finds, not one of each per call.
        self._answers: list[tuple[_TaskItem | _Call, bool, Payload]] = []
        self._answers_lock = threading.Lock()
        self.streams = WorkerStreams(self)  # remote generators being driven here
        self.starter = Starter()  # coroutine agents start a batch per loop turn (starting.py)
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
            SubmitTasks: self._on_submits,
            CreateAgents: self.on_create_agents,
            CreateActor: self.on_create,
            CallActor: self._on_call,
            ActorCalls: self._on_calls,
            CancelTask: self.on_cancel,
            CancelById: self.on_cancel_by_id,
            KillActor: self.on_kill,
            Deliver: self.on_deliver,
            DeliverToKey: self.on_deliver_to_key,
            Publish: self.on_publish,
            QueryWorker: self.on_query,
            StreamAck: self.streams.on_ack,
        }

    def _on_call(self, peer: Peer, msg: CallActor) -> Any:
        if self._ended_later:
            self.drain_ended()
        return self.on_call(peer, msg)

    def _on_calls(self, peer: Peer, msg: ActorCalls) -> None:
        """A run of calls a caller's writer coalesced (``coalesce.py``): each as its own."""
        if self._ended_later:
            self.drain_ended()
        on_call = self.on_call
        for call in msg.calls:
            on_call(peer, call)  # never waits (a full mailbox parks its calls in order)

    def _on_submits(self, peer: Peer, msg: SubmitTasks) -> None:
        """A run of tasks a caller's writer coalesced: each as its own SubmitTask (plain sync
        ones known here join the queue together, in arrival order with the others)."""
        known = self._sync_functions
        tasks = self.tasks
        ready: list[_TaskItem] = []
        for task in msg.tasks:
            fn = known.get(task.function_id) if task.actor is None else None
            if fn is not None and not task.resources:
                item = tasks[task.task_id] = _TaskItem(peer, task, *fn)
                ready.append(item)
                continue
            if ready:  # those before it go first
                self.queue.push_many(ready)
                ready = []
            self.on_submit(peer, task)
        if ready:
            self.queue.push_many(ready)

    def drain_ended(self) -> None:
        """Loop: the bookkeeping of calls answered from their threads (O(those), each once)."""
        ended = self._ended_later
        while ended:
            self._ended(ended.popleft())

    async def _drain_ended_every(self, interval_s: float) -> None:
        while True:
            await trio.sleep(interval_s)
            if self._ended_later:
                self.drain_ended()

    def on_query(self, peer: Peer, msg: QueryWorker) -> None:
        self.drain_ended()
        actors = tuple(
            ActorSummary(
                info.actor_id, info.label, info.kind, info.name, info.namespace, None, slot.depth
            )
            for slot in list(self.actors.values())
            if (info := slot.info) is not None
        )
        queued = len(self.queue.items)
        reserved = min(max(self.queue.total - self.queue.free, 0.0), self.queue.total)
        tasks = tuple(self._summary(task_id, item) for task_id, item in list(self.tasks.items()))
        peer.send(
            WorkerReport(
                msg.rid,
                actors,
                max(0, len(self.tasks) - queued),
                queued,
                tasks,
                reserved,
                self.holdings.held(),
            )
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

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._drain_ended_every, ENDED_DRAIN_S)
            task_status.started()
            await trio.sleep_forever()

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
            if (args and any(isinstance(a, ObjectRef) for a in args)) or (
                kwargs and any(isinstance(v, ObjectRef) for v in kwargs.values())
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
            payload = dumps_result(value, current_task.get())
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
        """On a pool thread: report a result. A lone one (the last of a burst, with no other
        answer waiting) goes straight to the caller's socket; the others wait in ``_answers``
        for the loop, which sends all it finds there in one TaskResults per caller.

        An actor call answered straight holds no resources (its actor does); with nothing
        queued for the loop (``portal.idle``), the tasks it started are registered as its
        children already, so its end cannot overtake them: its bookkeeping then waits for the
        loop's next turn (``_ended_later``), and a round trip wakes the worker's loop once,
        not twice. A quiet call (``quiet.py``) is answered by no one: only its bookkeeping.
        """
        if type(item) is _Call and item.quiet:
            item.answer(ok, payload)  # sends nothing; reports an error
            if self.runtime.portal.idle():
                self._ended_later.append(item.task_id)
            else:
                self.runtime.portal.call_soon(self._ended, item.task_id)
            return
        if (
            last
            and not item.cancelled
            and not self._answers
            and peer.send_threadsafe(TaskResult(item.task_id, ok, payload))
        ):
            if type(item) is _Call and self.runtime.portal.idle():
                self._ended_later.append(item.task_id)
            else:
                self.runtime.portal.call_soon(self._ended, item.task_id)
            return
        with self._answers_lock:
            answers = self._answers
            answers.append((item, ok, payload))
            first = len(answers) == 1
        if first:  # the others join this batch until the loop takes it
            self.runtime.portal.call_soon(self._send_answers)

    def _send_answers(self) -> None:
        """Loop: the bookkeeping of the answers pool threads left in ``_answers``, then the
        answers themselves, batched per caller, in the order they were finished."""
        with self._answers_lock:
            answers, self._answers = self._answers, []
        batches: dict[Peer, list[TaskResult]] = {}
        tasks_pop = self.tasks.pop
        last: Peer | None = None
        add = None
        for item, ok, payload in answers:
            if type(item) is _Call:  # _call_result, inline: nearly every answer of a burst
                tasks_pop(item.task_id, None)
                result = TaskResult(item.task_id, ok, payload)
            elif isinstance(item, _TaskItem):
                result = self._task_result(item, ok, payload)
            else:
                result = self._call_result(item, ok, payload)
            if item.peer is not last or add is None:  # a burst's answers share a caller
                last = item.peer
                add = batches.setdefault(last, []).append
            add(result)
        for peer, results in batches.items():
            send_results(peer, results)

    def _ended(self, task_id: ObjectId) -> None:
        self.tasks.pop(task_id, None)
        self.holdings.release(task_id)
        # Its children keep running (they are this process's); a cancel of it now does nothing.
        self.runtime.children.parent_done(task_id)

    def task_done(self, item: _TaskItem, ok: bool, payload: Payload) -> None:
        item.peer.send(self._task_result(item, ok, payload))

    def call_done(self, call: _Call, ok: bool, payload: Payload) -> None:
        result = self._call_result(call, ok, payload)
        if call.quiet:  # no answer wanted; an error is reported (quiet.py)
            call.answer(ok, payload)
        else:
            call.peer.send(result)

    def _task_result(self, item: _TaskItem, ok: bool, payload: Payload) -> TaskResult:
        """Loop: a finished task's bookkeeping; its answer (a cancel's if it was cancelled)."""
        self._ended(item.task_id)
        if item.cancelled:
            ok, payload = False, _cancelled(item.label)
        return TaskResult(item.task_id, ok, payload)

    def _call_result(self, call: _Call, ok: bool, payload: Payload) -> TaskResult:
        """Loop: a finished actor call's bookkeeping; its answer."""
        self.tasks.pop(call.task_id, None)
        return TaskResult(call.task_id, ok, payload)

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
        pulls = self.runtime.localize((payload,))  # large arguments held on another node
        if pulls is not None:
            await pulls
        args, kwargs = _loads_args(payload, self.runtime.address)
        get = self.runtime.get_async
        if any(isinstance(a, ObjectRef) for a in args):
            args = tuple([await get(a) if isinstance(a, ObjectRef) else a for a in args])
        if any(isinstance(v, ObjectRef) for v in kwargs.values()):
            kwargs = {k: await get(v) if isinstance(v, ObjectRef) else v for k, v in kwargs.items()}
        return args, kwargs

    # --- tasks ---------------------------------------------------------------------------------

    def on_create_agents(self, peer: Peer, msg: CreateAgents) -> None:
        for submit in msg.submits():  # names.py's batch: each as if it had come alone
            self.on_submit(peer, submit)

    def on_submit(self, peer: Peer, msg: SubmitTask) -> None:
        known = self._sync_functions.get(msg.function_id) if msg.actor is None else None
        if known is not None:  # the hot path: the end of this method, without the checks
            self._queue_sync(peer, msg, *known)
            return
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
            self._start_agent(peer, slot, fn, msg)  # agenthost.py
            return
        adapted = self.streams.adapt(fn)  # a generator streams what it yields
        if not inspect.iscoroutinefunction(adapted):
            label = f"task {getattr(adapted, '__qualname__', 'task')}"
            if adapted is fn:  # a plain function: the next task of it takes the hot path
                self._sync_functions[msg.function_id] = (fn, label)
            self._queue_sync(peer, msg, adapted, label)
            return
        fn = adapted
        task = _Task(peer, getattr(fn, "__qualname__", "task"))
        self.tasks[msg.task_id] = task
        self.nursery.start_soon(self._run_task, task, fn, msg)

    def _queue_sync(self, peer: Peer, msg: SubmitTask, fn: Callable[..., Any], label: str) -> None:
        """A sync task: queued for a pool thread once its resources are held here."""
        item = self.tasks[msg.task_id] = _TaskItem(peer, msg, fn, label)
        if not msg.resources:  # holds nothing but its CPUs (the queue's): no closures made
            self.queue.push(item)
            return
        fail = lambda exc: self.task_done(item, False, system_error(exc))  # noqa: E731
        self.holdings.admit(msg.task_id, msg.resources, lambda: self.queue.push(item), fail)

    async def _run_task(self, task: _Task, fn: Callable[..., Any], msg: SubmitTask) -> None:
        """An async task: a Trio task in this nursery."""
        label = f"task {getattr(fn, '__qualname__', 'task')}"
        result: tuple[bool, Payload] | None = None
        current_task.set(msg.task_id)  # in this Trio task's own context
        observed = self.runtime.observe.running(task.peer, msg.task_id, task.label, msg.root)
        with task.scope, observed as out:
            try:
                await self.holdings.hold(msg.task_id, msg.resources)
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

    # --- actors --------------------------------------------------------------------------------
