"""Operations on any actor or task of the cluster, whoever started it: ``Cluster.kill_actor``
and ``Cluster.cancel_task`` (``actorgrid kill`` and ``actorgrid cancel``).

Both find their target in a fresh ``Cluster.status()`` (or, for an actor's name, the head's
name registry) and then talk to its worker directly: KillActor, as ``ag.kill`` sends it, and
CancelById, which the worker answers, and after which it tells the task's owner itself if it
has to kill its process. O(cluster) per call, on an operator's request only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .._exceptions import ActorgridError, NameNotFoundError
from .._protocol.ids import ActorId, ObjectId, WorkerId
from .._protocol.messages import Ack, ActorInfo, CancelById
from .._runtime.core import Runtime
from .._runtime.peer import PeerClosedError
from .._scheduler.names import DEFAULT_NAMESPACE
from .lookup import looks_like_id, match_id
from .records import ActorStatistics, ClusterStatus, TaskStatistics

__all__ = ["cancel_task", "kill_actor"]

AskStatus = Callable[[], Awaitable[ClusterStatus]]


async def kill_actor(
    rt: Runtime, status: AskStatus, actor: ActorStatistics | bytes | str, namespace: str | None
) -> ActorStatistics:
    """``Cluster.kill_actor``."""
    if isinstance(actor, str):
        record, address = await _find_actor(rt, status, actor, namespace)
    else:
        if isinstance(actor, bytes):
            found_status = await status()
            found = next((a for a in found_status.actors if a.actor_id == actor), None)
            if found is None:
                raise NameNotFoundError(
                    f"no live actor has the id {actor.hex()}; list them with "
                    "cluster.status().actors (`actorgrid list actors`)"
                )
            actor = found
        record, address = actor, _worker_address(rt, actor.worker_id, "actor")
    info = ActorInfo(
        ActorId(record.actor_id),
        address,
        record.kind,
        record.label,
        record.name,
        record.namespace,
    )
    await rt.kill(info)
    return record


async def _find_actor(
    rt: Runtime, status: AskStatus, text: str, namespace: str | None
) -> tuple[ActorStatistics, str]:
    """The actor ``text`` names, and its worker's address."""
    try:
        info = await rt.lookup(text, namespace, cached=False)
    except NameNotFoundError:
        pass
    else:
        worker_id = next(
            (w.worker_id for w in rt.placement.workers.values() if w.address == info.address), None
        )
        record = ActorStatistics(
            info.actor_id, info.label, info.kind, info.name, info.namespace, worker_id
        )
        return record, info.address
    found_status = await status()
    found = match_id(text, found_status.actors, lambda a: a.actor_id, "actor")
    if found:
        return found[0], _worker_address(rt, found[0].worker_id, "actor")
    ns = namespace or DEFAULT_NAMESPACE
    as_id = " nor the id (or short id) of one" if looks_like_id(text) else ""
    raise NameNotFoundError(
        f"{text!r} is neither the name of a live actor in namespace {ns!r}{as_id}; list "
        "the live actors with `actorgrid list actors` (cluster.status().actors), and pass "
        "--namespace for a name in another namespace"
    )


async def cancel_task(
    rt: Runtime, status: AskStatus, task: TaskStatistics | bytes | str, force: bool
) -> TaskStatistics:
    """``Cluster.cancel_task``."""
    if isinstance(task, TaskStatistics):
        records = [task]
    else:
        found_status = await status()
        if isinstance(task, bytes):
            records = [t for t in found_status.tasks if t.task_id == task]
        else:
            records = match_id(task, found_status.tasks, lambda t: t.task_id, "task")
    if not records:
        shown = task.hex() if isinstance(task, bytes) else repr(task)
        raise ActorgridError(
            f"no running or queued task has the id {shown}: it may have finished already; "
            "list the tasks with `actorgrid list tasks` (cluster.status().tasks)"
        )
    # Usually one record; more if workers still run a call its caller resent elsewhere.
    errors = [await _cancel_on_worker(rt, record, force) for record in records]
    if all(errors):
        raise ActorgridError(errors[0])
    return records[0]


async def _cancel_on_worker(rt: Runtime, record: TaskStatistics, force: bool) -> str | None:
    """Cancel one task on the worker the record names; None, or what went wrong."""
    try:
        address = _worker_address(rt, record.worker_id, "task")
    except ActorgridError as exc:
        return str(exc)
    task_id = ObjectId(record.task_id)
    try:
        reply = await rt.peer_for(address).request(lambda rid: CancelById(rid, task_id, force))
    except PeerClosedError as exc:
        if force:
            return None  # the worker killed itself, as asked
        return (
            f"the worker running task {record.short_id} went away before it answered "
            f"({exc}); the task went with it"
        )
    assert isinstance(reply, Ack)
    return None if reply.error is None else f"{reply.error}: it has finished already"


def _worker_address(rt: Runtime, worker_id: WorkerId | None, what: str) -> str:
    worker = rt.placement.workers.get(worker_id) if worker_id else None
    if worker is None:
        raise ActorgridError(
            f"the worker of that {what} has left the cluster, and the {what} went with it"
        )
    return worker.address
