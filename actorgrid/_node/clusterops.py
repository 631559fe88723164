"""``Cluster``'s operations on any process' work: kill an actor, cancel a task, close, restart,
suspend or resume workers and nodes (a base class of it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._exceptions import ActorgridError
from .._protocol.ids import NodeId, WorkerId
from .._protocol.messages import Ack, ControlNode, ControlWorker
from .._runtime.core import Runtime
from .operations import cancel_task, kill_actor
from .records import (
    ActorStatistics,
    ClusterStatus,
    NodeStatistics,
    TaskStatistics,
    WorkerStatistics,
)

T = TypeVar("T")

Target = WorkerStatistics | NodeStatistics | WorkerId | NodeId


class OperationMethods:
    """Operations on the cluster's workers, nodes, actors and tasks."""

    _runtime: Runtime

    def _sync(self, afn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        raise NotImplementedError  # Cluster's

    async def status_async(self) -> ClusterStatus:
        raise NotImplementedError  # Cluster's

    async def _control(self, make: Callable[[int], Any]) -> None:
        reply = await self._runtime.head_request(make)
        assert isinstance(reply, Ack)
        if reply.error is not None:
            raise ActorgridError(reply.error)

    # --- actors and tasks of any process ---------------------------------------------------

    async def kill_actor_async(
        self, actor: ActorStatistics | bytes | str, *, namespace: str | None = None
    ) -> ActorStatistics:
        return await kill_actor(self._runtime, self.status_async, actor, namespace)

    def kill_actor(
        self, actor: ActorStatistics | bytes | str, *, namespace: str | None = None
    ) -> ActorStatistics:
        """Kill any live actor of the cluster, whoever created it, as ``ag.kill`` does; returns
        the record of the actor killed once it has ended.

        ``actor`` is a record from ``status()``, an actor id, or a string: the name of a named
        actor (in ``namespace``, default "default"), else its id in hex, the short form
        listings show (``ActorStatistics.short_id``), or a prefix of the hex that only one live
        actor has. Raises ``ag.NameNotFoundError`` when nothing matches, and ActorgridError
        when a prefix matches several actors. A name is tried first.
        """
        return self._sync(self.kill_actor_async, actor, namespace=namespace)

    async def cancel_task_async(
        self, task: TaskStatistics | bytes | str, *, force: bool = False
    ) -> TaskStatistics:
        return await cancel_task(self._runtime, self.status_async, task, force)

    def cancel_task(
        self, task: TaskStatistics | bytes | str, *, force: bool = False
    ) -> TaskStatistics:
        """Cancel any running or queued call of the cluster, whoever submitted it, as
        ``ag.cancel`` does: its owner's ``ag.get`` raises ``ag.TaskCancelledError``.
        ``force=True`` kills the worker running it at once.

        ``task`` is a record from ``status().tasks``, a task id, or its hex, short form
        (``TaskStatistics.short_id``) or a prefix of the hex that only one task has. Raises
        ActorgridError when no task or several match. Returns the record of the task.
        """
        return self._sync(self.cancel_task_async, task, force=force)

    # --- operations ------------------------------------------------------------------------

    async def close_worker_async(
        self, worker: WorkerStatistics | WorkerId, *, terminate: bool = False, restart: bool = False
    ) -> None:
        wid = _worker_id(worker)
        action = "terminate" if terminate else "close"
        await self._control(lambda rid: ControlWorker(rid, wid, action, restart))

    def close_worker(
        self, worker: WorkerStatistics | WorkerId, *, terminate: bool = False, restart: bool = False
    ) -> None:
        """Stop a worker: let its running calls finish (``terminate=True``: kill it now).
        With ``restart=True`` a fresh worker takes its slot. Returns once it has exited."""
        self._sync(self.close_worker_async, worker, terminate=terminate, restart=restart)

    async def restart_worker_async(self, worker: WorkerStatistics | WorkerId) -> None:
        wid = _worker_id(worker)
        await self._control(lambda rid: ControlWorker(rid, wid, "restart"))

    def restart_worker(self, worker: WorkerStatistics | WorkerId) -> None:
        """Interrupt a worker's work (with the grace period) and start a fresh one in its
        slot. Returns once the old process has exited."""
        self._sync(self.restart_worker_async, worker)

    async def close_node_async(
        self, node: NodeStatistics | NodeId, *, terminate: bool = False
    ) -> None:
        nid = node.node_id if isinstance(node, NodeStatistics) else node
        action = "terminate" if terminate else "close"
        await self._control(lambda rid: ControlNode(rid, nid, action))

    def close_node(self, node: NodeStatistics | NodeId, *, terminate: bool = False) -> None:
        """Stop every worker of a node (gracefully, or at once) and then its node agent."""
        self._sync(self.close_node_async, node, terminate=terminate)

    async def suspend_async(self, target: Target) -> None:
        await self._control(_state_change(target, "suspend"))

    def suspend(self, target: Target) -> None:
        """Place no new work on a worker or a node's workers; calls in flight go on."""
        self._sync(self.suspend_async, target)

    async def resume_async(self, target: Target) -> None:
        await self._control(_state_change(target, "resume"))

    def resume(self, target: Target) -> None:
        """Undo ``suspend``."""
        self._sync(self.resume_async, target)


def _worker_id(worker: WorkerStatistics | WorkerId) -> WorkerId:
    if isinstance(worker, WorkerStatistics):
        return worker.worker_id
    if isinstance(worker, bytes):
        return worker
    raise TypeError(f"a worker is a WorkerStatistics record or its worker_id, not {worker!r}")


def _state_change(target: Target, action: str) -> Callable[[int], Any]:
    if isinstance(target, NodeStatistics):
        return lambda rid: ControlNode(rid, target.node_id, action)
    wid = _worker_id(target)  # type: ignore[arg-type]
    return lambda rid: ControlWorker(rid, wid, action)
