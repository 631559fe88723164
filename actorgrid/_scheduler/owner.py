"""The owner of calls and actors: what happens to each call this process started, as a pure
state machine (sans-I/O). ``OwnerState.handle(event) -> list[Command]``.

The process that submits a task or calls an actor owns the call (Ray's ownership model): it
keeps it in flight, retries it, re-sends it to a restarted actor, cancels it and resolves its
ref, exactly once. Reference counts (``refcount.RefTable``) are part of the same state: the
owner frees an object when its last reference, local or borrowed, is gone, and a worker that
leaves ends both its calls and its borrows (``WorkerGone``).

A call is a task (placed by the shell on a worker of its choosing: ``PlaceTask``) or an actor
call (sent to the actor's address: ``SendCall``). Its life::

    TaskSubmitted ──PlaceTask──▶ placing ──TaskPlaced──▶ in flight at an address
    CallSubmitted ──SendCall───▶ in flight            or queued while its actor restarts
    CallSent (sent already) ───▶ in flight            or, if its actor left that address,
                                                      as if lost there (below)
    in flight ──ResultArrived──▶ resolved             (an error matching retry_on: placed again)
    in flight ──WorkerGone─────▶ placed again / queued for the restarted actor / resolved
    in flight ──LinkDropped────▶ placed again (a task with retries left) / resolved: its
                                 worker lives on, and so do its actors
    anywhere  ──CancelRequested▶ resolved CANCELLED, or SendCancel and resolved by its answer

An actor this process created is alive at an address, restarting (``RestartActor``: the
shell places it again and answers ``ActorRestarted`` or ``ActorRestartFailed``) or dead
(``ActorDead`` once its worker died with no restarts left; ``ActorKilled``; ``ActorEnded``
when its constructor failed). A call to a dead actor is resolved ACTOR_DIED at once, never
sent, while its tombstone is kept: the most recent ``DEAD_REMEMBERED`` dead actors (an LRU),
so that a process creating and killing actors for ever keeps bounded tables (``statistics``).

Calls to actors owned by other processes (followed to a restarted actor's new address) and
the restarts of the coroutine actors this process started are decided by the following part,
``owner_follow.FollowState`` (``self.follow``), fed through the same ``handle``. An answer or a cancel for a call resolved
already (a late reply after a forced cancel, a reply from an incarnation the call was taken
from) changes nothing: no row is made again.

Invariants (checked by the Hypothesis machine in ``tests/_scheduler/test_owner.py``):

- every call is resolved exactly once (``Resolve``), and never sent after that;
- a cancelled call is never placed nor sent again;
- a task is placed at most ``1 + max_retries`` times (``-1``: no limit), counting only the
  placements after a failure (one whose first send was never written, ``written=False``,
  spends nothing, since it never ran);
- the calls to a restarting actor reach its new incarnation in the order they were submitted;
- an actor is restarted at most ``max_restarts`` times, and an actor call is sent again at most
  ``max_retries`` times (its actor's ``max_task_retries``) after it may have run (a send
  never written spends nothing);
- a call to a dead actor, or beyond its retries, is resolved ACTOR_DIED.

Costs: every event is O(1) but ``WorkerGone`` (O(calls and actors at that address)),
``LinkDropped`` (O(calls it names)),
``ActorRestarted`` / ``ActorRestartFailed`` / ``ActorKilled`` (O(calls queued for or in flight
to it)). Nothing is O(calls) or O(actors). Never reads a clock, does no I/O. The events and
commands are in ``owner_events.py`` (re-exported here).
"""

from __future__ import annotations

import itertools

from .._protocol.ids import ActorId
from .owner_events import (
    ActorAdded,
    ActorDead,
    ActorEnded,
    ActorKilled,
    ActorLocated,
    ActorNotLocated,
    ActorRestarted,
    ActorRestartFailed,
    CallId,
    CallSent,
    CallSubmitted,
    CancelRequested,
    Command,
    CoroutineLost,
    CoroutineRestarted,
    CoroutineRestartFailed,
    Event,
    FollowedCallLost,
    FollowedCallSubmitted,
    LinkDropped,
    LocateActor,
    PlaceTask,
    Resolve,
    RestartActor,
    RestartCoroutine,
    ResultArrived,
    SendCall,
    SendCancel,
    SendCoroutine,
    SendFollowed,
    TaskPlaced,
    TaskSubmitted,
    Why,
    WorkerGone,
)
from .owner_follow import FOLLOW_EVENTS, FollowState
from .refcount import RefTable

__all__ = [
    "DEAD_REMEMBERED",
    "ActorAdded",
    "ActorDead",
    "ActorEnded",
    "ActorKilled",
    "ActorLocated",
    "ActorNotLocated",
    "ActorRestartFailed",
    "ActorRestarted",
    "CallSent",
    "CallSubmitted",
    "CancelRequested",
    "Command",
    "CoroutineLost",
    "CoroutineRestartFailed",
    "CoroutineRestarted",
    "Event",
    "FollowState",
    "FollowedCallLost",
    "FollowedCallSubmitted",
    "LinkDropped",
    "LocateActor",
    "OwnerState",
    "PlaceTask",
    "Resolve",
    "RestartActor",
    "RestartCoroutine",
    "ResultArrived",
    "SendCall",
    "SendCancel",
    "SendCoroutine",
    "SendFollowed",
    "TaskPlaced",
    "TaskSubmitted",
    "Why",
    "WorkerGone",
]

# Dead actors this process created are remembered (a tombstone), the most recent ones only:
# a call to one fails at once with ActorDiedError, never sent. One whose tombstone is gone is
# no longer this state's: the shell sends a call to it as to any actor, and its worker (which
# keeps tombstones of its own) or the dead link answers that it died.
DEAD_REMEMBERED = 4096

# --- state -----------------------------------------------------------------------------------


class _Call:
    __slots__ = ("actor_id", "address", "cancelled", "retries", "seq")

    def __init__(self, seq: int, retries: int, actor_id: ActorId | None) -> None:
        self.seq = seq  # submission order, for re-sending to a restarted actor in order
        self.retries = retries
        self.actor_id = actor_id  # None: a task
        self.address: str | None = None  # in flight there; None: placing or queued
        self.cancelled = False


class _Actor:
    __slots__ = ("address", "calls", "queued", "restarts")

    def __init__(self, address: str, restarts: int) -> None:
        self.address: str | None = address  # None: restarting
        self.restarts = restarts
        self.calls: set[CallId] = set()  # in flight to it
        self.queued: list[CallId] = []  # waiting for its next incarnation, in order


class OwnerState:
    """The calls and actors one process owns, and its reference table (``refs``)."""

    def __init__(self, address: str, refs: RefTable | None = None) -> None:
        self.refs = refs if refs is not None else RefTable(address)
        self._calls: dict[CallId, _Call] = {}
        self._actors: dict[ActorId, _Actor] = {}
        # Tombstones, insertion-ordered: the oldest goes first (at most DEAD_REMEMBERED).
        self._dead: dict[ActorId, None] = {}
        self.follow = FollowState()  # calls to actors owned elsewhere; coroutine actors
        self._at: dict[str, set[CallId]] = {}  # address -> calls in flight there
        self._actors_at: dict[str, set[ActorId]] = {}
        self._seq = itertools.count()

    def __repr__(self) -> str:
        return f"<OwnerState calls={len(self._calls)} actors={len(self._actors)} {self.refs!r}>"

    def __len__(self) -> int:
        """Calls not yet resolved (and, of those to actors owned elsewhere, those held here)."""
        return len(self._calls) + len(self.follow)

    def statistics(self) -> tuple[int, int]:
        """The sizes of the actor tables: (actors alive or restarting, tombstones)."""
        return len(self._actors), len(self._dead)

    def pending(self, call_id: CallId) -> bool:
        return call_id in self._calls or self.follow.pending(call_id)

    def owns_actor(self, actor_id: ActorId) -> bool:
        """Any thread (one dict lookup): an actor this process created and has not seen end,
        whose calls this state owns."""
        return actor_id in self._actors or actor_id in self._dead

    def address_of(self, call_id: CallId) -> str | None:
        """Where the call is in flight (None: placing, queued, or resolved)."""
        call = self._calls.get(call_id)
        return call.address if call is not None else None

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, TaskSubmitted):
            return self._task_submitted(event)
        if isinstance(event, TaskPlaced):
            return self._task_placed(event)
        if isinstance(event, CallSubmitted):
            return self._call_submitted(event)
        if isinstance(event, CallSent):
            return self._call_sent(event)
        if isinstance(event, ActorKilled | ActorEnded):
            return self._killed(event.actor_id)
        if isinstance(event, ResultArrived):
            return self._result(event)
        if isinstance(event, CancelRequested):
            return self._cancel(event)
        if isinstance(event, ActorAdded):
            return self._actor_added(event)
        if isinstance(event, ActorRestarted):
            return self._restarted(event)
        if isinstance(event, ActorRestartFailed):
            return self._restart_failed(event)
        if isinstance(event, WorkerGone):
            return self._worker_gone(event)
        if isinstance(event, LinkDropped):
            return self._link_dropped(event)
        if isinstance(event, FOLLOW_EVENTS):
            return self.follow.handle(event)
        return list(self.refs.handle(event))  # raises TypeError for what is no event

    # --- calls ---------------------------------------------------------------------------

    # The hot path's events have direct methods (no event nor command objects): the shell
    # calls them for every task; ``handle`` calls them too, so there is one logic.

    def task_submitted(self, call_id: CallId, max_retries: int) -> bool:
        """TaskSubmitted; True: place it (PlaceTask)."""
        if call_id in self._calls:
            return False
        self._calls[call_id] = _Call(next(self._seq), max_retries, None)
        return True

    def task_placed(self, call_id: CallId, address: str) -> None:
        """TaskPlaced."""
        call = self._calls.get(call_id)
        if call is None or call.actor_id is not None:
            return
        if call.address is not None:
            self._unplace(call_id, call)
        call.address = address
        calls = self._at.get(address)
        if calls is None:
            self._at[address] = {call_id}
        else:
            calls.add(call_id)

    def call_submitted(self, call_id: CallId, actor_id: ActorId, max_retries: int) -> str | None:
        """CallSubmitted to an actor alive at an address: that address (send it there, as
        SendCall says). None: nothing was done; feed ``handle(CallSubmitted(...))``."""
        actor = self._actors.get(actor_id)
        if actor is None or actor.address is None or call_id in self._calls:
            return None
        call = self._calls[call_id] = _Call(next(self._seq), max_retries, actor_id)
        self._fly(call_id, call, actor, actor.address)
        return actor.address

    def call_sent(self, call_id: CallId, actor_id: ActorId, address: str, max_retries: int) -> bool:
        """CallSent to the address its actor is alive at: now in flight there (True). False:
        nothing was done; feed ``handle(CallSent(...))``."""
        actor = self._actors.get(actor_id)
        if actor is None or actor.address != address or call_id in self._calls:
            return False
        call = self._calls[call_id] = _Call(next(self._seq), max_retries, actor_id)
        self._fly(call_id, call, actor, address)
        return True

    def answered(self, call_id: CallId) -> bool:
        """ResultArrived with a value (or an actor call's error, never retried); True:
        resolve it with that answer (Resolve VALUE or ERROR)."""
        call = self._calls.get(call_id)
        if call is None or call.address is None:
            return False  # resolved already (forced cancel), or an answer from a past placing
        del self._calls[call_id]
        self._unplace(call_id, call)
        return True

    def _task_submitted(self, event: TaskSubmitted) -> list[Command]:
        if self.task_submitted(event.call_id, event.max_retries):
            return [PlaceTask(event.call_id)]
        return []

    def _task_placed(self, event: TaskPlaced) -> list[Command]:
        self.task_placed(event.call_id, event.address)
        return []

    def _call_submitted(self, event: CallSubmitted) -> list[Command]:
        if event.call_id in self._calls:
            return []
        actor = self._actors.get(event.actor_id)
        if actor is None:
            return [Resolve(event.call_id, Why.ACTOR_DIED)]
        call = self._calls[event.call_id] = _Call(
            next(self._seq), event.max_retries, event.actor_id
        )
        if actor.address is None:
            actor.queued.append(event.call_id)
            return []
        return [self._send(event.call_id, call, actor, actor.address, retry=False)]

    def _call_sent(self, event: CallSent) -> list[Command]:
        if event.call_id in self._calls:
            return []
        call = self._calls[event.call_id] = _Call(
            next(self._seq), event.max_retries, event.actor_id
        )
        actor = self._actors.get(event.actor_id)
        if actor is not None and actor.address == event.address:
            self._fly(event.call_id, call, actor, event.address)
            return []
        # Sent where its actor no longer lives (its worker died as the call left): lost there.
        if actor is not None and actor.address is None and call.retries:
            call.retries -= 1 if call.retries > 0 else 0
            actor.queued.append(event.call_id)  # the latest call: last in order
            return []
        if actor is not None and actor.address is not None and call.retries:
            call.retries -= 1 if call.retries > 0 else 0
            return [self._send(event.call_id, call, actor, actor.address, retry=True)]
        return self._resolve(event.call_id, call, Why.ACTOR_DIED)

    def _killed(self, actor_id: ActorId) -> list[Command]:
        actor = self._actors.get(actor_id)
        if actor is None:
            return []
        # Its calls in flight get their answers (or fail with its worker); none is sent again.
        actor.restarts = 0
        commands: list[Command] = []
        for call_id in actor.calls:
            self._calls[call_id].retries = 0
        if actor.address is not None:
            self._actors_at.get(actor.address, set()).discard(actor_id)
        commands += self._actor_dead(actor_id, actor)
        return commands

    def _send(
        self, call_id: CallId, call: _Call, actor: _Actor, address: str, *, retry: bool
    ) -> SendCall:
        self._fly(call_id, call, actor, address)
        return SendCall(call_id, address, retry)

    def _fly(self, call_id: CallId, call: _Call, actor: _Actor, address: str) -> None:
        call.address = address
        actor.calls.add(call_id)
        calls = self._at.get(address)
        if calls is None:
            self._at[address] = {call_id}
        else:
            calls.add(call_id)

    def _result(self, event: ResultArrived) -> list[Command]:
        call = self._calls.get(event.call_id)
        if call is None or call.address is None:
            return []  # resolved already (forced cancel), or an answer from a past placing
        if event.ok:
            return [Resolve(event.call_id, Why.VALUE)] if self.answered(event.call_id) else []
        if event.retryable and call.actor_id is None and not call.cancelled and call.retries:
            return self._retry_task(event.call_id, call)
        return self._resolve(event.call_id, call, Why.ERROR)

    def _retry_task(self, call_id: CallId, call: _Call, *, spend: bool = True) -> list[Command]:
        self._unplace(call_id, call)
        if spend and call.retries > 0:
            call.retries -= 1
        return [PlaceTask(call_id, retry=True)]

    def _cancel(self, event: CancelRequested) -> list[Command]:
        call_id = event.call_id
        call = self._calls.get(call_id)
        if call is None:
            return self.follow.cancel(call_id)
        call.cancelled = True
        if call.address is None:  # placing, or queued for a restarting actor
            return self._resolve(call_id, call, Why.CANCELLED)
        commands: list[Command] = [SendCancel(call_id, call.address, event.force)]
        if event.force:  # its worker is killed: no answer will come
            commands += self._resolve(call_id, call, Why.CANCELLED)
        return commands

    def _resolve(self, call_id: CallId, call: _Call, why: Why) -> list[Command]:
        del self._calls[call_id]
        self._unplace(call_id, call)
        if call.actor_id is not None:
            actor = self._actors.get(call.actor_id)
            if actor is not None and call.address is None and call_id in actor.queued:
                actor.queued.remove(call_id)  # O(queued): a cancel while it restarts
        return [Resolve(call_id, why)]

    def _unplace(self, call_id: CallId, call: _Call) -> None:
        address = call.address
        if address is None:
            return
        call.address = None
        calls = self._at.get(address)
        if calls is not None:
            calls.discard(call_id)
            if not calls:
                del self._at[address]
        if call.actor_id is not None:
            actor = self._actors.get(call.actor_id)
            if actor is not None:
                actor.calls.discard(call_id)

    # --- actors --------------------------------------------------------------------------

    def _actor_added(self, event: ActorAdded) -> list[Command]:
        self._actors[event.actor_id] = _Actor(event.address, event.max_restarts)
        self._dead.pop(event.actor_id, None)
        self._actors_at.setdefault(event.address, set()).add(event.actor_id)
        return []

    def _restarted(self, event: ActorRestarted) -> list[Command]:
        actor = self._actors.get(event.actor_id)
        if actor is None or actor.address is not None:
            return []
        actor.address = event.address
        self._actors_at.setdefault(event.address, set()).add(event.actor_id)
        queued, actor.queued = actor.queued, []
        commands: list[Command] = []
        for call_id in queued:
            call = self._calls[call_id]
            commands.append(self._send(call_id, call, actor, event.address, retry=True))
        return commands

    def _restart_failed(self, event: ActorRestartFailed) -> list[Command]:
        actor = self._actors.get(event.actor_id)
        if actor is None or actor.address is not None:
            return []
        return self._actor_dead(event.actor_id, actor)

    def _actor_dead(self, actor_id: ActorId, actor: _Actor, *, tell: bool = False) -> list[Command]:
        del self._actors[actor_id]
        self._dead[actor_id] = None
        if len(self._dead) > DEAD_REMEMBERED:
            del self._dead[next(iter(self._dead))]
        commands: list[Command] = [ActorDead(actor_id)] if tell else []
        for call_id in actor.queued:
            commands += self._resolve(call_id, self._calls[call_id], Why.ACTOR_DIED)
        actor.queued = []
        return commands

    def _worker_gone(self, event: WorkerGone) -> list[Command]:
        address = event.address
        commands: list[Command] = []
        restarting: set[ActorId] = set()
        dying: list[ActorId] = []
        for actor_id in self._actors_at.pop(address, ()):
            actor = self._actors.get(actor_id)
            if actor is None or actor.address != address:
                continue
            actor.address = None
            if actor.restarts != 0 and event.retry:
                actor.restarts -= 1 if actor.restarts > 0 else 0
                restarting.add(actor_id)
                commands.append(RestartActor(actor_id))
            else:
                dying.append(actor_id)
        lost = [(self._calls[c].seq, c) for c in self._at.pop(address, ())]
        requeue: dict[ActorId, list[tuple[int, CallId]]] = {}
        for seq, call_id in sorted(lost):
            call = self._calls[call_id]
            call.address = None
            actor = self._actors.get(call.actor_id) if call.actor_id is not None else None
            if actor is not None:
                actor.calls.discard(call_id)
            if call.cancelled:
                commands += self._resolve(call_id, call, Why.CANCELLED)
            elif call.actor_id is None:
                if event.retry and (call.retries or not event.written):
                    commands += self._retry_task(call_id, call, spend=event.written)
                else:
                    commands += self._resolve(call_id, call, Why.WORKER_DIED)
            else:
                if call.actor_id in restarting and (call.retries or not event.written):
                    if event.written and call.retries > 0:
                        call.retries -= 1  # it may have run: that spends a retry
                    requeue.setdefault(call.actor_id, []).append((seq, call_id))
                else:
                    commands += self._resolve(call_id, call, Why.ACTOR_DIED)
        for actor_id, calls in requeue.items():
            # Those in flight were submitted before those queued since: they go first.
            actor = self._actors[actor_id]
            actor.queued[:0] = [call_id for _, call_id in calls]
        for actor_id in dying:
            commands += self._actor_dead(actor_id, self._actors[actor_id], tell=True)
        return commands

    def _link_dropped(self, event: LinkDropped) -> list[Command]:
        # Only the calls named (the dropped link's): those sent since to the same address went
        # on the new link, and their actors never left. Resolved in submission order.
        dropped = []
        for call_id in event.call_ids:
            call = self._calls.get(call_id)
            if call is not None and call.address == event.address:
                dropped.append((call.seq, call_id, call))
        commands: list[Command] = []
        for _, call_id, call in sorted(dropped, key=lambda row: row[0]):
            if call.cancelled:
                commands += self._resolve(call_id, call, Why.CANCELLED)
            elif call.actor_id is None and call.retries:
                commands += self._retry_task(call_id, call)
            else:
                commands += self._resolve(call_id, call, Why.LINK_DROPPED)
        return commands
