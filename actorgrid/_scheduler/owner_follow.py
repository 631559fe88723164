"""The calls a process makes to actors it does not own, followed when their owner restarts
them, and the remote coroutine actors it started, restarted when their worker dies: part of
the owner state machine (``owner.py`` holds one ``FollowState`` and feeds it), sans-I/O.

Following. A call to an actor owned by another process goes straight to the address its
handle knows, and this state does not hear of it (the hot path). Only when the call is lost
with its worker (``FollowedCallLost``) does it come here::

    lost ──(actor not restartable, or may have run with no retries left)──▶ Resolve ACTOR_DIED
    lost ──(actor known to live elsewhere now)──▶ SendFollowed there
    lost ──▶ queued; LocateActor (once per actor) ──ActorLocated──▶ SendFollowed, in order
                                                  ──ActorNotLocated▶ Resolve ACTOR_DIED

While an actor is looked for, calls made to it wait here (``FollowedCallSubmitted``); once it
is found, every call made through any handle in this process goes to the new address
(``route``), so handles held anywhere follow a restarted actor. A sent call leaves this state
(``SendFollowed``): its answer resolves it in the shell; a loss brings it back, with the sends
it has left.

Coroutine actors. A remote coroutine actor is a task whose call lives as long as the actor.
Its worker's death (``CoroutineLost``) restarts it while it has restarts left
(``RestartCoroutine``, answered ``CoroutineRestarted`` then ``SendCoroutine``, or
``CoroutineRestartFailed``), else resolves its call ACTOR_DIED; a cancel while it restarts
resolves it CANCELLED and it is not started again.

Invariants (checked by the Hypothesis machine in ``tests/_scheduler/test_owner_actors.py``):
every call that comes here is resolved exactly once or sent on exactly once per time it came;
calls to one actor are sent to each of its incarnations in the order they were made; a call
that may have run is sent again at most ``max_retries`` times; a cancelled call is never sent.

Costs: every event is O(1) but ``ActorLocated`` / ``ActorNotLocated`` (O(calls waiting for
that actor)) and a cancel of a waiting call (O(calls waiting for that actor)). The table of
actors found elsewhere keeps the most recent ``MOVED_REMEMBERED`` (an LRU): nothing grows
with the actors a long-running process has ever called.
"""

from __future__ import annotations

from .._protocol.ids import ActorId
from .owner_events import (
    ActorLocated,
    ActorNotLocated,
    CallId,
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

__all__ = ["FOLLOW_EVENTS", "MOVED_REMEMBERED", "FollowEvent", "FollowState"]

FollowEvent = (
    FollowedCallSubmitted
    | FollowedCallLost
    | ActorLocated
    | ActorNotLocated
    | CoroutineLost
    | CoroutineRestarted
    | CoroutineRestartFailed
)
FOLLOW_EVENTS = (
    FollowedCallSubmitted,
    FollowedCallLost,
    ActorLocated,
    ActorNotLocated,
    CoroutineLost,
    CoroutineRestarted,
    CoroutineRestartFailed,
)

# Actors owned elsewhere found at a new address: the most recent ones are remembered, so a
# handle still holding an old address sends to the new one. One that is forgotten costs a
# call lost at the old address and one more look-up, never a wrong answer.
MOVED_REMEMBERED = 4096


class FollowState:
    """Calls to actors owned elsewhere that wait for their actor to be found, where those
    actors were found, and the coroutine actors being restarted."""

    __slots__ = ("_coroutines", "_moved", "_waiting", "_where")

    def __init__(self) -> None:
        # Actors looked for -> the calls waiting for them, in the order they are to be sent:
        # (call id, sends left after one that may have run).
        self._waiting: dict[ActorId, list[tuple[CallId, int]]] = {}
        self._where: dict[CallId, ActorId] = {}  # waiting call -> its actor
        self._moved: dict[ActorId, str] = {}  # insertion-ordered: the oldest goes first
        self._coroutines: set[CallId] = set()  # being restarted

    def __repr__(self) -> str:
        return (
            f"<FollowState waiting={len(self._where)} looked_for={len(self._waiting)} "
            f"moved={len(self._moved)} restarting={len(self._coroutines)}>"
        )

    def __len__(self) -> int:
        """Calls held here: waiting for their actor, or coroutine actors restarting."""
        return len(self._where) + len(self._coroutines)

    @property
    def active(self) -> bool:
        """Any thread (two truth tests): False while no actor is looked for or was found
        elsewhere, so that calls go where their handle says without asking ``route``."""
        return bool(self._waiting) or bool(self._moved)

    def pending(self, call_id: CallId) -> bool:
        return call_id in self._where or call_id in self._coroutines

    def looking_for(self, actor_id: ActorId) -> bool:
        return actor_id in self._waiting

    def route(self, actor_id: ActorId, address: str) -> str | None:
        """Where a call to ``actor_id`` made through a handle that says ``address`` goes now;
        None: its actor is being looked for (``FollowedCallSubmitted`` queues it)."""
        if actor_id in self._waiting:
            return None
        return self._moved.get(actor_id, address)

    def handle(self, event: FollowEvent) -> list[Command]:
        if isinstance(event, FollowedCallSubmitted):
            return self._submitted(event)
        if isinstance(event, FollowedCallLost):
            return self._lost(event)
        if isinstance(event, ActorLocated):
            return self._located(event)
        if isinstance(event, ActorNotLocated):
            return self._not_located(event)
        if isinstance(event, CoroutineLost):
            return self._coroutine_lost(event)
        if isinstance(event, CoroutineRestarted):
            if event.call_id not in self._coroutines:
                return []  # cancelled while it restarted: never started again
            self._coroutines.discard(event.call_id)
            return [SendCoroutine(event.call_id, event.address)]
        if event.call_id not in self._coroutines:  # CoroutineRestartFailed
            return []
        self._coroutines.discard(event.call_id)
        return [Resolve(event.call_id, Why.ACTOR_DIED)]

    def cancel(self, call_id: CallId) -> list[Command]:
        """CancelRequested for a call held here: resolved CANCELLED, never sent."""
        if call_id in self._coroutines:
            self._coroutines.discard(call_id)
            return [Resolve(call_id, Why.CANCELLED)]
        actor_id = self._where.pop(call_id, None)
        if actor_id is None:
            return []
        queue = self._waiting[actor_id]
        queue[:] = [item for item in queue if item[0] != call_id]  # O(waiting for it)
        return [Resolve(call_id, Why.CANCELLED)]

    # --- following -----------------------------------------------------------------------

    def _submitted(self, event: FollowedCallSubmitted) -> list[Command]:
        if event.call_id in self._where:
            return []
        queue = self._waiting.get(event.actor_id)
        if queue is None:
            address = self._moved.get(event.actor_id, event.address)
            return [SendFollowed(event.call_id, address, event.max_retries)]
        queue.append((event.call_id, event.max_retries))
        self._where[event.call_id] = event.actor_id
        return []

    def _lost(self, event: FollowedCallLost) -> list[Command]:
        call_id, actor_id = event.call_id, event.actor_id
        if call_id in self._where:
            return []
        if not event.restartable:
            return [Resolve(call_id, Why.ACTOR_DIED)]
        commands: list[Command] = []
        queue = self._waiting.get(actor_id)
        moved = self._moved.get(actor_id)
        if queue is None and moved is not None and moved != event.address:
            pass  # found elsewhere already (this loss is from an older incarnation)
        elif queue is None:
            self._moved.pop(actor_id, None)  # gone from there too: look for it again
            queue = self._waiting[actor_id] = []
            commands.append(LocateActor(actor_id, event.address))
        retries = event.max_retries
        if event.written:
            if retries == 0:
                return [*commands, Resolve(call_id, Why.ACTOR_DIED)]
            retries -= 1 if retries > 0 else 0
        if queue is None:
            assert moved is not None
            return [SendFollowed(call_id, moved, retries)]
        queue.append((call_id, retries))
        self._where[call_id] = actor_id
        return commands

    def _located(self, event: ActorLocated) -> list[Command]:
        queue = self._waiting.pop(event.actor_id, None)
        if queue is None:
            return []
        self._moved.pop(event.actor_id, None)
        self._moved[event.actor_id] = event.address
        if len(self._moved) > MOVED_REMEMBERED:
            del self._moved[next(iter(self._moved))]
        commands: list[Command] = []
        for call_id, retries in queue:
            del self._where[call_id]
            commands.append(SendFollowed(call_id, event.address, retries))
        return commands

    def _not_located(self, event: ActorNotLocated) -> list[Command]:
        queue = self._waiting.pop(event.actor_id, None)
        if queue is None:
            return []
        commands: list[Command] = []
        for call_id, _ in queue:
            del self._where[call_id]
            commands.append(Resolve(call_id, Why.ACTOR_DIED))
        return commands

    # --- coroutine actors ----------------------------------------------------------------

    def _coroutine_lost(self, event: CoroutineLost) -> list[Command]:
        if event.call_id in self._coroutines:
            return []
        if event.max_restarts == 0:
            return [Resolve(event.call_id, Why.ACTOR_DIED)]
        self._coroutines.add(event.call_id)
        return [RestartCoroutine(event.call_id)]
