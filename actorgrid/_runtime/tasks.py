"""Task submission, retries, results and cancels of the calls this process owns."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from .._exceptions import ActorDiedError, TaskCancelledError
from .._protocol.ids import ObjectId
from .._protocol.messages import ActorInfo, CancelTask, Payload, SubmitTask, TaskResult
from .._scheduler.demand import Demand, as_demand
from .._scheduler.placement import NoWorkerError
from .links import WAITING, log
from .objects import RuntimeObjects
from .peer import Peer
from .records import CREATE, TASK, Sent, TaskSpec, _describe, _Placing
from .refs import PENDING, ObjectEntry
from .serialization import loads_error


class RuntimeTasks(RuntimeObjects):
    """Submitting tasks, retrying them and taking their results."""

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
    ) -> None:
        """Loop: place a task (unless it is an actor with a place already) and send it.
        ``parent``: the task running in this process that started it (cancelled with it)."""
        spec = TaskSpec(
            function_id, blob, payload, as_demand(need), actor, retries, retry_on, parent
        )
        if parent is not None:
            self.children.started(parent, entry.object_id)
        if actor is None:
            name = self.observe.name_of(function_id, blob)
            self.observe.record("task_submitted", entry.object_id, name)
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
        peer.inflight[entry.object_id] = Sent(entry, TASK, counted=actor is None, spec=spec)
        entry.where = peer
        root = self.observe.root_of(spec.parent)
        peer.send(
            SubmitTask(
                entry.object_id,
                spec.function_id,
                code,
                spec.payload,
                spec.need.num_cpus,
                actor,
                () if actor is not None else spec.need.resources,  # an actor's ride on it
                root,
            )
        )
        if actor is None:
            nbytes = spec.payload.nbytes
            self.observe.task_sent(entry.object_id, spec.function_id, spec.blob, wid, nbytes, root)

    def _retry_task(
        self, entry: ObjectEntry, spec: TaskSpec, why: str, *, report: bool = True
    ) -> None:
        spec.retries -= 1 if spec.retries > 0 else 0
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
            worker = self.placement.choose_for_actor(spec.need)
        except NoWorkerError:
            entry.where = WAITING
            place = _Placing(self._place_coroutine_actor, entry, spec)
            self.waiting.add(place, spec.need, "actor")
            return
        entry.where = None
        spec.actor = entry.actor = attrs.evolve(spec.actor, address=worker.address)
        self._send_spec(entry, spec)

    def _restart_coroutine_actor(self, entry: ObjectEntry, spec: TaskSpec, why: str) -> None:
        old = spec.actor
        assert old is not None

        async def restart() -> None:
            info = await self._new_incarnation(old, why)
            if info is None:
                entry.set_error(ActorDiedError(f"actor {_describe(old)} died: {why}"))
                return
            spec.actor = info
            entry.actor = info
            self._send_spec(entry, spec)

        self.nursery.start_soon(restart)

    def _on_result(self, peer: Peer, msg: TaskResult) -> None:
        sent = peer.inflight.pop(msg.task_id, None)
        if sent is None:
            return
        self.observe.answered(msg.task_id, msg.ok)
        entry = sent.entry
        if sent.counted:
            wid = self._worker_at.get(peer.address)
            if wid is not None:
                self.placement.finished(wid)
        entry.where = None
        spec = sent.spec
        if msg.ok:
            if spec is not None and spec.parent is not None:
                self.children.finished(msg.task_id)
            if sent.kind == CREATE and sent.actor is not None:
                self.observe.actor_created(sent.actor, self._worker_at.get(peer.address))
            self.adopt_result(msg.value, spec)  # one held in a store: freed with the entry
            entry.set_value(msg.value)
            return
        if spec is not None and spec.retry_on and spec.retries != 0 and spec.actor is None:
            error = loads_error(msg.value)
            cause = getattr(error, "cause", None) or error
            if isinstance(error, TaskCancelledError):
                pass
            elif spec.retry_on is True or (
                isinstance(spec.retry_on, tuple) and isinstance(cause, spec.retry_on)
            ):
                self._retry_task(entry, spec, f"it raised {type(cause).__name__}: {cause}")
                return
        if spec is not None and spec.parent is not None:
            self.children.finished(msg.task_id)
        entry.set_error(msg.value)

    def cancel(self, entry: ObjectEntry, force: bool = False, recursive: bool = True) -> None:
        """Loop: ask the worker running the call to cancel it (``force``: kill the worker;
        ``recursive``: that worker cancels the tasks it started too, and so on down)."""
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
                if sent.kind != CREATE:
                    sent.cancelled = True
                    peer.send(CancelTask(task_id))
                    n += 1
        for waiting in self.waiting.backlog.remove_where(lambda p: isinstance(p, _Placing)):
            assert isinstance(waiting, _Placing)
            waiting.entry.set_error(
                TaskCancelledError("the call was interrupted while it waited for a worker")
            )
            n += 1
        log.info("interrupted: cancelled %d calls in flight or waiting for a worker", n)
