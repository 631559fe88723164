"""The I/O shell of the owner state's following part (``_scheduler/owner_follow.py``): calls
to actors this process does not own, followed to their new address when their owner restarts
them, and the remote coroutine actors this process started, restarted when their worker dies.

Following: a call to an actor owned elsewhere lost with its worker is told to the state
(``FollowedCallLost``). It decides; this shell carries out: ``LocateActor`` asks the head where
the actor lives now (LocateActor), every RELOCATE_POLL_S for up to RELOCATE_TIMEOUT_S, and
answers ``ActorLocated`` or ``ActorNotLocated``; ``SendFollowed`` sends a call there (every
handle in this process then sends there: ``route``); ``Resolve`` fails a call. As in Ray, a
call that never reached the old incarnation is sent to the new one; one that did is sent
again only under ``max_task_retries``, else it fails with ActorDiedError.

Coroutine actors: their worker's death is told to the state (``CoroutineLost``);
``RestartCoroutine`` places the actor again (same id and name, ``_new_incarnation``) and
answers ``CoroutineRestarted`` or ``CoroutineRestartFailed``; ``SendCoroutine`` starts it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._exceptions import ActorDiedError, ActorgridError, TaskCancelledError
from .._protocol.ids import ActorId, ObjectId
from .._protocol.messages import ActorInfo, CallActor, NameReply, Payload
from .._protocol.messages import LocateActor as LocateActorMessage
from .._scheduler.owner import (
    ActorLocated,
    ActorNotLocated,
    CancelRequested,
    Command,
    CoroutineLost,
    CoroutineRestarted,
    CoroutineRestartFailed,
    FollowedCallLost,
    FollowedCallSubmitted,
    LocateActor,
    Resolve,
    RestartCoroutine,
    SendCoroutine,
    SendFollowed,
    Why,
)
from .._scheduler.owner_follow import MOVED_REMEMBERED
from .quiet import forget_sent
from .records import CALL, Sent, TaskSpec, _call_sent, _describe
from .refs import PENDING, ObjectEntry
from .tasks import RuntimeTasks, _Context

if TYPE_CHECKING:
    from .handles import ActorHandle

RELOCATE_POLL_S = 0.2
RELOCATE_TIMEOUT_S = 60.0  # as long as an owner may take to place a restarted actor


@attrs.define(slots=True)
class _Followed:
    """What it takes to send a call to an actor owned elsewhere (again)."""

    entry: ObjectEntry
    info: ActorInfo  # the actor as last known
    method: str
    payload: Payload


class _Message(_Context):
    """A context whose ``why`` is the whole error message."""

    __slots__ = ()


class RuntimeFollowing(RuntimeTasks):
    """Calls followed to restarted actors owned elsewhere; coroutine actors' restarts."""

    # Made on first use: calls held by the state's following part, the actors found
    # elsewhere (as ActorInfo, for handles; the most recent MOVED_REMEMBERED), and the
    # coroutine actors being restarted (their new incarnation once placed).
    _followed: dict[ObjectId, _Followed] | None = None
    _moved: dict[ActorId, ActorInfo] | None = None
    _coroutines: dict[ObjectId, tuple[ObjectEntry, TaskSpec, ActorInfo | None]] | None = None
    _lost_actor: ActorInfo | None = None  # the actor of the FollowedCallLost being handled

    def follow(self, sent: Sent, why: str, *, written: bool) -> bool:
        """Loop: a call to an actor this process does not own found its worker gone: the
        owner state decides what becomes of it (True), unless this process is stopping or
        it was no actor call (False: the caller fails it)."""
        actor = sent.actor
        if actor is None or sent.kind != CALL or self._closing or sent.payload is None:
            return False
        call_id = sent.entry.object_id
        self._start_following()[call_id] = _Followed(sent.entry, actor, sent.method, sent.payload)
        self._lost_actor = actor  # what a LocateActor it answers looks for
        event = FollowedCallLost(
            call_id, actor.actor_id, actor.address, written, sent.retries, actor.max_restarts != 0
        )
        self._owner(event, _Context(why))
        return True

    def _start_following(self) -> dict[ObjectId, _Followed]:
        """Loop: make the tables of this part, and the owner state, on first use; the calls
        held."""
        if self._followed is None:
            self._followed, self._moved, self._coroutines = {}, {}, {}
        if self._owner_state is None:
            self._start_owning()
        return self._followed

    def send_followed(
        self,
        handle: ActorHandle[Any],
        info: ActorInfo,
        entry: ObjectEntry,
        method: str,
        payload: Payload,
    ) -> None:
        """Loop: a call to an actor owned elsewhere while the state follows some actor: sent
        where it lives now (the handle learns the new address), or held until it is found."""
        follow = self.owner_state.follow
        address = follow.route(info.actor_id, info.address)
        if address is None:
            self._start_following()[entry.object_id] = _Followed(entry, info, method, payload)
            event = FollowedCallSubmitted(
                entry.object_id, info.actor_id, info.address, info.max_task_retries
            )
            self._owner(event)
            return
        if address != info.address:
            moved = self._moved.get(info.actor_id) if self._moved else None
            info = moved if moved is not None else attrs.evolve(info, address=address)
            handle._info = info
        self._send_call_info(info, entry, method, payload, info.max_task_retries)

    def _send_call_info(
        self, info: ActorInfo, entry: ObjectEntry, method: str, payload: Payload, retries: int
    ) -> None:
        peer = self.peer_for(info.address)
        quiet = entry.quiet and retries == 0  # never answered (quiet.py): nothing in flight
        if not quiet:
            sent = _call_sent(entry, info, method, payload)
            sent.retries = retries
            peer.inflight[entry.object_id] = sent
            entry.where = peer
        wid = self._worker_at.get(info.address)
        root = self.observe.call_sent(entry.object_id, info.label, method, wid, payload.nbytes)
        peer.send(CallActor(entry.object_id, info.actor_id, method, payload, root, quiet))
        if quiet:
            peer.sends.sent_call(info.actor_id)  # until its worker confirms it (confirms.py)
            forget_sent(self, entry.object_id)

    async def _locate(self, old: ActorInfo, why: str) -> None:
        """LocateActor: ask the head until it places the actor elsewhere, or give up."""
        found: ActorInfo | None = None
        with trio.move_on_after(RELOCATE_TIMEOUT_S):
            while found is None:
                try:
                    reply = await self.head_request(lambda rid: LocateActorMessage(rid, old))
                except ActorgridError:
                    reply = None  # the head is away: ask again
                actor = reply.actor if isinstance(reply, NameReply) else None
                if actor is not None and actor.address != old.address:
                    found = actor
                    break
                await trio.sleep(RELOCATE_POLL_S)
        if found is None:
            message = (
                f"actor {_describe(old)} died and was not restarted within "
                f"{RELOCATE_TIMEOUT_S:g} s ({why}). Likely causes: it had no restarts left, or "
                "its owner (the process that created it) is gone too. Create it again, or give "
                "it max_restarts (and lifetime='detached' to outlive its creator)."
            )
            self._owner(ActorNotLocated(old.actor_id), _Message(message))
            return
        moved = self._moved
        assert moved is not None
        moved.pop(found.actor_id, None)
        moved[found.actor_id] = found
        if len(moved) > MOVED_REMEMBERED:
            del moved[next(iter(moved))]
        self._owner(ActorLocated(found.actor_id, found.address))

    def _restart_coroutine_actor(self, entry: ObjectEntry, spec: TaskSpec, why: str) -> None:
        """Loop: the worker of a coroutine actor started here died: the state decides."""
        assert spec.actor is not None
        self._start_following()
        assert self._coroutines is not None
        self._coroutines[entry.object_id] = (entry, spec, None)
        event = CoroutineLost(entry.object_id, spec.actor.actor_id, spec.actor.max_restarts)
        self._owner(event, _Context(why))

    async def _place_coroutine_again(self, call_id: ObjectId, old: ActorInfo, why: str) -> None:
        info = await self._new_incarnation(old, why)
        coroutines = self._coroutines
        assert coroutines is not None
        if info is None:
            self._owner(CoroutineRestartFailed(call_id), _Context(why))
            return
        record = coroutines.get(call_id)
        if record is not None:
            coroutines[call_id] = (record[0], record[1], info)
        self._owner(CoroutineRestarted(call_id, info.address), _Context(why))

    def interrupt_all(self) -> None:
        """Loop: a driver's Ctrl-C also cancels the calls that wait for their actor to be
        found, and the coroutine actors being restarted."""
        super().interrupt_all()
        held = [*(self._followed or ()), *(self._coroutines or ())]
        for call_id in held:
            self._owner(CancelRequested(call_id), _Context("deep"))

    def _carry_out(self, command: Command, context: _Context) -> int:
        if isinstance(command, SendFollowed):
            assert self._followed is not None and self._moved is not None
            followed = self._followed.pop(command.call_id, None)
            if followed is not None and followed.entry.state == PENDING:
                info = self._moved.get(followed.info.actor_id)
                if info is None or info.address != command.address:
                    info = attrs.evolve(followed.info, address=command.address)
                entry = followed.entry
                self._send_call_info(
                    info, entry, followed.method, followed.payload, command.max_retries
                )
            return 0
        if isinstance(command, LocateActor):
            lost = self._lost_actor
            assert lost is not None and lost.actor_id == command.actor_id
            info = attrs.evolve(lost, address=command.address)
            self.nursery.start_soon(self._locate, info, context.why)
            return 0
        if isinstance(command, RestartCoroutine):
            assert self._coroutines is not None
            entry, spec, _ = self._coroutines[command.call_id]
            assert spec.actor is not None
            self.nursery.start_soon(
                self._place_coroutine_again, command.call_id, spec.actor, context.why
            )
            return 0
        if isinstance(command, SendCoroutine):
            assert self._coroutines is not None
            entry, spec, new = self._coroutines.pop(command.call_id)
            assert new is not None
            if entry.state == PENDING:
                spec.actor = entry.actor = new
                self._send_spec(entry, spec)
            return 0
        if isinstance(command, Resolve):
            if self._followed and command.call_id in self._followed:
                followed = self._followed.pop(command.call_id)
                self._fail(followed.entry, followed.info, command.why, context)
                return 0
            if self._coroutines and command.call_id in self._coroutines:
                entry, spec, _ = self._coroutines.pop(command.call_id)
                assert spec.actor is not None
                self._fail(entry, spec.actor, command.why, context)
                return 0
        return super()._carry_out(command, context)

    def _fail(self, entry: ObjectEntry, info: ActorInfo, why: Why, context: _Context) -> None:
        if entry.state != PENDING:
            return
        if why is Why.CANCELLED:
            entry.set_error(
                TaskCancelledError("the call was cancelled while its actor was being restarted")
            )
        elif isinstance(context, _Message):
            entry.set_error(ActorDiedError(context.why))
        else:
            entry.set_error(ActorDiedError(f"actor {_describe(info)} died: {context.why}"))
