"""The head's answers to operators: cluster views (``Cluster.status()``), and control of
workers and nodes (close, terminate, restart, stop, suspend, resume), forwarded to the node
agent concerned (a base class of ``Head``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from .._protocol.ids import NodeId, WorkerId, short
from .._protocol.messages import (
    Ack,
    ActorSummary,
    Availability,
    ClusterView,
    ControlNode,
    ControlWorker,
    Message,
    NodeInfo,
    NodeView,
    QueryCluster,
    QueryWorker,
    TaskSummary,
    WorkerInfo,
    WorkerReport,
    WorkerState,
    WorkerView,
)
from .._runtime.peer import Peer, PeerClosedError

# How long a detailed status query waits for the workers' own reports.
QUERY_WORKERS_TIMEOUT_S = 2.0


class HeadNode:
    """A node agent as the head knows it."""

    __slots__ = ("availability", "info", "last_pulse", "peer", "suspended", "unhealthy")

    def __init__(self, info: NodeInfo, peer: Peer) -> None:
        self.info = info
        self.peer = peer
        self.availability: Availability | None = None
        self.last_pulse = trio.current_time()
        self.suspended = False
        self.unhealthy = ""  # why every worker slot of the node is in a crash loop, or ""


class HeadOperations:
    """Status queries and control requests, answered by the head."""

    workers: dict[WorkerId, WorkerInfo]
    suspended: set[WorkerId]
    nodes: dict[NodeId, HeadNode]
    _worker_peers: dict[Peer, WorkerInfo]
    _subscribers: set[Peer]

    def _background(self, what: str, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        raise NotImplementedError  # Head's

    def _on_query(self, peer: Peer, msg: QueryCluster) -> None:
        if not msg.detail:
            self._answer_query(peer, msg.rid, {})
            return

        async def detailed() -> None:
            reports: dict[WorkerId, WorkerReport] = {}

            async def ask(worker_peer: Peer, info: WorkerInfo) -> None:
                try:
                    reply = await worker_peer.request(QueryWorker)
                except PeerClosedError:
                    return
                assert isinstance(reply, WorkerReport)
                reports[info.worker_id] = reply

            # O(workers), on an operator's request only; a worker that is slow to answer is
            # left out rather than holding the answer up.
            with trio.move_on_after(QUERY_WORKERS_TIMEOUT_S):
                async with trio.open_nursery() as nursery:
                    for worker_peer, info in list(self._worker_peers.items()):
                        nursery.start_soon(ask, worker_peer, info)
            self._answer_query(peer, msg.rid, reports)

        self._background("answering a status query", detailed)

    def _answer_query(self, peer: Peer, rid: int, reports: dict[WorkerId, WorkerReport]) -> None:
        now = trio.current_time()
        nodes = tuple(
            NodeView(
                n.info,
                "suspended" if n.suspended else "unhealthy" if n.unhealthy else "alive",
                n.availability,
                now - n.last_pulse,
                n.unhealthy,
            )
            for n in self.nodes.values()
        )
        workers: list[WorkerView] = []
        actors: list[ActorSummary] = []
        tasks: list[TaskSummary] = []
        for wid, w in self.workers.items():
            report = reports.get(wid)
            state = "suspended" if wid in self.suspended else "alive"
            if report is None:
                workers.append(WorkerView(w, state))
                continue
            workers.append(
                WorkerView(
                    w, state, report.running, report.queued, report.cpus_reserved, report.held
                )
            )
            actors.extend(attrs.evolve(a, worker_id=wid) for a in report.actors)
            tasks.extend(attrs.evolve(t, worker_id=wid) for t in report.tasks)
        peer.send(ClusterView(rid, nodes, tuple(workers), tuple(actors), tuple(tasks)))

    def _set_suspended(self, worker_id: WorkerId, suspended: bool) -> None:
        if suspended:
            self.suspended.add(worker_id)
        else:
            self.suspended.discard(worker_id)
        for sub in self._subscribers:
            sub.send(WorkerState(worker_id, suspended))

    def _on_control_worker(self, peer: Peer, msg: ControlWorker) -> None:
        info = self.workers.get(msg.worker_id)
        node = self.nodes.get(info.node_id) if info is not None else None
        if info is None or node is None:
            peer.send(
                Ack(
                    msg.rid,
                    f"no live worker {short(msg.worker_id)} in this cluster: it has exited or "
                    "was never part of it; list the live ones with cluster.workers()",
                )
            )
            return
        if msg.action in ("suspend", "resume"):
            self._set_suspended(msg.worker_id, msg.action == "suspend")
            peer.send(Ack(msg.rid))
            return
        if msg.action not in ("close", "terminate", "restart"):
            peer.send(Ack(msg.rid, f"unknown worker action {msg.action!r}"))
            return
        if msg.action == "close":
            self._set_suspended(msg.worker_id, True)  # no new work while it drains
        self._forward(
            peer,
            msg.rid,
            node.peer,
            lambda rid: ControlWorker(rid, msg.worker_id, msg.action, msg.restart),
        )

    def _on_control_node(self, peer: Peer, msg: ControlNode) -> None:
        node = self.nodes.get(msg.node_id)
        if node is None:
            peer.send(
                Ack(
                    msg.rid,
                    f"no live node {short(msg.node_id)} in this cluster: it has closed or was "
                    "never part of it; list the live ones with cluster.nodes()",
                )
            )
            return
        workers = [wid for wid, w in self.workers.items() if w.node_id == msg.node_id]
        if msg.action in ("suspend", "resume"):
            node.suspended = msg.action == "suspend"
            for wid in workers:
                self._set_suspended(wid, node.suspended)
            peer.send(Ack(msg.rid))
            return
        if msg.action not in ("close", "terminate", "stop"):
            peer.send(Ack(msg.rid, f"unknown node action {msg.action!r}"))
            return
        node.suspended = True
        for wid in workers:
            self._set_suspended(wid, True)
        self._forward(
            peer, msg.rid, node.peer, lambda rid: ControlNode(rid, msg.node_id, msg.action)
        )

    def _forward(self, peer: Peer, rid: int, to: Peer, make: Callable[[int], Message]) -> None:
        async def forward() -> None:
            try:
                reply = await to.request(make)
            except PeerClosedError as exc:
                peer.send(Ack(rid, f"the node went away: {exc}"))
                return
            assert isinstance(reply, Ack)
            peer.send(Ack(rid, reply.error))

        self._background("forwarding a control request", forward)
