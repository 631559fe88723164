"""The head's part in actor lifetimes: the I/O around the owner and detached-actor tables.

An actor belongs to the process that created it (``_scheduler/owners.py``): the creator
registers each non-detached actor it creates (OwnActor) on its link to the head; when that
link closes (the process exited, was SIGKILLed, or went silent for 5 pulse intervals), the
head kills those actors on their workers (KillActor). A worker that receives the kill before
the creation (the creator died in between) refuses the creation when it comes.

Detached actors outlive their creator, so the head restarts them (``_scheduler/detached.py``):
the creator hands it how to create each again (AdoptActor); when its worker goes, the head
places it on a live worker (waiting for one if there is none), registers its name at the new
address and sends the CreateActor itself on that worker's link, under ``max_restarts``.

A detached actor runs in its creator's runtime environment, the one of the worker it was
created on: the head holds that environment for it (its workers stay after the creator
leaves, until the actor ends for good) and restarts it only on a worker of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from .._protocol.ids import ActorId, WorkerId, new_object_id, short
from .._protocol.messages import (
    AdoptActor,
    CreateActor,
    Event,
    KillActor,
    LocateActor,
    NameReply,
    OwnActor,
    RejoinWorker,
    TaskResult,
    WorkerInfo,
)
from .._runtime.peer import Peer, PeerClosedError
from .._scheduler.detached import DetachedTable
from .._scheduler.names import NameRegistry
from .._scheduler.owners import OwnedActor, OwnerTable

__all__ = ["ActorLifetimes"]

log = logging.getLogger("actorgrid.head")

KILL_TIMEOUT_S = 2.0


class ActorLifetimes:
    def __init__(
        self,
        *,
        names: NameRegistry,
        workers: dict[WorkerId, WorkerInfo],
        suspended: set[WorkerId],
        worker_at: dict[str, Peer],
        publish: Callable[[Event], None],
        background: Callable[..., None],  # (what, async fn, *args): a job of the head
        env_at: Callable[[str], str] = lambda address: "",  # the env of the worker there
        hold_env: Callable[[str, object], None] = lambda key, holder: None,
        drop_env: Callable[[object], None] = lambda holder: None,
    ) -> None:
        # The head's own tables, shared, read only here (but for names on a restart).
        self._names = names
        self._workers = workers
        self._suspended = suspended
        self._worker_at = worker_at
        self._publish = publish
        self._background = background
        self.owners = OwnerTable()
        self.detached = DetachedTable()
        self._env_at = env_at
        self._hold_env = hold_env
        self._drop_env = drop_env
        self._envs: dict[ActorId, str] = {}  # detached actor -> its runtime_env (not "")
        self._worker_joined = trio.Event()

    def __repr__(self) -> str:
        return f"<ActorLifetimes owned={len(self.owners)} detached={len(self.detached)}>"

    def handlers(self) -> dict[type, Callable[[Peer, Any], None]]:
        return {
            OwnActor: self._on_own_actor,
            AdoptActor: self._on_adopt_actor,
            TaskResult: self._on_task_result,
            LocateActor: self._on_locate_actor,
        }

    # --- what the head tells it --------------------------------------------------------------

    def process_gone(self, peer: Peer) -> None:
        """A process's link closed: kill the non-detached actors it created."""
        orphans = self.owners.owner_gone(peer)
        if orphans:
            self._background("killing the actors of a gone process", self._kill, orphans, peer)

    def worker_joined(self) -> None:
        self._worker_joined.set()
        self._worker_joined = trio.Event()

    def worker_gone(self, address: str) -> None:
        """A worker left (before its names are freed): its actors went with it; restart its
        detached actors that have restarts left."""
        self.owners.address_gone(address)
        there = self.detached.at(address)
        restarts = self.detached.address_gone(address)
        again = {c.actor.actor_id for c in restarts}
        for actor_id in there:
            if actor_id not in again:
                self._forget_env(actor_id)
        for create in restarts:
            self._background("restarting a detached actor", self._restart, create)

    def actor_ended(self, actor_id: ActorId, address: str | None) -> None:
        """An actor ended (``address``: where, when its worker says so; None: killed)."""
        self.owners.ended(actor_id, address)
        self.detached.ended(actor_id, address)
        if actor_id not in self.detached:
            self._forget_env(actor_id)

    def _forget_env(self, actor_id: ActorId) -> None:
        if self._envs.pop(actor_id, None) is not None:
            self._drop_env(actor_id)

    # --- messages ----------------------------------------------------------------------------

    def _on_own_actor(self, peer: Peer, msg: OwnActor) -> None:
        if peer.closed:
            return  # process_gone has run for it: nothing would ever kill this one
        self.owners.own(peer, msg.actor_id, msg.address)

    def _on_locate_actor(self, peer: Peer, msg: LocateActor) -> None:
        # Where a restarted actor lives now, for handles other than its owner's (the owner
        # reports each incarnation with OwnActor; the head places detached ones itself).
        actor_id = msg.actor.actor_id
        owned = self.owners.get(actor_id)
        detached = self.detached.get(actor_id)
        info = None
        if owned is not None:
            info = attrs.evolve(msg.actor, address=owned.address)
        elif detached is not None:
            info = attrs.evolve(msg.actor, address=detached.actor.address)
        peer.send(NameReply(msg.rid, info, False))

    def _on_adopt_actor(self, peer: Peer, msg: AdoptActor) -> None:
        self.detached.adopt(msg.create)
        self._keep_env(msg.create.actor.actor_id, self._env_at(msg.create.actor.address))

    def restored(self, report: RejoinWorker) -> None:
        """A worker rejoined a restarted head with its detached actors (adopted again by
        ``restore_worker``): they hold its runtime_env again."""
        for create in report.detached:
            if create.actor.actor_id in self.detached:
                self._keep_env(create.actor.actor_id, report.worker.env)

    def _keep_env(self, actor_id: ActorId, env: str) -> None:
        if env and actor_id not in self._envs:
            self._envs[actor_id] = env
            self._hold_env(env, actor_id)

    def _on_task_result(self, peer: Peer, msg: TaskResult) -> None:
        # The answer to the CreateActor of a detached actor's restart. On a failure its worker
        # has ended the actor and freed its name already: only say so.
        if not msg.ok:
            log.warning("a detached actor could not be restarted on %s", peer.address)

    # --- jobs --------------------------------------------------------------------------------

    async def _kill(self, orphans: list[OwnedActor], owner: Peer) -> None:
        why = f"its creator left the cluster ({owner.close_reason})"

        async def kill(entry: OwnedActor) -> None:
            worker = self._worker_at.get(entry.address)
            if worker is None:
                return  # its worker is gone, and the actor with it
            log.info("killing actor %s: %s", short(entry.actor_id), why)
            try:
                with trio.fail_after(KILL_TIMEOUT_S):
                    await worker.request(lambda rid: KillActor(rid, entry.actor_id))
            except (PeerClosedError, trio.TooSlowError):
                pass  # gone: the actor with it; slow: it has the kill and ends the actor

        async with trio.open_nursery() as nursery:
            for entry in orphans:
                nursery.start_soon(kill, entry)

    def _live_worker(self, env: str) -> WorkerInfo | None:
        # The first of ``env`` that takes work: restarts are rare, and the node refills the
        # lost slot. O(workers) at worst.
        return next(
            (
                w
                for w in self._workers.values()
                if w.worker_id not in self._suspended and w.env == env
            ),
            None,
        )

    async def _restart(self, create: CreateActor) -> None:
        old = create.actor
        env = self._envs.get(old.actor_id, "")
        while (worker := self._live_worker(env)) is None:
            await self._worker_joined.wait()
        left = old.max_restarts - 1 if old.max_restarts > 0 else old.max_restarts
        info = attrs.evolve(old, address=worker.address, max_restarts=left)
        link = self._worker_at.get(worker.address)
        if link is None:
            self._forget_env(old.actor_id)
            return
        result = self._names.register(info, False)
        if result.error is not None or not result.created:
            log.warning("detached actor %s was not restarted: %s", old.label, result.error)
            self._forget_env(old.actor_id)
            return
        again = attrs.evolve(create, task_id=new_object_id(), actor=info)
        self.detached.adopt(again)
        link.send(again)
        self._publish(
            Event(
                "actor_restarted",
                time.time(),
                worker_id=worker.worker_id,
                node_id=worker.node_id,
                detail=f"detached actor {old.label} {old.name!r} restarted on {worker.address}",
            )
        )
