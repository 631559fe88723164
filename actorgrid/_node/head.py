"""The head: membership and names for one cluster. Never on the path of a call.

Processes cache the names they look up or register, so sends by name skip the head. The head
keeps that cache exact: when a named actor ends, it tells every process it gave the actor to
(ActorEnded, answered with Ack) before it acks the actor's worker, so whoever waits on that
actor's end, and anyone who sends by name after that, no longer sees it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import trio

from .._exceptions import ProtocolError
from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES
from .._protocol.ids import ActorId, WorkerId
from .._protocol.messages import (
    Ack,
    ActorEnded,
    Hello,
    LookupName,
    Membership,
    Message,
    NameReply,
    RegisterName,
    RegisterWorker,
    Shutdown,
    SubscribeMembership,
    WorkerInfo,
    WorkerJoined,
    WorkerLeft,
)
from .._runtime.peer import Peer, PeerClosedError
from .._scheduler.names import NameRegistry
from .._transport.tcp import TcpFrameStream, serve_tcp_frame_streams

__all__ = ["Head"]

log = logging.getLogger("actorgrid.head")

# How long the end of a named actor waits for the processes caching its name to drop it; a
# process that takes longer is left to find out when a send to the actor fails.
FORGET_NAME_TIMEOUT_S = 2.0


class Head:
    def __init__(
        self,
        secret: bytes,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._secret = secret
        self._host = host
        self._port = port
        self._max = max_message_bytes
        self.address = ""
        self.names = NameRegistry()
        self.workers: dict[WorkerId, WorkerInfo] = {}
        self._worker_peers: dict[Peer, WorkerInfo] = {}
        self._subscribers: set[Peer] = set()
        # The processes told where each named actor lives: they may hold it in a name cache.
        self._cachers: dict[ActorId, set[Peer]] = {}
        self._nursery: trio.Nursery | None = None
        self._handlers: dict[type, Callable[[Peer, Any], None]] = {
            RegisterWorker: self._on_register_worker,
            SubscribeMembership: self._on_subscribe,
            RegisterName: self._on_register_name,
            LookupName: self._on_lookup,
            ActorEnded: self._on_actor_ended,
        }

    def __repr__(self) -> str:
        return f"<Head {self.address} workers={len(self.workers)} names={len(self.names)}>"

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.address = await nursery.start(
                serve_tcp_frame_streams, self._accept, self._host, self._port, self._secret
            )
            self._hello = Hello("head", self.address, os.getpid())
            task_status.started(self.address)

    async def _accept(self, stream: TcpFrameStream) -> None:
        peer = Peer(stream.peer, self._handle, local_hello=self._hello)
        peer.on_closed.append(self._closed)
        await peer.run(stream)

    def _handle(self, peer: Peer, message: Message) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            raise ProtocolError(f"{type(message).__name__} is not a message the head accepts")
        handler(peer, message)

    def shutdown_workers(self, reason: str) -> None:
        for peer in list(self._worker_peers):
            peer.send(Shutdown(reason))

    def _on_register_worker(self, peer: Peer, msg: RegisterWorker) -> None:
        info = msg.worker
        self.workers[info.worker_id] = info
        self._worker_peers[peer] = info
        for sub in self._subscribers:
            sub.send(WorkerJoined(info))
        peer.send(Ack(msg.rid))

    def _on_subscribe(self, peer: Peer, msg: SubscribeMembership) -> None:
        self._subscribers.add(peer)
        peer.send(Membership(msg.rid, tuple(self.workers.values())))

    def _on_register_name(self, peer: Peer, msg: RegisterName) -> None:
        result = self.names.register(msg.actor, msg.get_if_exists)
        if result.actor is not None and result.error is None:
            self._cachers.setdefault(result.actor.actor_id, set()).add(peer)
        peer.send(NameReply(msg.rid, result.actor, result.created, result.error))

    def _on_lookup(self, peer: Peer, msg: LookupName) -> None:
        actor = self.names.lookup(msg.name, msg.namespace)
        if actor is not None:
            self._cachers.setdefault(actor.actor_id, set()).add(peer)
        peer.send(NameReply(msg.rid, actor, False))

    def _on_actor_ended(self, peer: Peer, msg: ActorEnded) -> None:
        self.names.actor_ended(msg.actor_id)
        cachers = self._cachers.pop(msg.actor_id, set())
        if cachers and self._nursery is not None:
            self._nursery.start_soon(self._forget_then_ack, peer, msg, cachers)
        elif msg.rid:
            peer.send(Ack(msg.rid))

    async def _forget_then_ack(self, peer: Peer, msg: ActorEnded, cachers: set[Peer]) -> None:
        with trio.move_on_after(FORGET_NAME_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for cacher in cachers:
                    nursery.start_soon(self._tell_ended, cacher, msg)
        if msg.rid:
            peer.send(Ack(msg.rid))

    @staticmethod
    async def _tell_ended(cacher: Peer, msg: ActorEnded) -> None:
        try:
            await cacher.request(lambda rid: ActorEnded(rid, msg.actor_id, msg.reason))
        except PeerClosedError:
            pass  # a process that is gone caches nothing

    def _closed(self, peer: Peer) -> None:
        self._subscribers.discard(peer)
        for cachers in self._cachers.values():
            cachers.discard(peer)
        info = self._worker_peers.pop(peer, None)
        if info is None:
            return
        self.workers.pop(info.worker_id, None)
        for gone in self.names.address_gone(info.address):
            # Every subscriber drops names at that address when it hears WorkerLeft.
            self._cachers.pop(gone.actor_id, None)
        log.info("worker %s left: %s", info.address, peer.close_reason)
        for sub in self._subscribers:
            sub.send(WorkerLeft(info.worker_id, peer.close_reason))
