"""The frozen records that ``Cluster`` listings return (``nodes()``, ``workers()``,
``status()``), built from the head's ClusterView."""

from __future__ import annotations

import attrs

from .._protocol.ids import NodeId, WorkerId
from .._protocol.messages import Availability, ClusterView, NodeView
from .lookup import short_id

__all__ = [
    "ActorStatistics",
    "ClusterStatus",
    "NodeStatistics",
    "TaskStatistics",
    "WorkerStatistics",
    "node_statistics",
    "status_from_view",
]


@attrs.frozen
class WorkerStatistics:
    """A worker as this process sees it; ``state`` is "alive" or "suspended"."""

    address: str
    pid: int
    hostname: str
    num_cpus: float
    worker_id: WorkerId
    node_id: NodeId
    state: str = "alive"
    running: int = -1  # calls running now; -1 unless from Cluster.status()
    queued: int = -1  # sync tasks waiting for a CPU; -1 unless from Cluster.status()
    cpus_reserved: float = 0.0  # CPUs held by running sync tasks; from Cluster.status()


@attrs.frozen
class NodeStatistics:
    """A node agent as the head sees it, with its availability at its last pulse."""

    node_id: NodeId
    hostname: str
    pid: int
    num_workers: int
    state: str
    availability: Availability | None
    last_pulse_s: float
    resources: dict[str, float] = attrs.field(factory=dict)


@attrs.frozen
class ActorStatistics:
    """A live actor, as its worker reports it."""

    actor_id: bytes
    label: str  # class or function name
    kind: str  # "class" or "coroutine"
    name: str | None
    namespace: str | None
    worker_id: WorkerId | None

    @property
    def short_id(self) -> str:
        """The id as listings show it, accepted by ``Cluster.kill_actor``."""
        return short_id(self.actor_id)


@attrs.frozen
class TaskStatistics:
    """A call on a worker now, as its worker reports it: a task, an actor method call, or a
    remote coroutine actor (which runs as a task for as long as it lives)."""

    task_id: bytes
    label: str  # function name, or "Class.method"
    kind: str  # "task", "actor call" or "coroutine actor"
    state: str  # "running" or "queued"
    worker_id: WorkerId | None

    @property
    def short_id(self) -> str:
        """The id as listings show it, accepted by ``Cluster.cancel_task``."""
        return short_id(self.task_id)


@attrs.frozen
class ClusterStatus:
    """Everything ``actorgrid status`` shows: from the head and every worker, now."""

    nodes: list[NodeStatistics]
    workers: list[WorkerStatistics]
    actors: list[ActorStatistics]
    tasks: list[TaskStatistics] = attrs.field(factory=list)

    @property
    def running(self) -> int:
        return sum(max(w.running, 0) for w in self.workers)

    @property
    def queued(self) -> int:
        return sum(max(w.queued, 0) for w in self.workers)

    @property
    def num_cpus(self) -> float:
        return sum(w.num_cpus for w in self.workers)

    @property
    def cpus_reserved(self) -> float:
        """CPUs that running sync tasks hold now (actors and async code reserve none)."""
        return sum(w.cpus_reserved for w in self.workers)


def node_statistics(n: NodeView) -> NodeStatistics:
    return NodeStatistics(
        n.node.node_id,
        n.node.hostname,
        n.node.pid,
        n.node.num_workers,
        n.state,
        n.availability,
        n.last_pulse_s,
        dict(n.node.resources),
    )


def status_from_view(reply: ClusterView) -> ClusterStatus:
    return ClusterStatus(
        [node_statistics(n) for n in reply.nodes],
        [
            WorkerStatistics(
                v.worker.address,
                v.worker.pid,
                v.worker.hostname,
                v.worker.num_cpus,
                v.worker.worker_id,
                v.worker.node_id,
                v.state,
                v.running,
                v.queued,
                v.cpus_reserved,
            )
            for v in reply.workers
        ],
        [
            ActorStatistics(a.actor_id, a.label, a.kind, a.name, a.namespace, a.worker_id)
            for a in reply.actors
        ],
        [TaskStatistics(t.task_id, t.label, t.kind, t.state, t.worker_id) for t in reply.tasks],
    )
