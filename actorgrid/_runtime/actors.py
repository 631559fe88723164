"""The actors this process owns: creating them, calling them, restarting them; and the
actors it only calls, followed to their new address when their owner restarts them.

Owned: the calls to an actor this process created, and its restarts, are decided by the
owner state machine (``_scheduler/owner.py``, fed by ``tasks.py``): ``ActorAdded`` at its
creation, ``CallSubmitted`` / ``CallSent`` per call, ``WorkerGone`` when its worker's link
dies, answered here by ``RestartActor`` (place it again: ``ActorRestarted`` or
``ActorRestartFailed``), ``SendCall`` (again, to the new incarnation, in the order the calls
were made), ``ActorDead`` and ``Resolve``. This module only carries those out.

Following: calls to actors this process does not own, and coroutine actors' restarts, are
decided by the same state machine (its following part), carried out by ``following.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from .._exceptions import ActorDiedError, ActorgridError, TaskCancelledError
from .._protocol.ids import ActorId, new_actor_id
from .._protocol.messages import (
    ActorEnded,
    ActorInfo,
    AdoptActor,
    CallActor,
    CreateActor,
    Event,
    NameReply,
    OwnActor,
    Payload,
    RegisterName,
    TaskResult,
)
from .._scheduler.demand import Demand, as_demand
from .._scheduler.names import DEFAULT_NAMESPACE
from .._scheduler.owner import (
    ActorAdded,
    ActorDead,
    ActorKilled,
    ActorRestarted,
    ActorRestartFailed,
    CallSubmitted,
    Command,
    Resolve,
    RestartActor,
    SendCall,
    Why,
)
from .._scheduler.placement import NoWorkerError
from .blocking import burst_started
from .following import RuntimeFollowing
from .links import log
from .quiet import forget_sent
from .records import CALL, CREATE, OwnedActor, Sent, _call_sent, _describe
from .refs import PENDING, ObjectEntry
from .serialization import loads_error, system_error
from .tasks import DEAD_BEFORE as _DEAD_BEFORE
from .tasks import _Context

if TYPE_CHECKING:
    from .handles import ActorHandle
    from .peer import Peer


# Actors this process created that ended for a known reason (ag.kill, a failing constructor),
# so that a later call says why ("was killed") rather than "died"; the most recent ones only
# (a bounded memory, not a table that grows).
KILLED_REMEMBERED = 4096


class RuntimeActors(RuntimeFollowing):
    """Owned actors and their restarts."""

    # Why each ended: "was killed", ...; insertion-ordered: the oldest goes first.
    _killed: dict[ActorId, str] | None = None
    # Actors this process created without restarts, alive: what their actor_died event says.
    _unrestarted: dict[ActorId, ActorInfo] | None = None
    # Actors whose batched name claim made them this process's at the head (names.py).
    _owned_by_claim: set[ActorId] | None = None

    async def _new_incarnation(self, old: ActorInfo, why: str) -> ActorInfo | None:
        """Loop: place a dead actor again (same id and name, new address), waiting for a
        worker if none fits; None if its name was taken meanwhile or the head is away."""
        need = Demand.of(0.0, dict(old.resources))
        worker = await self.waiting.worker_for_actor(need, old.actor_id)
        left = old.max_restarts - 1 if old.max_restarts > 0 else old.max_restarts
        info = attrs.evolve(old, address=worker.address, max_restarts=left)
        if info.name:
            try:
                reply = await self.head_request(lambda rid: RegisterName(rid, info, False))
            except ActorgridError:
                return None
            assert isinstance(reply, NameReply)
            if reply.error is not None:
                log.warning("actor %s not restarted: %s", _describe(old), reply.error)
                return None
            self.names[(info.namespace or DEFAULT_NAMESPACE, info.name)] = info
        self.publish(
            Event(
                "actor_restarted",
                time.time(),
                worker_id=worker.worker_id,
                node_id=worker.node_id,
                detail=f"actor {_describe(old)} restarted on {worker.address} after: {why}",
                actor_id=info.actor_id,
                name=info.name or info.label,
            )
        )
        return info

    def _restart_owned_at(self, address: str, why: str) -> None:
        """Loop: the link to ``address`` died; the owner state decides which of the actors
        this process created there are restarted (``tasks_lost``: WorkerGone)."""
        self.owned_at.pop(address, None)

    def owner_decides(self, sent: Sent) -> bool:
        """Loop: the link of a call in flight died, or it was put in flight as the link
        closed: True if the owner state decides what becomes of it (a call to an actor this
        process created; one sent before the state knew of its actor is told to it now)."""
        if not sent.owner:
            actor = sent.actor
            if sent.kind != CALL or actor is None or sent.cancelled or sent.payload is None:
                return False
            state = self._owner_state
            if state is None or not state.owns_actor(actor.actor_id):
                return False
            sent.owner = True
            self._actor_calls[sent.entry.object_id] = sent
            self._direct_calls.append(sent)
        # Now, before the WorkerGone that follows (a link's close), or alone (a call put in
        # flight as its link closed: the state finds its actor gone from there).
        self._drain_direct()
        return True

    def _carry_out(self, command: Command, context: _Context) -> int:
        if isinstance(command, SendCall):
            sent = self._actor_calls.get(command.call_id)
            if sent is not None:
                assert sent.actor is not None
                owned = self.owned.get(sent.actor.actor_id)
                if owned is not None:
                    sent.actor = owned.info
                self._put_in_flight(command.address, sent)
            return 0
        if isinstance(command, Resolve) and command.call_id in self._actor_calls:
            self._resolve_call(command, context)
            return 0
        if isinstance(command, RestartActor):
            self._restart(command.actor_id, context.why)
            return 0
        if isinstance(command, ActorDead):
            self.placement.release_actor(command.actor_id)  # what it held is free
            owned = self.owned.pop(command.actor_id, None)
            once = self._unrestarted.pop(command.actor_id, None) if self._unrestarted else None
            if self._closing:
                return 0
            if owned is not None:
                self._actor_died(owned.info, f"no restarts left; {context.why}")
            elif once is not None:
                self._actor_died(once, f"it has max_restarts=0; {context.why}")
            return 0
        return super()._carry_out(command, context)

    def _resolve_call(self, command: Resolve, context: _Context) -> None:
        sent = self._actor_calls.pop(command.call_id)
        entry, why = sent.entry, command.why
        if entry.state != PENDING:
            return
        if why is Why.VALUE or why is Why.ERROR:
            assert context.result is not None
            if context.result.ok:
                entry.set_value(context.result.value)
            else:
                entry.set_error(context.result.value)
        elif why is Why.CANCELLED:
            if context.why == "force":
                message = "the call was cancelled with force=True: its worker is killed"
            elif context.why in ("deep", "flat"):
                message = "the call was cancelled while its actor was being restarted"
            else:
                message = f"the call was cancelled, and then {context.why}"
            entry.set_error(TaskCancelledError(message))
        else:
            label = _describe(sent.actor) if sent.actor is not None else "the actor"
            killed = self._killed
            reason = killed.get(sent.actor.actor_id) if sent.actor is not None and killed else None
            if reason is not None:
                entry.set_error(ActorDiedError(f"actor {label} {reason}"))
            elif why is Why.LINK_DROPPED:  # the actor lives on; the call may have run
                entry.set_error(ActorDiedError(f"actor {label}: {context.why}"))
            else:
                entry.set_error(ActorDiedError(f"actor {label} died: {context.why}"))

    def _restart(self, actor_id: ActorId, why: str) -> None:
        """RestartActor: place it again, then tell the state (ActorRestarted or
        ActorRestartFailed); its handles queue their calls meanwhile."""
        owned = self.owned.get(actor_id)
        if owned is None or self._closing:
            self._owner(ActorRestartFailed(actor_id), _Context(f"it was not restarted; {why}"))
            return
        for handle in list(owned.handles):
            handle._unresolve()
        self.nursery.start_soon(self._restart_class_actor, owned, why)

    async def _restart_class_actor(self, owned: OwnedActor, why: str) -> None:
        old = owned.info
        info = await self._new_incarnation(old, why)
        if info is None:
            self.owned.pop(old.actor_id, None)
            self._actor_died(old, f"it could not be restarted; {why}")
            head = self.head
            if old.name and head is not None:  # the head held its name for it: free it now
                head.send(ActorEnded(0, old.actor_id, f"it could not be restarted; {why}"))
            error = ActorDiedError(f"actor {_describe(old)} died and could not be restarted: {why}")
            for handle in list(owned.handles):
                handle._fail(error)
            context = _Context(f"it could not be restarted; {why}")
            self._owner(ActorRestartFailed(old.actor_id), context)
            return
        owned.info = info
        self.send_create(
            self.new_entry(), info, owned.class_id, owned.blob, owned.payload, owned.max_concurrency
        )
        # The calls it had in flight first (SendCall, in order), then those its handles queued.
        self._owner(ActorRestarted(info.actor_id, info.address))
        for handle in list(owned.handles):
            handle._resolve(info, self.send_call)

    def actor_killed(self, actor_id: ActorId) -> None:
        """Loop: ``ag.kill`` ended an actor: if this process created it, it is never restarted
        and calls made to it later fail at once."""
        self.placement.release_actor(actor_id)  # what it held, if this process placed it
        state = self._owner_state
        if state is not None and state.owns_actor(actor_id):
            self.owned.pop(actor_id, None)
            if self._unrestarted:
                self._unrestarted.pop(actor_id, None)
            self._ended(actor_id, "was killed")
            self._owner(ActorKilled(actor_id))

    def _ended(self, actor_id: ActorId, reason: str) -> None:
        if self._killed is None:
            self._killed = {}
        self._killed[actor_id] = reason
        if len(self._killed) > KILLED_REMEMBERED:
            del self._killed[next(iter(self._killed))]

    def _creation_failed(self, actor: ActorInfo, error: Payload) -> None:
        self.owned.pop(actor.actor_id, None)
        if self._unrestarted:
            self._unrestarted.pop(actor.actor_id, None)
        if self.owner_state.owns_actor(actor.actor_id):
            self._ended(actor.actor_id, f"failed in its constructor: {loads_error(error)}")
        super()._creation_failed(actor, error)

    def _label_of(self, actor_id: ActorId) -> str:
        once = self._unrestarted.get(actor_id) if self._unrestarted else None
        return _describe(once) if once is not None else super()._label_of(actor_id)

    def _actor_died(self, info: ActorInfo, why: str) -> None:
        detail = f"actor {_describe(info)}: {why}"
        name = info.name or info.label
        self.publish(
            Event("actor_died", time.time(), detail=detail, actor_id=info.actor_id, name=name)
        )

    def own(self, handle: ActorHandle[Any], owned: OwnedActor) -> None:
        """Any thread: remember how to restart a restartable actor this process creates."""
        owned.handles.add(handle)
        self.owned[owned.info.actor_id] = owned

    def send_create(
        self,
        entry: ObjectEntry,
        info: ActorInfo,
        class_id: bytes,
        blob: Callable[[], bytes],
        payload: Payload,
        max_concurrency: int,
    ) -> None:
        peer = self.peer_for(info.address)
        code = None
        if class_id not in peer.sent_code:
            code = blob()
            peer.sent_code.add(class_id)
        if info.actor_id in self.owned:
            self.owned_at.setdefault(info.address, set()).add(info.actor_id)
        if not info.detached and not self.owner_state.owns_actor(info.actor_id):
            # Its calls and restarts are this process's (a detached one's are the head's).
            self._owner(ActorAdded(info.actor_id, info.address, info.max_restarts))
            if info.actor_id not in self.owned:  # no restarts: kept only to report its death
                if self._unrestarted is None:
                    self._unrestarted = {}
                self._unrestarted[info.actor_id] = info
        self._register_owned(info)
        create = CreateActor(entry.object_id, info, class_id, code, payload, max_concurrency)
        head = self.head
        if info.detached and info.max_restarts != 0 and head is not None:
            # The head restarts it, whoever is left: it needs the class code every time.
            head.send(AdoptActor(attrs.evolve(create, cls=code if code is not None else blob())))
        peer.inflight[entry.object_id] = Sent(entry, CREATE, actor=info)
        peer.send(create)

    def _register_owned(self, info: ActorInfo) -> None:
        """Loop: tell the head that ``info`` (about to be created) is this process's, so it
        ends when this process does; written out before the creation is, so that a creator
        killed in between leaves no actor the head does not know of."""
        head = self.head
        claimed = self._owned_by_claim
        if claimed and info.actor_id in claimed:
            return  # its batched claim (ClaimNames) made it ours at the head already
        if head is not None and not info.detached:
            head.send(OwnActor(info.actor_id, info.address))
            head.flush()

    def send_call_direct(
        self, handle: ActorHandle[Any], entry: ObjectEntry, method: str, payload: Payload
    ) -> bool:
        """Any thread: send a method call straight from this thread, if that keeps order.

        Only for a lone call (nothing in flight to that worker): it saves the hop onto the
        loop, which is most of a round trip. False: nothing was sent; use ``send_call``.
        """
        info = handle._info
        state = self._owner_state
        if (
            info is None
            or handle._queued
            or (state is not None and state.follow.active)
            or not self.portal.idle()
        ):
            return False  # (an actor moved: the loop sends it where it lives now)
        first = burst_started()  # this thread's first call since it waited (blocking.py)
        peer = self.peers.get(info.address)
        if peer is None or peer.closed or (peer.inflight and not first):
            # Calls already in flight mean a burst: leave batching to the loop.
            return False
        if entry.quiet:  # no answer, nothing in flight (quiet.py): a burst is told by ``first``
            if not first or (state is not None and state.owns_actor(info.actor_id)):
                return False  # (an owned actor's call: its owner state is the loop's)
            wid = self._worker_at.get(info.address)
            root = self.observe.call_sent(entry.object_id, info.label, method, wid, payload.nbytes)
            call = CallActor(entry.object_id, info.actor_id, method, payload, root, True)
            # Counted before it goes (its confirmation may come at once), until its worker
            # confirms it (confirms.py); not sent here: the loop sends and counts it.
            peer.sends.sent_call(info.actor_id)
            if info.address == self.address:  # hosted here: into its lane, if order allows
                executor = self.executor
                sent_now = executor is not None and executor.call_from_thread(peer, call)
            else:
                sent_now = peer.send_threadsafe(call)
            if not sent_now:
                peer.sends.confirmed(info.actor_id, 1)
            forget_sent(self, entry.object_id)
            return sent_now
        sent = _call_sent(entry, info, method, payload)
        owned = state is not None and state.owns_actor(info.actor_id)
        try:
            if owned:
                # Told to the state before it is sent (its reply may come at once): CallSent.
                sent.owner = True
                self._actor_calls[entry.object_id] = sent
                self._direct_calls.append(sent)
            peer.inflight[entry.object_id] = sent
            entry.where = peer
            wid = self._worker_at.get(info.address)
            root = self.observe.call_sent(entry.object_id, info.label, method, wid, payload.nbytes)
            call = CallActor(entry.object_id, info.actor_id, method, payload, root)
            written = peer.send_threadsafe(call)
        except BaseException:
            # A Ctrl-C (KeyboardInterrupt, raised in the main thread between any two bytecodes)
            # after the call was recorded: the caller gets no ref, so the loop answers it here
            # as cancelled, and no record of it is left waiting. (One that came as its frame
            # went out in part lets the rest follow, TcpFrameStream.send_nowait: the call may
            # run, and its answer is then dropped.)
            self.on_loop(self._interrupted_call, peer, sent)
            raise
        if written:
            if peer.closed:
                # Closed meanwhile: the close may have missed this entry; the loop checks.
                self.on_loop(self._missed_by_close, peer, entry.object_id)
            return True
        peer.inflight.pop(entry.object_id, None)
        entry.where = None
        if owned:
            self.on_loop(self._send_told, sent)  # the state has it: the loop sends it
            return True
        return False

    def _interrupted_call(self, peer: Peer, sent: Sent) -> None:
        """Loop: a call its thread was interrupted in sending (``send_call_direct``), at any
        point after its first record: answered as cancelled through the path of any answer,
        which drops it from the link's calls in flight, the owner state and the records."""
        entry = sent.entry
        call_id = entry.object_id
        if entry.state != PENDING or entry.where not in (None, peer):
            return  # answered already, or sent again elsewhere, by its link's close
        peer.inflight[call_id] = sent  # wherever the interrupt came
        label = _describe(sent.actor) if sent.actor is not None else "the actor"
        error = TaskCancelledError(
            f"the call to {label}.{sent.method} was interrupted (KeyboardInterrupt) as it "
            "was being sent"
        )
        self._on_result(peer, TaskResult(call_id, False, system_error(error)))
        state = self._owner_state
        if sent.owner and state is not None and not state.pending(call_id):
            self._actor_calls.pop(call_id, None)  # never told to the state: nothing else would

    def _send_told(self, sent: Sent) -> None:
        """Loop: send a call told to the state (CallSent) that its thread could not send:
        where the state has it in flight, unless it was queued or resolved meanwhile."""
        if self._direct_calls:
            self._drain_direct()
        state = self._owner_state
        assert state is not None
        address = state.address_of(sent.entry.object_id)
        if address is not None:
            self._put_in_flight(address, sent)

    def send_call(
        self, handle: ActorHandle[Any], entry: ObjectEntry, method: str, payload: Payload
    ) -> None:
        """Loop: send a method call, or queue it on the handle until the actor is placed."""
        info = handle._info
        if info is None:
            if handle._queued:
                handle._queued.append((entry, method, payload))
            else:
                handle._queued = [(entry, method, payload)]
            return
        state = self._owner_state
        if state is not None and state.owns_actor(info.actor_id):
            sent = _call_sent(entry, info, method, payload)
            sent.owner = True
            call_id = entry.object_id
            self._actor_calls[call_id] = sent
            if self._direct_calls:
                self._drain_direct()
            address = state.call_submitted(call_id, info.actor_id, info.max_task_retries)
            if address is not None:  # CallSubmitted to an actor alive there: the hot path
                self._put_in_flight(address, sent)
            else:
                event = CallSubmitted(call_id, info.actor_id, info.max_task_retries)
                self._owner(event, _Context(_DEAD_BEFORE))
            return
        if state is not None and state.follow.active:
            self.send_followed(handle, info, entry, method, payload)
            return
        self._send_call_info(info, entry, method, payload, info.max_task_retries)

    def _put_in_flight(self, address: str, sent: Sent) -> None:
        """Loop: send an owned call to ``address``, where the state has it in flight."""
        info, entry, payload = sent.actor, sent.entry, sent.payload
        assert info is not None and payload is not None
        peer = self.peer_for(address)
        peer.inflight[entry.object_id] = sent
        entry.where = peer
        wid = self._worker_at.get(address)
        root = self.observe.call_sent(entry.object_id, info.label, sent.method, wid, payload.nbytes)
        peer.send(
            CallActor(entry.object_id, info.actor_id, sent.method, payload, root, entry.quiet)
        )
        if entry.quiet:  # never answered (quiet.py): over for this process once sent
            peer.sends.sent_call(info.actor_id)  # until its worker confirms it (confirms.py)
            del peer.inflight[entry.object_id]
            entry.where = None
            self._actor_calls.pop(entry.object_id, None)
            state = self._owner_state
            if state is not None:
                state.answered(entry.object_id)
            forget_sent(self, entry.object_id)

    def new_actor_info(
        self,
        kind: str,
        label: str,
        need: float | Demand,
        name: str | None,
        namespace: str | None,
        methods: tuple[str, ...] = (),
        *,
        max_restarts: int = 0,
        max_task_retries: int = 0,
        detached: bool = False,
        mailbox_size: int = 0,
    ) -> ActorInfo:
        """Any thread: place a new actor and describe it. Its address is "" when no worker
        fits now: ``place_actor`` waits for one."""
        actor_id = new_actor_id()
        held = as_demand(need).resources
        try:
            # A new actor has no last incarnation to release: one holding nothing is only
            # counted on its worker (no entry per actor in the placement's tables).
            placed = self.placement.choose_for_actor(need, actor_id if held else None)
            address = placed.address
        except NoWorkerError:
            address = ""
        except KeyError:
            # The loop removed the chosen worker while this thread was choosing (placement's
            # tables are the loop's; a user thread only reads them here, for speed): the
            # loop's place_actor places it instead, as when no worker fits.
            address = ""
        ns = (namespace or DEFAULT_NAMESPACE) if name else namespace
        return ActorInfo(
            actor_id,
            address,
            kind,
            label,
            name,
            ns,
            methods,
            max_restarts,
            max_task_retries,
            detached,
            mailbox_size,
            held,
        )
