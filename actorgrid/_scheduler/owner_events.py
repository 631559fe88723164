"""What the owner state machine (``owner.py``) hears and says: its events, its commands, and
how a call was resolved (``Why``). Plain frozen records, no behaviour."""

from __future__ import annotations

import enum

from .._protocol.ids import ActorId, ObjectId
from .._protocol.wireclass import message
from . import refcount

__all__ = [
    "ActorAdded",
    "ActorDead",
    "ActorEnded",
    "ActorKilled",
    "ActorLocated",
    "ActorNotLocated",
    "ActorRestartFailed",
    "ActorRestarted",
    "CallId",
    "CallSent",
    "CallSubmitted",
    "CancelRequested",
    "Command",
    "CoroutineLost",
    "CoroutineRestartFailed",
    "CoroutineRestarted",
    "Event",
    "FollowedCallLost",
    "FollowedCallSubmitted",
    "LinkDropped",
    "LocateActor",
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

CallId = ObjectId


class Why(enum.Enum):
    """How a call was resolved."""

    VALUE = "value"  # its answer was a value
    ERROR = "error"  # its answer was an error, not retried
    CANCELLED = "cancelled"
    WORKER_DIED = "worker_died"  # a task whose worker died with no retries left
    ACTOR_DIED = "actor_died"  # an actor call whose actor died and was not (or could not be)
    # restarted, or which had no retries left
    LINK_DROPPED = "link_dropped"  # in flight on a link that dropped while its worker lived,
    # and not placed again (an actor call, or a task with no retries left): it may have run


# --- events ----------------------------------------------------------------------------------


@message
class TaskSubmitted:
    """A task was submitted here; ``max_retries``: times it may be placed again after its
    worker died or it raised a retryable error (-1: no limit)."""

    call_id: CallId
    max_retries: int = 0


@message
class TaskPlaced:
    """The shell sent the task to the worker at ``address``."""

    call_id: CallId
    address: str


@message
class ActorAdded:
    """This process created an actor, placed at ``address``; it may be restarted
    ``max_restarts`` times (-1: no limit)."""

    actor_id: ActorId
    address: str
    max_restarts: int = 0


@message
class CallSubmitted:
    """A method call to an actor this process created; ``max_retries``: times it may be
    re-sent to a restarted incarnation after its actor died under it (-1: no limit)."""

    call_id: CallId
    actor_id: ActorId
    max_retries: int = 0


@message
class CallSent:
    """The shell sent a call to an actor this process created straight to ``address`` (from
    another thread, on the hot path), and tells the owner after the fact, but before any
    other event about that call (a call it never hears of again is one it never knew)."""

    call_id: CallId
    actor_id: ActorId
    address: str
    max_retries: int = 0


@message
class ActorKilled:
    """``ag.kill`` ended the actor: it is never restarted; calls made to it later fail."""

    actor_id: ActorId


@message
class ActorEnded:
    """The actor ended by itself (its creation failed, or its worker reported it over): it is
    never restarted; like ``ActorKilled``, calls made to it later fail at once."""

    actor_id: ActorId


@message
class ResultArrived:
    """The answer of a call in flight. ``retryable``: an error the task's ``retry_on``
    matches (never for a cancelled call or an actor call)."""

    call_id: CallId
    ok: bool
    retryable: bool = False


@message
class WorkerGone:
    """The process at ``address`` is gone (its link died, or the head declared it dead).
    ``written``: False when nothing was ever written to it (its dial failed), so the tasks
    in flight there never ran. ``retry``: False when this process is stopping: its calls
    there are abandoned, none is placed again."""

    address: str
    written: bool = True
    retry: bool = True


@message
class LinkDropped:
    """The link to the process at ``address`` dropped, and that process answered a redial:
    it is alive, and so are its actors. The calls ``call_ids`` were in flight on the dropped
    link (those sent since, on the new link, are not among them) and may or may not have run:
    a task with retries left is placed again (spending one), anything else is resolved
    LINK_DROPPED."""

    address: str
    call_ids: tuple[CallId, ...]


@message
class CancelRequested:
    call_id: CallId
    force: bool = False


@message
class ActorRestarted:
    actor_id: ActorId
    address: str


@message
class ActorRestartFailed:
    actor_id: ActorId


# --- actors this process calls but does not own, and its coroutine actors (owner_follow.py)


@message
class FollowedCallSubmitted:
    """A call to an actor owned by another process, made here, last known at ``address``
    (the handle's): sent at once unless its actor is being looked for (then it waits)."""

    call_id: CallId
    actor_id: ActorId
    address: str
    max_retries: int = 0


@message
class FollowedCallLost:
    """A call to an actor owned by another process, sent to ``address``, was lost there with
    its worker (``written``: it may have run). ``restartable``: the actor has max_restarts,
    so its owner may place it again; ``max_retries``: sends left after one that may have run."""

    call_id: CallId
    actor_id: ActorId
    address: str
    written: bool = True
    max_retries: int = 0
    restartable: bool = True


@message
class ActorLocated:
    """The head says where the actor looked for (``LocateActor``) lives now."""

    actor_id: ActorId
    address: str


@message
class ActorNotLocated:
    """The actor looked for was not found alive elsewhere in time: it is dead."""

    actor_id: ActorId


@message
class CoroutineLost:
    """The worker running a remote coroutine actor started here died under it;
    ``max_restarts``: restarts it has left (-1: no limit)."""

    call_id: CallId
    actor_id: ActorId
    max_restarts: int = 0


@message
class CoroutineRestarted:
    """The coroutine actor was placed again at ``address`` (answer to ``RestartCoroutine``)."""

    call_id: CallId
    address: str


@message
class CoroutineRestartFailed:
    call_id: CallId


Event = (
    TaskSubmitted
    | TaskPlaced
    | ActorAdded
    | CallSubmitted
    | CallSent
    | ActorKilled
    | ResultArrived
    | WorkerGone
    | LinkDropped
    | CancelRequested
    | ActorRestarted
    | ActorRestartFailed
    | ActorEnded
    | FollowedCallSubmitted
    | FollowedCallLost
    | ActorLocated
    | ActorNotLocated
    | CoroutineLost
    | CoroutineRestarted
    | CoroutineRestartFailed
    | refcount.Event
)


# --- commands --------------------------------------------------------------------------------


@message
class PlaceTask:
    """Choose a worker for the task and send it there (answer ``TaskPlaced``); ``retry``:
    it is sent again after a failure."""

    call_id: CallId
    retry: bool = False


@message
class SendCall:
    """Send the actor call to ``address`` (again, after a restart, when ``retry``)."""

    call_id: CallId
    address: str
    retry: bool = False


@message
class SendCancel:
    call_id: CallId
    address: str
    force: bool


@message
class RestartActor:
    """Place the actor again, same id (answer ``ActorRestarted`` or ``ActorRestartFailed``)."""

    actor_id: ActorId


@message
class ActorDead:
    """The actor's worker died and it may not be restarted (no restarts left, or this
    process is stopping): it is dead for good."""

    actor_id: ActorId


@message
class Resolve:
    """Resolve the call's ref: with its answer (VALUE, ERROR) or with the error ``why``
    names."""

    call_id: CallId
    why: Why


@message
class LocateActor:
    """Ask the head where the actor (last seen at ``address``) lives now, until it is found
    elsewhere (``ActorLocated``) or given up on (``ActorNotLocated``)."""

    actor_id: ActorId
    address: str


@message
class SendFollowed:
    """Send the call to the actor owned elsewhere at ``address``; the state forgets it (its
    answer resolves it in the shell; a loss there comes back as ``FollowedCallLost`` with
    ``max_retries`` sends left)."""

    call_id: CallId
    address: str
    max_retries: int


@message
class RestartCoroutine:
    """Place the coroutine actor again, same id (answer ``CoroutineRestarted`` or
    ``CoroutineRestartFailed``)."""

    call_id: CallId


@message
class SendCoroutine:
    """Start the restarted coroutine actor at ``address``; the state forgets it (a loss there
    comes back as ``CoroutineLost``)."""

    call_id: CallId
    address: str


Command = (
    PlaceTask
    | SendCall
    | SendCancel
    | RestartActor
    | ActorDead
    | Resolve
    | LocateActor
    | SendFollowed
    | RestartCoroutine
    | SendCoroutine
    | refcount.Command
)
