"""The frozen records that ``Cluster`` listings return (``nodes()``, ``workers()``,
``status()``), built from the head's ClusterView."""

from __future__ import annotations

from collections.abc import Iterable

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
    # Its share of the node's resources (GPU, memory, custom), and what its calls hold now
    # (from Cluster.status()).
    resources: dict[str, float] = attrs.field(factory=dict)
    held: dict[str, float] = attrs.field(factory=dict)
    gpu_ids: tuple[str, ...] = ()


@attrs.frozen
class NodeStatistics:
    """A node agent as the head sees it, with its availability at its last pulse: also the
    record an allocation filter (``ActorPool(..., allocate=fn)``) is given."""

    node_id: NodeId
    hostname: str
    pid: int
    num_workers: int
    state: str
    availability: Availability | None
    last_pulse_s: float
    # What it offers in all ("CPU", "memory" in bytes, "GPU", custom ones).
    resources: dict[str, float] = attrs.field(factory=dict)
    labels: dict[str, str] = attrs.field(factory=dict)
    # What its workers' calls hold now, by resource ("CPU": CPUs of running sync tasks);
    # from Cluster.status() only, empty from Cluster.nodes().
    used: dict[str, float] = attrs.field(factory=dict)

    @property
    def free(self) -> dict[str, float]:
        """What is not held now, by resource."""
        return {k: max(0.0, v - self.used.get(k, 0.0)) for k, v in self.resources.items()}

    @property
    def platform(self) -> str:
        return self.labels.get("platform", "")

    @property
    def num_cpus(self) -> float:
        return self.resources.get("CPU", 0.0)

    @property
    def memory(self) -> int:
        """Bytes of memory the node offers."""
        return int(self.resources.get("memory", 0.0))

    @property
    def disk(self) -> int:
        """Bytes free on the node's disk at its last pulse (0: not known yet)."""
        return 0 if self.availability is None else self.availability.disk_available

    @property
    def num_gpus(self) -> int:
        return int(self.resources.get("GPU", 0.0))

    @property
    def object_store(self) -> tuple[int, int, int]:
        """Its object store at its last pulse: bytes of shared memory used, its capacity
        (``object_store_memory``), and bytes spilled to disk; zeros until the first pulse."""
        a = self.availability
        return (0, 0, 0) if a is None else (a.store_used, a.store_capacity, a.store_spilled)

    @property
    def object_store_pool(self) -> tuple[int, int]:
        """Its object store's free pool at its last pulse: recycled segments kept for the next
        values of their size, and the bytes of shared memory they hold; zeros until then."""
        a = self.availability
        return (0, 0) if a is None else (a.store_pooled, a.store_pooled_bytes)


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

    @property
    def total(self) -> dict[str, float]:
        """What the cluster's nodes offer in all, by resource."""
        return _add(n.resources for n in self.nodes)

    @property
    def used(self) -> dict[str, float]:
        """What running tasks and live actors hold now, by resource."""
        return _add(n.used for n in self.nodes)

    @property
    def free(self) -> dict[str, float]:
        return _add(n.free for n in self.nodes)


def _add(parts: Iterable[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for part in parts:
        for k, v in part.items():
            total[k] = total.get(k, 0.0) + v
    return total


def node_statistics(n: NodeView, used: dict[str, float] | None = None) -> NodeStatistics:
    return NodeStatistics(
        n.node.node_id,
        n.node.hostname,
        n.node.pid,
        n.node.num_workers,
        n.state,
        n.availability,
        n.last_pulse_s,
        dict(n.node.resources),
        dict(n.node.labels),
        used if used is not None else {},
    )


def _used_by_node(reply: ClusterView) -> dict[NodeId, dict[str, float]]:
    used: dict[NodeId, dict[str, float]] = {}
    for v in reply.workers:
        node = used.setdefault(v.worker.node_id, {})
        for k, amount in (("CPU", v.cpus_reserved), *v.held):
            if amount:
                node[k] = node.get(k, 0.0) + amount
    return used


def status_from_view(reply: ClusterView) -> ClusterStatus:
    used = _used_by_node(reply)
    return ClusterStatus(
        [node_statistics(n, used.get(n.node.node_id, {})) for n in reply.nodes],
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
                dict(v.worker.resources),
                dict(v.held),
                v.worker.gpu_ids,
            )
            for v in reply.workers
        ],
        [
            ActorStatistics(a.actor_id, a.label, a.kind, a.name, a.namespace, a.worker_id)
            for a in reply.actors
        ],
        [TaskStatistics(t.task_id, t.label, t.kind, t.state, t.worker_id) for t in reply.tasks],
    )
