"""Task submission, retries, results and cancels of the calls this process owns: the I/O
shell of the owner state machine (``_scheduler/owner.py``).

Plain tasks are owned by ``OwnerState``: it decides when one is placed (again), resolved or
cancelled; this shell keeps what it takes to send one (``TaskSpec``, in ``_tasks`` until the
task is resolved), places it, and resolves its ObjectEntry. Calls to the actors this process
created are owned the same way (``_actor_calls``, their ``Sent`` records); the actor side of
the shell (restarts, what to send where) is ``actors.py``. A task keeps the entries of the
refs in its arguments alive while it is owned here (``TaskSpec.keep``): a retry after its
worker died (and with it that worker's borrows) finds them. Remote coroutine actors, which
are started by a task, are restarted as the state's following part decides (``following.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import attrs

from .._exceptions import TaskCancelledError, WorkerDiedError
from .._protocol.creations import CreationBatch
from .._protocol.ids import ObjectId
from .._protocol.messages import (
    ActorInfo,
    CancelTask,
    Payload,
    SubmitTask,
    TaskResult,
    TaskResults,
)
from .._scheduler.demand import Demand, as_demand
from .._scheduler.owner import (
    ActorEnded,
    CallSent,
    CancelRequested,
    Command,
    LinkDropped,
    OwnerState,
    PlaceTask,
    Resolve,
    ResultArrived,
    SendCancel,
    Why,
    WorkerGone,
)
from .._scheduler.placement import NoWorkerError
from .links import WAITING, log
from .objects import RuntimeObjects
from .peer import Peer
from .records import CREATE, TASK, Sent, TaskSpec, _Placing
from .refs import PENDING, ObjectEntry
from .restarts import spend_creation
from .serialization import loads_error

DEAD_BEFORE = (
    "it had died before this call was made (its worker died with no restarts left, or "
    "ag.kill ended it), so the call was not sent. Create the actor again, or give it "
    "max_restarts to have it restarted"
)


class _Context:
    """What the shell knows of the event it feeds OwnerState, to carry out its commands."""

    __slots__ = ("peer", "result", "why")

    def __init__(
        self, why: str = "", result: TaskResult | None = None, peer: Peer | None = None
    ) -> None:
        self.why = why  # why a call is retried or failed
        self.result = result  # the answer that arrived
        self.peer = peer


_NO_CONTEXT = _Context()


class RuntimeTasks(RuntimeObjects):
    """Submitting tasks, retrying them and taking their results."""

    # The calls this process owns; made with the first (when the address is known).
    _owner_state: OwnerState | None = None
    _tasks: dict[ObjectId, tuple[ObjectEntry, TaskSpec]]
    # Calls to actors this process created, owned by the state until resolved: what it
    # takes to send one (again). Any thread adds one (a dict store); the loop removes it.
    _actor_calls: dict[ObjectId, Sent]
    # Calls sent straight from another thread (send_call_direct), told to the state on the
    # loop before anything else it handles (CallSent); a deque is safe between threads.
    _direct_calls: deque[Sent]
    # Named agents' creations while a batch of name claims is answered (names.py).
    _creations: CreationBatch | None = None

    @property
    def owner_state(self) -> OwnerState:
        """Loop: the calls this process owns."""
        if self._owner_state is None:
            self._start_owning()
        assert self._owner_state is not None
        return self._owner_state

    def _start_owning(self) -> dict[ObjectId, tuple[ObjectEntry, TaskSpec]]:
        self._tasks = {}
        self._actor_calls = {}
        self._direct_calls = deque()
        self._owner_state = OwnerState(self.address, self.refs.table)  # last: other threads
        return self._tasks

    def _owner(self, event: object, context: _Context = _NO_CONTEXT) -> int:
        """Loop: feed the owner state machine ``event`` and carry out its commands; the
        number of tasks placed again."""
        if self._direct_calls:
            self._drain_direct()
        placed = 0
        for command in self.owner_state.handle(event):  # type: ignore[arg-type]
            placed += self._carry_out(command, context)
        return placed

    def _drain_direct(self) -> None:
        """Loop: tell the state of the calls sent from other threads since (CallSent)."""
        direct, state = self._direct_calls, self._owner_state
        assert state is not None
        while direct:
            sent = direct.popleft()
            call_id = sent.entry.object_id
            if sent.entry.state != PENDING:
                # Resolved by this shell alone (a stopping process): nothing to own.
                self._actor_calls.pop(call_id, None)
                continue
            actor = sent.actor
            assert actor is not None
            if state.call_sent(call_id, actor.actor_id, actor.address, sent.retries):
                continue  # CallSent where its actor lives: the hot path, no event objects
            if state.owns_actor(actor.actor_id):
                why = f"the worker at {actor.address} went away as the call was sent to it"
            else:
                why = DEAD_BEFORE
            event = CallSent(sent.entry.object_id, actor.actor_id, actor.address, sent.retries)
            self._owner(event, _Context(why))

    def _carry_out(self, command: Command, context: _Context) -> int:
        if isinstance(command, PlaceTask):
            entry, spec = self._tasks[command.call_id]
            if command.retry:
                self._retry_task(entry, spec, context.why, report=context.result is not None)
            else:
                self._send_spec(entry, spec)
            return 1
        if isinstance(command, Resolve):
            self._resolve(command, context)
        elif isinstance(command, SendCancel):
            peer = self.peers.get(command.address)
            if peer is not None:
                sent = peer.inflight.get(command.call_id)
                if sent is not None:
                    sent.cancelled = True
                peer.send(CancelTask(command.call_id, command.force, context.why != "flat"))
        return 0

    def _resolve(self, command: Resolve, context: _Context) -> None:
        entry, spec = self._tasks.pop(command.call_id)
        why = command.why
        if spec.parent is not None:
            self.children.finished(command.call_id)
        if why is Why.VALUE:
            assert context.result is not None
            entry.set_value(context.result.value)
        elif why is Why.ERROR:
            assert context.result is not None
            entry.set_error(context.result.value)
        elif why is Why.CANCELLED:
            if entry.where == WAITING:
                self.waiting.backlog.remove_where(
                    lambda p: isinstance(p, _Placing) and p.entry is entry
                )
                message = "the call was cancelled while it waited for a worker"
                self.observe.record("task_cancelled", entry.object_id, error=message)
            elif context.why == "force":
                message = "the call was cancelled with force=True: its worker is killed"
                self.observe.record(
                    "task_cancelled", entry.object_id, error="cancelled with force=True"
                )
            else:
                message = f"the call was cancelled, and then {context.why}"
            entry.set_error(TaskCancelledError(message))
        else:
            entry.set_error(WorkerDiedError(context.why))

    def send_task(
        self,
        entry: ObjectEntry,
        function_id: bytes,
        blob: Callable[[], bytes],
        payload: Payload,
        need: float | Demand,
        actor: ActorInfo | None,
        retries: int = 0,
        retry_on: bool | tuple[type[BaseException], ...] = False,
        parent: ObjectId | None = None,
        keep: Sequence[ObjectEntry] = (),
        root: str = "",
    ) -> None:
        """Loop: place a task (unless it is an actor with a place already) and send it.
        ``parent``: the task running in this process that started it (cancelled with it);
        ``keep``: the entries of the refs in its arguments; ``root``: the caller's
        ``current_root()`` (where its output goes when ``parent`` does not say)."""
        spec = TaskSpec(
            function_id,
            blob,
            payload,
            as_demand(need),
            actor,
            retries,
            retry_on,
            parent,
            keep,
            root,
        )
        if parent is not None:
            self.children.started(parent, entry.object_id)
        if actor is None:
            name = self.observe.name_of(function_id, blob)
            self.observe.record("task_submitted", entry.object_id, name)
            tasks = self._tasks if self._owner_state is not None else self._start_owning()
            tasks[entry.object_id] = (entry, spec)
            assert self._owner_state is not None
            if self._owner_state.task_submitted(entry.object_id, retries):  # TaskSubmitted
                self._send_spec(entry, spec)
            return
        self._send_spec(entry, spec)

    def run_again(self, entry: ObjectEntry, spec: TaskSpec) -> None:
        """Loop: run a plain task's ``spec`` again for a new ``entry``, owned like any task
        (lineage: the value it made was lost with its node)."""
        tasks = self._tasks if self._owner_state is not None else self._start_owning()
        tasks[entry.object_id] = (entry, spec)
        assert self._owner_state is not None
        if self._owner_state.task_submitted(entry.object_id, spec.retries):  # TaskSubmitted
            self._send_spec(entry, spec)

    def _send_spec(self, entry: ObjectEntry, spec: TaskSpec) -> None:
        actor = spec.actor
        if actor is not None:
            if not actor.address:
                self._place_coroutine_actor(entry, spec)
                return
            address, wid = actor.address, self._worker_at.get(actor.address)
        else:
            try:
                worker = self.placement.choose_for_task(spec.need)
            except NoWorkerError:
                entry.where = WAITING
                place = _Placing(self._send_if_pending, entry, spec)
                self.waiting.add(place, spec.need, "task")
                return
            address, wid = worker.address, worker.worker_id
            self.placement.started(wid)
        if actor is not None:
            self._register_owned(actor)
        peer = self.peer_for(address)
        code = None
        if spec.function_id not in peer.sent_code:
            code = spec.blob()
            peer.sent_code.add(spec.function_id)
        sent = peer.inflight[entry.object_id] = Sent(entry, TASK, counted=actor is None, spec=spec)
        entry.where = peer
        root = self.observe.root_of(spec.parent) or spec.root
        msg = SubmitTask(
            entry.object_id,
            spec.function_id,
            code,
            spec.payload,
            spec.need.num_cpus,
            actor,
            () if actor is not None else spec.need.resources,  # an actor's ride on it
            root,
        )
        if actor is not None and self._creations is not None:
            self._creations.add(peer, msg)  # a batch of named agents' creations: names.py
        else:
            peer.send(msg)
        if actor is not None and peer.inflight.get(entry.object_id) is sent:
            # (Not if its link closed as it was sent: the close handled it, spec and all.)
            peer.inflight[entry.object_id] = spend_creation(spec, sent)  # restarts.py
        if actor is None:
            assert self._owner_state is not None
            self._owner_state.task_placed(entry.object_id, address)  # TaskPlaced
            nbytes = spec.payload.nbytes
            self.observe.task_sent(entry.object_id, spec.function_id, spec.blob, wid, nbytes, root)

    def _retry_task(
        self, entry: ObjectEntry, spec: TaskSpec, why: str, *, report: bool = True
    ) -> None:
        if report:
            name = self.observe.name_of(spec.function_id, spec.blob)
            self.observe.record("task_retried", entry.object_id, name, error=why)
        self._send_spec(entry, spec)  # waits in the backlog if no worker takes it now

    def _send_if_pending(self, entry: ObjectEntry, spec: TaskSpec) -> None:
        if entry.state == PENDING:
            entry.where = None
            self._send_spec(entry, spec)

    def _place_coroutine_actor(self, entry: ObjectEntry, spec: TaskSpec) -> None:
        """A remote coroutine actor submitted while no worker fitted: place it now, or
        let it wait for a worker."""
        if entry.state != PENDING:
            return
        assert spec.actor is not None
        try:
            worker = self.placement.choose_for_actor(spec.need, spec.actor.actor_id)
        except NoWorkerError:
            entry.where = WAITING
            place = _Placing(self._place_coroutine_actor, entry, spec)
            self.waiting.add(place, spec.need, "actor")
            return
        entry.where = None
        spec.actor = entry.actor = attrs.evolve(spec.actor, address=worker.address)
        self._send_spec(entry, spec)

    def _on_results(self, peer: Peer, msg: TaskResults) -> None:
        """Loop: a worker's batch of answers (``running.py``), each handled as its own
        TaskResult, in the order the worker finished them."""
        # The values of actor calls and plain tasks (nearly every answer) are resolved here,
        # in one loop with what they need looked up once; the rest as _on_result does.
        state = self._owner_state
        if state is None:  # owns nothing (its bookkeeping is made with the first it owns)
            for result in msg.results:
                self._on_result(peer, result)
            return
        pop = peer.inflight.pop
        answered = self.observe.answered
        actor_calls = self._actor_calls
        tasks = self._tasks
        adopt = self.adopt_result
        wid = self._worker_at.get(peer.address)
        finished = self.placement.finished
        for result in msg.results:
            task_id = result.task_id
            sent = pop(task_id, None)
            if sent is None:
                continue
            if not result.ok or self._direct_calls:
                self._answered(peer, result, sent)
                continue
            if sent.owner and not sent.counted:  # an actor call's value: as _answered
                answered(task_id, True)
                entry = sent.entry
                entry.where = None
                if state.answered(task_id):
                    actor_calls.pop(task_id, None)
                    adopt(result.value, None)
                    entry.set_value(result.value)
                continue
            spec = sent.spec
            if spec is None or spec.actor is not None or spec.parent is not None:
                self._answered(peer, result, sent)
                continue
            answered(task_id, True)  # a plain task's value: as _answered
            if sent.counted and wid is not None:
                finished(wid)
            entry = sent.entry
            entry.where = None
            if state.answered(task_id):
                tasks.pop(task_id)
                adopt(result.value, spec)
                entry.set_value(result.value)

    def _on_result(self, peer: Peer, msg: TaskResult) -> None:
        sent = peer.inflight.pop(msg.task_id, None)
        if sent is not None:
            self._answered(peer, msg, sent)

    def _answered(self, peer: Peer, msg: TaskResult, sent: Sent) -> None:
        """Loop: the answer to ``sent``, just taken off ``peer``'s calls in flight."""
        arrived = peer.lending.arrived  # an answer a thread read itself came then (lending.py)
        self.observe.answered(
            msg.task_id, msg.ok, arrived.pop(msg.task_id, None) if arrived else None
        )
        entry = sent.entry
        if sent.counted:
            wid = self._worker_at.get(peer.address)
            if wid is not None:
                self.placement.finished(wid)
        entry.where = None
        if sent.owner:  # an actor call (ResultArrived): never retried, so O(1) here too
            state = self._owner_state
            assert state is not None
            if self._direct_calls:
                self._drain_direct()
            if state.answered(msg.task_id):  # else resolved already: a stale reply
                self._actor_calls.pop(msg.task_id, None)
                if msg.ok:
                    self.adopt_result(msg.value, None)
                    entry.set_value(msg.value)
                else:
                    entry.set_error(msg.value)
            return
        spec = sent.spec
        if spec is not None and spec.actor is None:
            state = self._owner_state
            assert state is not None
            if msg.ok:  # ResultArrived(ok=True), the hot path
                if state.answered(msg.task_id):
                    self._tasks.pop(msg.task_id)
                    if spec.parent is not None:
                        self.children.finished(msg.task_id)
                    self.adopt_result(msg.value, spec)  # one held in a store: its lineage
                    entry.set_value(msg.value)
                return
            retryable, why = False, ""
            if not msg.ok and spec.retry_on and spec.retries != 0 and not sent.cancelled:
                error = loads_error(msg.value)
                cause = getattr(error, "cause", None) or error
                why = f"it raised {type(cause).__name__}: {cause}"
                retryable = not isinstance(error, TaskCancelledError) and (
                    spec.retry_on is True
                    or (isinstance(spec.retry_on, tuple) and isinstance(cause, spec.retry_on))
                )
            self._owner(ResultArrived(msg.task_id, msg.ok, retryable), _Context(why, msg, peer))
            return
        if spec is not None and spec.actor is not None:  # a coroutine actor ended
            self.placement.release_actor(spec.actor.actor_id)
        if msg.ok:
            if sent.kind == CREATE and sent.actor is not None:
                self.observe.actor_created(sent.actor, self._worker_at.get(peer.address))
            self.adopt_result(msg.value, spec)  # one held in a store: freed with the entry
            entry.set_value(msg.value)
            return
        if sent.kind == CREATE and sent.actor is not None:
            self._creation_failed(sent.actor, msg.value)
        entry.set_error(msg.value)

    def _creation_failed(self, actor: ActorInfo, error: Payload) -> None:
        """Loop: an actor this process created failed to start (its ``__init__`` raised): it
        is over for good (ActorEnded), and its calls fail at once."""
        state = self._owner_state
        if state is not None and state.owns_actor(actor.actor_id):
            self._owner(ActorEnded(actor.actor_id))

    def calls_dropped(self, address: str, call_ids: tuple[ObjectId, ...], why: str) -> int:
        """Loop: the link to the live worker at ``address`` dropped under the calls
        ``call_ids`` (links.py, after a redial reached it): the owner decides (LinkDropped);
        the number placed again."""
        if self._owner_state is None:
            return 0
        return self._owner(LinkDropped(address, call_ids), _Context(why))

    def tasks_lost(self, address: str, written: bool, why: str, *, retry: bool = True) -> int:
        """Loop: the link to ``address`` died under the tasks in flight there (``written``:
        False if nothing was ever written to it; ``retry``: False when this process is
        stopping): they are placed again or failed, as the owner decides; the number placed
        again."""
        if self._owner_state is None:
            return 0
        return self._owner(WorkerGone(address, written, retry), _Context(why))

    def cancel(self, entry: ObjectEntry, force: bool = False, recursive: bool = True) -> None:
        """Loop: ask the worker running the call to cancel it (``force``: kill the worker;
        ``recursive``: that worker cancels the tasks it started too, and so on down)."""
        if self._owner_state is not None and self._direct_calls:
            self._drain_direct()
        if self._owner_state is not None and self._owner_state.pending(entry.object_id):
            how = "force" if force else ("deep" if recursive else "flat")
            self._owner(CancelRequested(entry.object_id, force), _Context(how))
            return
        peer = entry.where
        if entry.state == PENDING and isinstance(peer, Peer):
            sent = peer.inflight.get(entry.object_id)
            if sent is not None:
                sent.cancelled = True
            peer.send(CancelTask(entry.object_id, force, recursive))
            if force:
                why = "cancelled with force=True"
                self.observe.record("task_cancelled", entry.object_id, error=why)
                entry.set_error(
                    TaskCancelledError(
                        "the call was cancelled with force=True: its worker is killed"
                    )
                )
        elif entry.state == PENDING and peer == WAITING:
            self.waiting.backlog.remove_where(
                lambda p: isinstance(p, _Placing) and p.entry is entry
            )
            self.observe.record("task_cancelled", entry.object_id, error="cancelled while waiting")
            entry.set_error(
                TaskCancelledError("the call was cancelled while it waited for a worker")
            )

    def cancel_children(self, parent: ObjectId, force: bool) -> None:
        """Loop: ``parent``, a task running here, is being cancelled: cancel the tasks it
        started that are still in flight (each of their workers does the same for theirs)."""
        for child in self.children.cancel(parent):
            entry = self.objects.get(child)
            if entry is None:
                continue
            self.cancel(entry, force)
            if force and isinstance(entry.where, Peer):
                entry.where.flush()  # before this worker kills itself, if it can

    def interrupt_all(self) -> None:
        """Loop: cancel every call this process has in flight (a driver's Ctrl-C)."""
        n = 0
        for peer in list(self.peers.values()):
            for task_id, sent in list(peer.inflight.items()):
                if sent.owner or (sent.spec is not None and sent.spec.actor is None):
                    self._owner(CancelRequested(task_id), _Context("deep"))
                    n += 1
                elif sent.kind != CREATE:
                    sent.cancelled = True
                    peer.send(CancelTask(task_id))
                    n += 1
        for waiting in self.waiting.backlog.remove_where(lambda p: isinstance(p, _Placing)):
            assert isinstance(waiting, _Placing)
            waiting.entry.set_error(
                TaskCancelledError("the call was interrupted while it waited for a worker")
            )
            if self._owner_state is not None and self._owner_state.pending(waiting.entry.object_id):
                self._owner(CancelRequested(waiting.entry.object_id))
            n += 1
        log.info("interrupted: cancelled %d calls in flight or waiting for a worker", n)
