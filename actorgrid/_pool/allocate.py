"""``ActorPool(..., allocate=fn)`` and ``Pool(allocate=fn)``: a dispycos-style allocation filter.

``fn`` is given each node's record (``ag.NodeStatistics``: ``platform``, ``num_cpus``,
``memory``, ``disk``, ``labels``, ``resources``, ``num_workers``, ...) and returns how many of
the pool's instances that node gets (0: none; at most its workers). Each instance is pinned to
its node (``ag.NodeAffinity``). The plan is made when the pool starts and again when this
process sees the number of workers change (an O(1) check between jobs; then one request to the
head), so nodes that join are asked too.

``ag.Pool`` has no instances: its plan bounds the chunks in flight on each node instead
(``ChunkPinning``), each chunk pinned to a node with room (the least busy).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from .._node.records import NodeStatistics, node_statistics
from .._protocol.ids import NodeId
from .._protocol.messages import ClusterView, QueryCluster
from .._runtime.core import Runtime
from .._runtime.demands import NodeAffinity
from .._runtime.remote import RemoteFunction

__all__ = ["Allocation", "ChunkPinning"]

Allocate = Callable[[NodeStatistics], int]


class Allocation:
    def __init__(self, rt: Runtime, allocate: Allocate) -> None:
        if not callable(allocate):
            raise TypeError(
                "allocate must be a function of a node's record (ag.NodeStatistics) returning "
                f"how many instances to put there, not {allocate!r}"
            )
        self._rt = rt
        self._allocate = allocate
        self._seen_workers = -1
        self.plan: dict[NodeId, int] = {}

    def __repr__(self) -> str:
        return f"<Allocation {self._allocate!r} nodes={len(self.plan)}>"

    def refresh(self) -> dict[NodeId, int]:
        """The plan, made again if the cluster's workers changed in number since."""
        seen = len(self._rt.placement)
        if seen != self._seen_workers:
            self._seen_workers = seen
            self.plan = self._rt.portal.run(self._ask)
        return self.plan

    async def _ask(self) -> dict[NodeId, int]:
        reply: Any = await self._rt.head_request(QueryCluster)
        assert isinstance(reply, ClusterView)
        plan: dict[NodeId, int] = {}
        for view in reply.nodes:
            if view.state != "alive":
                continue
            record = node_statistics(view)
            try:
                n = self._allocate(record)
            except Exception as exc:
                raise ValueError(
                    f"the pool's allocate function raised {type(exc).__name__}: {exc} for node "
                    f"{record.hostname} ({record.node_id.hex()}); it is given an "
                    "ag.NodeStatistics and returns how many instances to put there"
                ) from exc
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError(
                    f"the pool's allocate function returned {n!r} for node {record.hostname}: "
                    "it must return an int >= 0 (how many instances that node gets)"
                )
            if n:
                plan[record.node_id] = min(n, record.num_workers)
        return plan


class ChunkPinning:
    """``ag.Pool(allocate=fn)``: the chunks in flight on each node, within the plan. Touched
    by the pool's dispatcher thread only."""

    def __init__(self, allocation: Allocation) -> None:
        self.allocation = allocation
        self._on_node: dict[NodeId, int] = {}
        self._node_of: dict[Hashable, NodeId] = {}  # chunk ref -> its node
        self._pinned: dict[tuple[bool, NodeId], RemoteFunction[..., Any]] = {}

    def __repr__(self) -> str:
        return f"<ChunkPinning in_flight={len(self._node_of)} {self.allocation!r}>"

    def capacity(self, *, refresh: bool) -> int:
        """Chunks the plan lets run at once (0: no node is allowed now)."""
        plan = self.allocation.refresh() if refresh else self.allocation.plan
        return sum(plan.values())

    def free_node(self) -> NodeId | None:
        """The node with the most room left in the plan, or None: O(nodes in the plan)."""
        best: NodeId | None = None
        room = 0
        for node, allowed in self.allocation.plan.items():
            free = allowed - self._on_node.get(node, 0)
            if free > room:
                best, room = node, free
        return best

    def pinned(
        self, task: RemoteFunction[..., Any], stream: bool, node: NodeId
    ) -> RemoteFunction[..., Any]:
        """``task`` pinned to ``node`` (made once per node and kind)."""
        key = (stream, node)
        pinned = self._pinned.get(key)
        if pinned is None:
            pinned = self._pinned[key] = task.options(scheduling_strategy=NodeAffinity(node))
        return pinned

    def started(self, ref: Hashable, node: NodeId) -> None:
        self._on_node[node] = self._on_node.get(node, 0) + 1
        self._node_of[ref] = node

    def done(self, ref: Hashable) -> None:
        node = self._node_of.pop(ref, None)
        if node is not None:
            self._on_node[node] -= 1
