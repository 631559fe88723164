"""The work items of a worker and the queues that run them: TaskQueue runs sync tasks on pool
threads, a _Lane runs a sync class actor's calls in order, a _Slot is an actor's inbox.
Executor (``running.py``, ``executor.py``) owns them; see executor.py for the picture."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._exceptions import ActorDiedError, SerializationError, TaskCancelledError
from .._protocol.ids import ActorId, short
from .._protocol.messages import (
    ActorInfo,
    AskReply,
    CallActor,
    Credit,
    Deliver,
    DeliveryFailed,
    Payload,
    SubmitTask,
    TaskResult,
    TaskResults,
)
from .blocking import local as _local
from .blocking import new_burst
from .context import Letter
from .inbox import open_inbox
from .interrupt import Running
from .lineage import current_task
from .output import output_source
from .producing import WorkerStreams
from .quiet import report_failure
from .serialization import NO_ARGS, box_error, loads, system_error

if TYPE_CHECKING:
    from .links import RuntimeLinks
    from .peer import Peer

log = logging.getLogger("actorgrid.executor")

PLACEHOLDER_TIMEOUT_S = 30.0
# How long a worker cancelling a task with force=True for an operator waits for its answers to
# go out before it kills itself.
_FORCE_FLUSH_S = 1.0
_IDLE_POLL_S = 0.02
_LANE_CAPACITY = 256
# Calls put in lanes from pool threads whose bookkeeping waits for the loop (``_ended_later``):
# past this many, the loop is woken for it (Executor.call_from_thread).
ENDED_BATCH = 256
_MAX_RUNNERS = 256
MAILBOX_CAPACITY = 1024
DEFAULT_ASYNC_CONCURRENCY = 1000
_TOMBSTONES_MAX = 100_000
# A TaskResults holds at most this many answers, of at most this many payload bytes in all
# (each answer is under max_message_bytes; a batch must be too): more go in further batches.
ANSWERS_BATCH_MAX = 1024
ANSWERS_BATCH_BYTES = 1 << 20
_NO_ARGS_DATA = NO_ARGS.data


class TaskHost(Protocol):
    """What the queues and lanes here need of the executor that owns them."""

    @property
    def runtime(self) -> RuntimeLinks: ...

    def call_in_thread(
        self,
        fn: Callable[..., Any],
        payload: Payload,
        label: str,
        running: Running | None = None,
    ) -> tuple[bool, Payload]: ...

    def finish_from_thread(
        self, item: _TaskItem | _Call, peer: Peer, ok: bool, payload: Payload, last: bool
    ) -> None: ...

    @property
    def streams(self) -> WorkerStreams: ...


class _TaskItem:
    __slots__ = (
        "cancelled", "fn", "label", "num_cpus", "payload", "peer", "root", "running", "task_id"
    )  # fmt: skip

    def __init__(self, peer: Peer, msg: SubmitTask, fn: Callable[..., Any], label: str) -> None:
        self.peer = peer
        self.task_id = msg.task_id
        self.fn = fn
        self.payload = msg.args
        self.num_cpus = msg.num_cpus
        self.root = msg.root
        self.label = label  # "task <qualname>", made once per function (running.py)
        self.cancelled = False
        self.running = Running()


class TaskQueue:
    """Sync tasks waiting for CPUs (fractions allowed), in arrival order.

    Pool threads ("runners") take tasks themselves: a runner that finishes one takes the next
    that fits, so a stream of short tasks does not bounce through the loop. A runner is started
    only while the head of the queue fits in the free CPUs.
    """

    def __init__(self, executor: TaskHost, total: float) -> None:
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

    def push_many(self, items: list[_TaskItem]) -> None:
        """``push`` each of ``items``, in order, under one hold of the lock (a batch of tasks
        that arrived together: SubmitTasks)."""
        with self.cond:
            self.items.extend(items)
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
            new_burst()
            token = current_task.set(item.task_id)
            name = item.label.removeprefix("task ")
            try:
                observed = self.executor.runtime.observe.running(
                    item.peer, item.task_id, name, item.root
                )
                with observed as out:
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

    def __init__(self, executor: TaskHost, instance: Any, info: ActorInfo) -> None:
        self.executor = executor
        self.instance = instance
        self.info = info
        self.items: deque[_Call] = deque()
        self.lock = threading.Lock()
        self.running = False
        self.closed = False
        self.space = trio.lowlevel.ParkingLot()
        # Drain thread only: each method's label, made once; the output tag of the last
        # caller, kept while calls come from it (a burst from one caller sets up one).
        self._labels: dict[str, str] = {}
        self._source: tuple[Peer, str, output_source] | None = None
        # The methods of its class on trial for the loop, and whom to tell how long each of
        # their runs took (inline.py's trial_methods and trial_ran, set by the executor).
        self.trial: dict[str, int] = {}
        self.trial_ran: Callable[[type, str, float], None] | None = None

    def has_room(self) -> bool:
        return len(self.items) < _LANE_CAPACITY

    def push(self, call: _Call) -> None:
        with self.lock:
            self.items.append(call)
            if self.running:
                return
            self.running = True
        self.executor.runtime.pool.start(self._drain)

    def push_from_thread(self, call: _Call) -> bool:
        """A pool thread (``Executor.call_from_thread``): ``push``, unless the lane is closed
        (False: nothing done) or full."""
        with self.lock:
            if self.closed or len(self.items) >= _LANE_CAPACITY:
                return False
            self.items.append(call)
            if self.running:
                return True
            self.running = True
        self.executor.runtime.pool.start(self._drain)
        return True

    def take_for_inline(self) -> bool:
        """Loop: hold the lane for a call run on the loop (inline.py), if nothing of its actor
        is queued or running; ``end_inline`` gives it back. Held, a pool thread's push only
        queues (``call_from_thread``), so the actor's calls still run one at a time."""
        with self.lock:
            if self.running or self.items or self.closed:
                return False
            self.running = True
            return True

    def end_inline(self) -> None:
        """Loop: the inline call is over: drain what pool threads queued meanwhile."""
        with self.lock:
            if not self.items or self.closed:
                self.running = False
                return
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
            new_burst()
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
                    method = self.executor.streams.adapt(method, in_thread=True)
                    label = self._labels.get(call.method)
                    if label is None:
                        label = self._labels[call.method] = f"{self.info.label}.{call.method}"
                    last = self._source
                    if last is None or last[0] is not call.peer or last[1] != call.root:
                        name = self.info.name or self.info.label
                        last = self._source = (
                            call.peer,
                            call.root,
                            output_source(name, call.peer, call.root),
                        )
                    if call.method in self.trial and self.trial_ran is not None:
                        method = _timed(method, type(self.instance), call.method, self.trial_ran)
                    with last[2]:
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


def _timed(
    fn: Callable[..., Any], cls: type, name: str, report: Callable[[type, str, float], None]
) -> Callable[..., Any]:
    """``fn``, telling ``report`` how long each run took (the user code alone: not the wait
    for its arguments' refs); for a method on trial (inline.py)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            report(cls, name, time.perf_counter() - started)

    return run


class _Task:
    __slots__ = ("kind", "label", "peer", "scope")

    def __init__(self, peer: Peer, label: str = "", kind: str = "task") -> None:
        self.peer = peer
        self.scope = trio.CancelScope()
        self.label = label  # for listings (Cluster.status)
        self.kind = kind

    def cancel(self) -> None:
        self.scope.cancel()  # a coroutine agent's run has its own way (agenthost.py)


class _Call:
    """A method call waiting in (or taken from) an actor's inbox."""

    __slots__ = (
        "actor_id",
        "cancelled",
        "method",
        "payload",
        "peer",
        "quiet",
        "root",
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
        self.root = msg.root
        self.quiet = msg.quiet  # no answer wanted: an error is reported here (quiet.py)
        self.cancelled = False
        self.scope: trio.CancelScope | None = None
        self.running = Running()

    def answer(self, ok: bool, payload: Payload) -> None:
        if self.quiet:
            if not ok:
                report_failure(self.task_id, self.actor_id, self.method, payload)
            self.peer.sends.finished(self.actor_id)  # confirmed to its caller (confirms.py)
            return
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

    __slots__ = (
        "actor_id",
        "done",
        "info",
        "lane",
        "mailbox",
        "overflow",
        "parked",
        "receive",
        "scope",
        "send",
    )

    def __init__(self, actor_id: ActorId) -> None:
        self.actor_id = actor_id
        self.info: ActorInfo | None = None
        self.lane: _Lane | None = None
        # A sync actor's feeder waits in receive() on an empty inbox, and nothing was put
        # in since (each put clears it): a call may then go straight to the lane.
        self.parked = False
        # Messages that came while the mailbox was full, in order; moved in by _pump as it
        # drains. Mailbox messages here are bounded by their senders' credit windows.
        self.overflow: deque[Any] | None = None
        self.send, self.receive = open_inbox(MAILBOX_CAPACITY)
        self.scope = trio.CancelScope()
        self.done: trio.Event | None = None  # made by a KillActor (executor.on_kill)
        self.mailbox: Any = None  # a coroutine actor's Mailbox, once its code runs

    @property
    def depth(self) -> int:
        """Messages waiting for the actor: in its mailbox, and parked while it is full."""
        return self.receive.statistics().current_buffer_used + len(self.overflow or ())


def _construct(
    cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], where: str
) -> tuple[bool, Any]:
    try:
        return True, cls(*args, **kwargs)
    except BaseException as exc:
        return False, box_error(exc, where)


class _LetterFrom(Letter):
    """A mailbox letter that remembers who sent it, to refuse it properly if undeliverable."""

    __slots__ = ("actor_id", "confirm", "peer", "rid")

    def __init__(self, peer: Peer, msg: Deliver) -> None:
        super().__init__(msg.payload, (peer, msg.rid) if msg.rid else None)
        self.peer = peer
        self.rid = msg.rid
        self.actor_id = msg.actor_id
        # Fire-and-forget: confirmed to its sender once its agent takes it (confirms.py).
        self.confirm = None if msg.rid else peer.sends

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
    if payload.data == _NO_ARGS_DATA and not payload.buffers:
        return (), {}  # a call that passes nothing: nothing to unpickle
    try:
        args, kwargs = loads(payload)
    except Exception as exc:
        raise SerializationError(
            f"the arguments could not be deserialized on worker {address}: "
            f"{type(exc).__name__}: {exc} (is every module they need importable there?)"
        ) from None
    return args, kwargs


def send_results(peer: Peer, results: list[TaskResult]) -> None:
    """Loop: send ``results`` to ``peer`` in order, as few messages as their sizes allow."""
    if len(results) == 1:
        peer.send(results[0])
        return
    batch: list[TaskResult] = []
    nbytes = 0
    for result in results:
        size = result.value.nbytes
        if batch and (len(batch) >= ANSWERS_BATCH_MAX or nbytes + size > ANSWERS_BATCH_BYTES):
            peer.send(batch[0] if len(batch) == 1 else TaskResults(tuple(batch)))
            batch, nbytes = [], 0
        batch.append(result)
        nbytes += size
    peer.send(batch[0] if len(batch) == 1 else TaskResults(tuple(batch)))
