"""The head: membership, names, events and operations for one cluster. Never on the path of
a call.

Every link to the head pulses; a node, worker or driver silent for 5 intervals is a zombie
and its connection is dropped, which removes its workers from the membership (and frees the
names of their actors) exactly as if it had exited. A worker that comes back after that finds
its head connection gone and exits; its node starts a fresh one under a new id.

A name claimed by a process that goes away (a driver SIGKILLed just after
``.options(name=...).remote()``) may name an actor that was never created: the head then asks
the workers those names point to which of those actors exist, and frees the names of the
others at once, so the name can be taken again and lookups do not find a ghost.

An actor ends with the process that created it, unless it is detached; the head restarts
detached actors: see ``lifetimes.py``.

Processes cache the names they look up or register, so sends by name skip the head. The head
keeps that cache exact: when a named actor ends, it tells every process it gave the actor to
(NamesEnded, answered with Ack) before it acks the actor's worker, so whoever waits on that
actor's end, and anyone who sends by name after that, no longer sees it.

Names come and go by the hundred thousand (issue 13), so none of that is one round trip per
name: a process's name claims of one loop turn come in one ClaimNames (which also owns the
actors, as OwnActor would), its first lookups of one loop turn in one LookupNames, and the
names that ended in one loop turn of the head go to each process that cached them in one
NamesEnded (``endednames.py``). Each is O(names in it).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._exceptions import ProtocolError
from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES
from .._protocol.ids import ActorId, NodeId, WorkerId, short
from .._protocol.messages import (
    Ack,
    ActorEnded,
    ActorInfo,
    ControlNode,
    ControlWorker,
    Event,
    EventHistory,
    Hello,
    LookupName,
    Membership,
    Message,
    NameReply,
    NodeStatus,
    QueryCluster,
    QueryWorker,
    RegisterName,
    RegisterNode,
    RegisterWorker,
    RejoinNode,
    RejoinWorker,
    Shutdown,
    SubscribeEvents,
    SubscribeMembership,
    WorkerInfo,
    WorkerJoined,
    WorkerLeft,
    WorkerReport,
    WorkerState,
)
from .._protocol.namebatch import (
    ClaimNames,
    LookupNames,
    NamesClaimed,
    NamesFound,
    of_kind,
)
from .._runtime.peer import Peer, PeerClosedError
from .._runtime.pulse import DEFAULT_PULSE_INTERVAL_S, PulseMonitor
from .._runtime.seams import TCP, Transport
from .._scheduler.cachers import NameCachers
from .._scheduler.names import RESTART_HOLD_S, NameRegistry
from .._scheduler.rejoin import FenceTable, restore_worker
from .._transport.base import FrameStream
from .._transport.tcp import ListenLimits
from .._transport.tls import TLSConfig
from .endednames import EndedNames
from .envhead import EnvHost, SessionFolder
from .headops import QUERY_WORKERS_TIMEOUT_S, HeadNode, HeadOperations
from .hub import ObserveHub
from .jobs import JobHost
from .lifetimes import ActorLifetimes
from .logs import RateLimitedLog, log_errors

__all__ = ["Head"]

log = logging.getLogger("actorgrid.head")

EVENT_HISTORY = 1000
CLOSE_NODES_MARGIN_S = 3.0
# How long after its creator left a name is checked for an actor that was never created.
FREE_UNMADE_GRACE_S = 1.0


class Head(HeadOperations):
    def __init__(
        self,
        secret: bytes,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        pulse_interval_s: float = DEFAULT_PULSE_INTERVAL_S,
        tls: TLSConfig | None = None,
        listen_limits: ListenLimits | None = None,
        transport: Transport = TCP,
    ) -> None:
        self._secret = secret
        self._transport = transport  # a simulation's in-memory network, else TCP
        self._tls = tls
        self._limits = listen_limits
        self._host = host
        self._port = port
        self._max = max_message_bytes
        self.address = ""
        self.names = NameRegistry()
        self.workers: dict[WorkerId, WorkerInfo] = {}
        self.suspended: set[WorkerId] = set()
        self.nodes: dict[NodeId, HeadNode] = {}
        self._node_peers: dict[Peer, HeadNode] = {}
        self._worker_peers: dict[Peer, WorkerInfo] = {}
        self._subscribers: set[Peer] = set()
        # The processes told where each named actor lives: they may hold it in a name cache.
        self._cachers: NameCachers[Peer, ActorId] = NameCachers()
        self._worker_at: dict[str, Peer] = {}  # worker address -> its link
        self._event_subscribers: set[Peer] = set()
        self.events: deque[Event] = deque(maxlen=EVENT_HISTORY)
        self._monitor: PulseMonitor[Peer] = PulseMonitor(pulse_interval_s)
        self._monitor.on_zombie.append(self._zombie)
        self.fences = FenceTable()  # who this incarnation declared dead: see rejoin.py
        self._nursery: trio.Nursery | None = None
        self._errors = RateLimitedLog(log)
        self._handlers: dict[type, Callable[[Peer, Any], None]] = {
            RegisterWorker: self._on_register_worker,
            SubscribeMembership: self._on_subscribe,
            RegisterName: self._on_register_name,
            LookupName: self._on_lookup,
            ClaimNames: self._on_claim_names,
            LookupNames: self._on_lookup_names,
            ActorEnded: self._on_actor_ended,
            RegisterNode: self._on_register_node,
            NodeStatus: self._on_node_status,
            Event: self._on_event,
            SubscribeEvents: self._on_subscribe_events,
            QueryCluster: self._on_query,
            ControlWorker: self._on_control_worker,
            ControlNode: self._on_control_node,
            RejoinNode: self._on_rejoin_node,
            RejoinWorker: self._on_rejoin_worker,
        }
        self.lifetimes = ActorLifetimes(
            names=self.names,
            workers=self.workers,
            suspended=self.suspended,
            worker_at=self._worker_at,
            publish=self.publish,
            background=self._background,
            env_at=self._env_at,
            hold_env=lambda key, holder: self.envs.hold(key, holder),
            drop_env=lambda holder: self.envs.drop(holder),
        )
        self._handlers.update(self.lifetimes.handlers())
        # Runtime environments and jobs: their packages and folders live in the session.
        self.session = SessionFolder("actorgrid-head-")
        self.envs = EnvHost(self._live_node_peers, self._background, self.session)
        self.jobs = JobHost(
            lambda: self.address, secret, self.envs, self.session, self._background, tls
        )
        self._handlers.update(self.envs.handlers() | self.jobs.handlers())
        self.hub = ObserveHub(
            self.events,
            self._event_subscribers,
            lambda: [(n.info.node_id.hex(), n.peer) for n in self.nodes.values()],
            self._background,
            self._worker_at.__contains__,
        )
        self._handlers.update(self.hub.handlers())
        # Named actors that ended, told to the processes that cached them, by loop turn.
        self._ended_names = EndedNames(self._background)

    def __repr__(self) -> str:
        return (
            f"<Head {self.address} nodes={len(self.nodes)} workers={len(self.workers)} "
            f"names={len(self.names)}>"
        )

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._monitor.serve)
            self.address = await nursery.start(
                functools.partial(
                    self._transport.serve,
                    self._accept,
                    self._host,
                    self._port,
                    self._secret,
                    max_message_bytes=self._max,
                    tls=self._tls,
                    limits=self._limits,
                )
            )
            self._hello = Hello("head", self.address, os.getpid(), self._max)
            nursery.start_soon(self._end_session)
            task_status.started(self.address)

    def _env_at(self, address: str) -> str:
        """The runtime_env of the worker at ``address`` ("" for none, or no such worker)."""
        peer = self._worker_at.get(address)
        info = self._worker_peers.get(peer) if peer is not None else None
        return info.env if info is not None else ""

    def _live_node_peers(self) -> list[Peer]:
        return [node.peer for node in self.nodes.values()]

    async def _end_session(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            await self.jobs.stop_all()
            self.session.remove()

    async def _accept(self, stream: FrameStream) -> None:
        peer = Peer(stream.peer, self._handle, local_hello=self._hello, monitor=self._monitor)
        peer.on_closed.append(self._closed)
        await peer.run(stream)

    def _handle(self, peer: Peer, message: Message) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            raise ProtocolError(f"{type(message).__name__} is not a message the head accepts")
        handler(peer, message)

    def _background(self, what: str, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """A one-off job of the head: an exception in it is logged, never ends the head."""
        if self._nursery is not None:
            self._nursery.start_soon(log_errors, what, fn, self._errors, *args)

    def shutdown_workers(self, reason: str) -> None:
        for peer in list(self._worker_peers):
            peer.send(Shutdown(reason))

    def stopping(self) -> None:
        """The whole cluster stops: from now on, links that close free nothing one by one
        (names, owned actors, caches), since all of it goes with the head."""
        self._stopping = True

    async def close_nodes(self, grace_s: float) -> None:
        """Stop every node agent (each interrupts its workers with ``grace_s`` to clean up,
        then exits) and wait for them, at most grace_s plus a margin."""
        self.stopping()

        async def stop(node: HeadNode) -> None:
            try:
                await node.peer.request(lambda rid: ControlNode(rid, node.info.node_id, "stop"))
            except PeerClosedError:
                pass

        with trio.move_on_after(grace_s + CLOSE_NODES_MARGIN_S):
            async with trio.open_nursery() as nursery:
                for node in list(self.nodes.values()):
                    nursery.start_soon(stop, node)

    # --- events ----------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        if event.kind != "node_status":
            self.events.append(event)
        for sub in self._event_subscribers:
            sub.send(event)

    def _publish_node(self, kind: str, node: HeadNode, **fields: Any) -> None:
        info = node.info
        self.publish(
            Event(kind, time.time(), node_id=info.node_id, hostname=info.hostname, **fields)
        )

    def _on_event(self, peer: Peer, event: Event) -> None:
        if event.kind in ("node_unhealthy", "node_healthy"):
            node = self._node_peers.get(peer)
            if node is not None:
                node.unhealthy = event.detail if event.kind == "node_unhealthy" else ""
        self.publish(event)

    def _on_subscribe_events(self, peer: Peer, msg: SubscribeEvents) -> None:
        peer.send(EventHistory(msg.rid, self.hub.history()))
        self._event_subscribers.add(peer)

    # --- membership ------------------------------------------------------------------------

    def _on_register_node(self, peer: Peer, msg: RegisterNode | RejoinNode) -> None:
        node = HeadNode(msg.node, peer)
        old = self.nodes.get(msg.node.node_id)
        if old is not None:  # a rejoin this head accepted before it saw the old link close
            self._node_peers.pop(old.peer, None)
        self.nodes[msg.node.node_id] = node
        self._node_peers[peer] = node
        peer.send(Ack(msg.rid))
        detail = f"{msg.node.num_workers} workers"
        if isinstance(msg, RejoinNode):
            detail = f"rejoined with {detail}"
        self._publish_node("node_joined", node, pid=msg.node.pid, detail=detail)
        self.envs.node_joined(peer)

    def _on_rejoin_node(self, peer: Peer, msg: RejoinNode) -> None:
        why = self.fences.refusal(msg.node.node_id, f"node {short(msg.node.node_id)}")
        if why is not None:
            peer.send(Ack(msg.rid, why))
            return
        log.info("node %s rejoined with %d workers", short(msg.node.node_id), len(msg.workers))
        self._on_register_node(peer, msg)

    def _on_rejoin_worker(self, peer: Peer, msg: RejoinWorker) -> None:
        info = msg.worker
        why = self.fences.refusal(info.worker_id, f"worker {info.address}")
        if why is None and info.address in self._worker_at:
            why = f"another worker is registered at {info.address}"
        if why is not None:
            peer.send(Ack(msg.rid, why))
            return
        for lost in restore_worker(msg, self.names, self.lifetimes.detached):
            log.warning("%s", lost)
        self.lifetimes.restored(msg)
        log.info("worker %s rejoined with %d actors", info.address, len(msg.actors))
        self._on_register_worker(peer, RegisterWorker(msg.rid, info))

    def _on_node_status(self, peer: Peer, msg: NodeStatus) -> None:
        node = self._node_peers.get(peer)
        if node is None:
            return
        node.availability = msg.availability
        node.last_pulse = trio.current_time()
        self._publish_node("node_status", node, availability=msg.availability)

    def _on_register_worker(self, peer: Peer, msg: RegisterWorker) -> None:
        info = msg.worker
        self.workers[info.worker_id] = info
        self._worker_peers[peer] = info
        self._worker_at[info.address] = peer
        node = self.nodes.get(info.node_id)
        # The worker hears first: it tells its node agent it is ready as soon as it has this
        # Ack, so a driver that knows of it (and may kill it) knows of a ready worker.
        peer.send(Ack(msg.rid))
        self.lifetimes.worker_joined()
        if node is not None and node.suspended:
            # Before it joins: a caller with work waiting would place it there at once.
            self._set_suspended(info.worker_id, True)
        for sub in self._subscribers:
            sub.send(WorkerJoined(info))

    def _on_subscribe(self, peer: Peer, msg: SubscribeMembership) -> None:
        self._subscribers.add(peer)
        peer.send(Membership(msg.rid, tuple(self.workers.values())))
        for wid in self.suspended:
            peer.send(WorkerState(wid, True))

    def _zombie(self, peer: Peer, reason: str) -> None:
        node = self._node_peers.get(peer)
        if node is not None:
            self._publish_node("node_zombie", node, detail=reason)

    def _closed(self, peer: Peer) -> None:
        self._subscribers.discard(peer)
        self._event_subscribers.discard(peer)
        self.hub.forget(peer)
        # The cluster stops (close_nodes): its names and actors go with it. Freed one by one,
        # the 100,000 names of a simulation held the head's loop for seconds of its stop.
        stopping = self._stopping
        if not stopping:
            self._cachers.gone(peer)
        claimed = [] if stopping else self.names.claimer_gone(peer)
        if claimed and self._nursery is not None:
            self._background(
                "freeing the names of a gone process", self._free_unmade, claimed, peer.close_reason
            )
        if not stopping:
            self.lifetimes.process_gone(peer)
        self.envs.process_gone(peer)
        self.jobs.process_gone(peer)
        node = self._node_peers.pop(peer, None)
        if node is not None and self.nodes.get(node.info.node_id) is node:
            del self.nodes[node.info.node_id]
            self.fences.declare_dead(node.info.node_id, f"its link closed: {peer.close_reason}")
            self._publish_node("node_closed", node, detail=peer.close_reason)
        info = self._worker_peers.pop(peer, None)
        if info is None:
            return
        self.workers.pop(info.worker_id, None)
        self.fences.declare_dead(info.worker_id, f"its link closed: {peer.close_reason}")
        self.suspended.discard(info.worker_id)
        if self._worker_at.get(info.address) is peer:
            del self._worker_at[info.address]
        if not stopping:
            self.lifetimes.worker_gone(info.address)
            freed, held = self.names.worker_gone(info.address)
            for gone in freed:
                # Every subscriber drops names at that address when it hears WorkerLeft.
                self._forget_cachers(gone.actor_id)
            if held:  # (names of actors restarting: a lookup finds them, and then waits)
                self._background("holding names", self._release_held, held, info.address)
        log.info("worker %s left: %s", info.address, peer.close_reason)
        for sub in self._subscribers:
            sub.send(WorkerLeft(info.worker_id, peer.close_reason))

    # --- names -----------------------------------------------------------------------------

    def _on_register_name(self, peer: Peer, msg: RegisterName) -> None:
        before = self.names.claimer(msg.actor.actor_id)  # a restart may change its claimer
        result = self.names.register(msg.actor, msg.get_if_exists, claimer=peer)
        if result.actor is not None and result.error is None:
            if isinstance(before, Peer) and before is not peer:
                self._cache(before, msg.actor.actor_id)  # still told when it ends
            if self.names.claimer(result.actor.actor_id) is not peer:
                self._cache(peer, result.actor.actor_id)
        peer.send(NameReply(msg.rid, result.actor, result.created, result.error))

    def _on_lookup(self, peer: Peer, msg: LookupName) -> None:
        actor = self.names.lookup(msg.name, msg.namespace)
        if actor is not None:
            self._cache(peer, actor.actor_id)
        peer.send(NameReply(msg.rid, actor, False))

    def _on_claim_names(self, peer: Peer, msg: ClaimNames) -> None:
        # Many claims in one frame: each as RegisterName (no get_if_exists) then OwnActor.
        refused = []
        own = self.lifetimes.owners.own
        claim = self.names.claim_kind  # kept as (kind, id): no ActorInfo per name
        for i, (kind, actor_id, name) in enumerate(msg.claims()):
            if not claim(kind, actor_id, name, peer):
                actor = of_kind(kind, actor_id, name)
                result = self.names.register(actor, False, claimer=peer)  # only to say why
                refused.append((i, result.actor, result.error or "not registered"))
                continue
            # Its claimer (peer) is one of its cachers without an entry of its own here
            # (_forget_cachers asks the registry): ~130 bytes less per name.
            if not kind.detached and not peer.closed:
                own(peer, actor_id, kind.address)
        peer.send(NamesClaimed(msg.rid, tuple(refused)))

    def _on_lookup_names(self, peer: Peer, msg: LookupNames) -> None:
        found = []
        for namespace, name in msg.keys:
            actor = self.names.lookup(name, namespace)
            if actor is not None:
                self._cache(peer, actor.actor_id)
            found.append(actor)
        peer.send(NamesFound(msg.rid, tuple(found)))

    def _cache(self, peer: Peer, actor_id: ActorId) -> None:
        if not peer.closed:  # (else _closed has run for it: nothing would ever remove it)
            self._cachers.cache(peer, actor_id)

    def _forget_cachers(self, actor_id: ActorId) -> set[Peer]:
        """The processes that cached the name of ``actor_id`` (its claimer too, while the
        registry has one: a creator caches the names it claims), no longer recorded."""
        cachers = self._cachers.forget(actor_id)
        claimer = self.names.claimer(actor_id)
        if isinstance(claimer, Peer) and not claimer.closed:
            cachers.add(claimer)
        return cachers

    async def _free_unmade(self, claimed: list[ActorInfo], why: str) -> None:
        """The process that claimed these names is gone: free each whose actor its worker
        does not have (never created: the creator died between claim and creation)."""
        # A creation the creator sent just before it left travels on another connection than
        # the news of its leaving: give it this long to reach its worker first.
        await trio.sleep(FREE_UNMADE_GRACE_S)
        by_address: dict[str, list[ActorInfo]] = {}
        for info in claimed:
            by_address.setdefault(info.address, []).append(info)

        async def check(address: str, infos: list[ActorInfo]) -> None:
            worker = self._worker_at.get(address)
            present: set[ActorId] = set()
            if worker is not None:
                try:
                    with trio.fail_after(QUERY_WORKERS_TIMEOUT_S):
                        reply = await worker.request(QueryWorker)
                except (PeerClosedError, trio.TooSlowError):
                    return  # gone: address_gone frees them; too slow: it may hold them
                assert isinstance(reply, WorkerReport)
                present = {a.actor_id for a in reply.actors}
            for info in infos:
                held = self.names.get(info.actor_id)
                if info.actor_id in present or held is None or held.address != info.address:
                    continue  # it exists, or it has ended or moved since
                self.names.actor_ended(info.actor_id)
                log.info(
                    "freed the name %r: its creator left (%s) before creating the actor",
                    info.name,
                    why,
                )
                ended = ActorEnded(0, info.actor_id, f"its creator left ({why}) first")
                self._tell_cachers(ended, self._forget_cachers(info.actor_id))

        async with trio.open_nursery() as nursery:
            for address, infos in by_address.items():
                nursery.start_soon(check, address, infos)

    async def _release_held(self, held: list[ActorInfo], address: str) -> None:
        await trio.sleep(RESTART_HOLD_S)
        for info in held:  # not restarted in time: its name is free
            if self.names.release_if_at(info.actor_id, address):
                self._forget_cachers(info.actor_id)

    def _tell_cachers(self, msg: ActorEnded, cachers: set[Peer]) -> None:
        if cachers:
            self._ended_names.add(None, msg.actor_id, 0, cachers)

    def _on_actor_ended(self, peer: Peer, msg: ActorEnded) -> None:
        worker = self._worker_peers.get(peer)
        # From its worker: that incarnation ended. From a killer (ag.kill): it is over.
        self.lifetimes.actor_ended(msg.actor_id, worker.address if worker is not None else None)
        cachers = self._forget_cachers(msg.actor_id)  # (its claimer among them: before it ends)
        self.names.actor_ended(msg.actor_id)
        if cachers and self._nursery is not None:
            self._ended_names.add(peer, msg.actor_id, msg.rid, cachers)
        elif msg.rid:
            peer.send(Ack(msg.rid))

    # Set by close_nodes: the cluster stops, so links that close free nothing one by one.
    _stopping = False
