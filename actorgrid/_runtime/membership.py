"""The runtime's view of the cluster's membership: the workers it may place calls on.

A layer under ``links.py`` (RuntimeLinks extends it): the head's membership reply when a link
to it is made, the news that follows (workers that join, leave, or are suspended), and the
workers of other runtime_envs, kept aside until a call asks for their env. News read while a
membership reply still waits for its task is held and applied after that reply
(``_membership_held``). Costs: O(1) per piece of news; O(workers) per head connection.

A worker opens its links to the other workers of its node as soon as it knows them
(``link_node_workers``), so the first message between two of them does not wait for a
connection to be set up (~5-15 ms on a loaded 2-core machine, once per direction). A node has
few workers, and never more than EAGER_LINKS_MAX links are opened so: no mesh across the
cluster, and nothing per actor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from .._protocol.ids import NodeId, WorkerId
from .._protocol.messages import (
    EventHistory,
    Membership,
    SubscribeEvents,
    SubscribeMembership,
    WorkerInfo,
    WorkerJoined,
    WorkerLeft,
    WorkerState,
)
from .._scheduler.names import NameCache
from .._scheduler.placement import Placement
from .headlink import EventFeed
from .hosted import HostedExecutor
from .observe import Observer
from .peer import Peer
from .pulse import PulseMonitor
from .refcounting import RefCounts
from .waiting import WorkerWait

__all__ = ["EAGER_LINKS_MAX", "RuntimeMembership"]

# A worker opens links at once to the other workers of its node only while it has fewer links
# than this (link_node_workers): beyond, as to workers of other nodes, at the first message.
EAGER_LINKS_MAX = 16


class RuntimeMembership:
    """Membership news and the placement it feeds; the state is RuntimeLinks'."""

    # Set by RuntimeLinks.__init__ (links.py); declared so that this layer type-checks alone.
    address: str
    placement: Placement
    waiting: WorkerWait
    executor: HostedExecutor | None
    envs_used: set[str]
    _env_aside: dict[WorkerId, WorkerInfo]
    _worker_at: dict[str, WorkerId]
    _unplaced: dict[WorkerId, WorkerInfo | None]
    membership_changed: trio.Event
    peers: dict[str, Peer]
    refs: RefCounts
    names: NameCache
    _names_epoch: int
    observe: Observer
    event_feed: EventFeed
    monitor: PulseMonitor[Peer]

    @property
    def nursery(self) -> trio.Nursery:
        raise NotImplementedError  # RuntimeLinks.nursery

    def peer_for(self, address: str) -> Peer:
        raise NotImplementedError  # RuntimeLinks.peer_for

    # The node of this worker, once it knows it (link_node_workers); None in a driver.
    _own_node: NodeId | None = None

    def link_node_workers(self, node_id: NodeId) -> None:
        """Loop, in a worker once it knows its node: open its links to the node's other
        workers now, and to those that join later (O(workers), once)."""
        self._own_node = node_id
        for info in list(self.placement.workers.values()):
            self._link_eagerly(info)

    def _link_eagerly(self, info: WorkerInfo) -> None:
        if (
            info.node_id == self._own_node
            and info.address != self.address
            and len(self.peers) < EAGER_LINKS_MAX
        ):
            self.peer_for(info.address)  # dialled in the background; a failed dial is retried
            # at the first message, as a link that closed would be

    @property
    def env_key(self) -> str:
        """This process's runtime_env (ag.init(runtime_env=)); "" for none."""
        return self.placement.env

    @env_key.setter
    def env_key(self, key: str) -> None:
        self.placement.env = key

    def use_env_workers(self, key: str) -> None:
        """Loop: calls of this process ask for runtime_env ``key``: its workers join the
        placement (O(workers aside), once per env)."""
        if key in self.envs_used or key == self.env_key:
            return
        self.envs_used.add(key)
        for info in [w for w in self._env_aside.values() if w.env == key]:
            del self._env_aside[info.worker_id]
            self._add_worker(info)

    async def _on_head_connected(self, head: Peer) -> None:
        """Loop: a new link to the head, before it is used: learn the membership (afresh
        after a reconnection: workers that left meanwhile are dropped) and subscribe again
        to what this process was subscribed to."""
        # News the head sends after its reply may be read before this task resumes: it is
        # held and applied after the reply (else a worker that joined meanwhile is dropped
        # as unlisted, and never placed on nor published to by this process).
        held = self._membership_held = []
        try:
            reply = await head.request(SubscribeMembership)
        finally:
            self._membership_held = None
        assert isinstance(reply, Membership)
        listed = {info.worker_id for info in reply.workers}
        self._env_aside.clear()
        for wid, info in list(self.placement.workers.items()):  # O(workers), per connection
            if wid not in listed:
                self.placement.remove(wid)
                self._worker_at.pop(info.address, None)
            else:
                self.placement.set_suspended(wid, False)  # the head re-sends its suspensions
        for info in reply.workers:
            self._add_worker(info)
        for handler, peer, msg in held:
            handler(peer, msg)
        self.observe.on_head_connected(head, self.address)
        if self.event_feed.subscribed:
            history = await head.request(SubscribeEvents)
            assert isinstance(history, EventHistory)
            self.event_feed.merge_history(history.events)

    def is_worker(self, address: str) -> bool:
        return address in self._worker_at

    def _add_worker(self, info: WorkerInfo) -> None:
        if info.env != self.env_key and info.env not in self.envs_used:
            # A worker of another runtime_env serves only the calls that ask for that env.
            self._env_aside[info.worker_id] = info
            return
        self.placement.add(info)
        self._worker_at[info.address] = info.worker_id
        if info.address == self.address and self.executor is not None:
            queue = self.executor.queue
            self.placement.local = info.worker_id
            self.placement.local_load = lambda: queue.total - queue.free + len(queue.items)
        if info.worker_id not in self.placement.suspended:
            self.waiting.worker_available(info)
        if self._own_node is not None:
            self._link_eagerly(info)
        self.membership_changed.set()
        self.membership_changed = trio.Event()

    # Membership news read while a membership reply waits for its task (_on_head_connected).
    _membership_held: list[tuple[Callable[[Peer, Any], None], Peer, Any]] | None = None

    def _membership_news(self, handler: Callable[[Peer, Any], None]) -> Callable[[Peer, Any], None]:
        def handle(peer: Peer, msg: Any) -> None:
            if self._membership_held is not None:
                self._membership_held.append((handler, peer, msg))
            else:
                handler(peer, msg)

        return handle

    def _on_worker_joined(self, peer: Peer, msg: WorkerJoined) -> None:
        self._add_worker(msg.worker)

    def _on_worker_left(self, peer: Peer, msg: WorkerLeft) -> None:
        self._env_aside.pop(msg.worker_id, None)
        info = self.placement.workers.get(msg.worker_id) or self._unplaced.pop(msg.worker_id, None)
        self.placement.remove(msg.worker_id)
        if info is not None:
            link = self.peers.get(info.address)
            if link is not None and info.address != self.address:
                # The head declared it dead: what is in flight there fails over now, rather
                # than when the link or a dial to it gives up.
                reason = f"the head declared the worker dead: {msg.reason}"
                if link.connected:
                    self.nursery.start_soon(self._abort_soon, link, reason)
                else:
                    link.abort(reason)
            self._worker_at.pop(info.address, None)
            self.refs.borrower_lost(info.address)
            self.names.forget_address(info.address)
            self._names_epoch += 1
        self.membership_changed.set()
        self.membership_changed = trio.Event()

    async def _abort_soon(self, link: Peer, reason: str) -> None:
        # A worker that exited after its last answers (closed, drained) may have them still
        # on their way on this link, which the head's news overtook: they are read first.
        # A dead process's link closes by itself; a silent one is dropped after this.
        await trio.sleep(self.monitor.interval_s)
        if not link.closed:
            link.abort(reason)

    def _on_worker_state(self, peer: Peer, msg: WorkerState) -> None:
        self.placement.set_suspended(msg.worker_id, msg.suspended)
        info = self.placement.workers.get(msg.worker_id)
        if info is not None and not msg.suspended:
            self.waiting.worker_available(info)

    async def wait_for_workers(self, n: int) -> None:
        while len(self.placement) < n:
            await self.membership_changed.wait()
