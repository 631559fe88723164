"""Every message that crosses the wire: a closed union of frozen attrs classes.

Each docstring names the API or component that sends the message. ``rid`` fields correlate a
request with its reply on the same connection; ``rid == 0`` means no reply is wanted. User data
(arguments, results, mailbox messages) travels as :class:`Payload`: cloudpickle bytes plus
pickle protocol 5 out-of-band buffers, opaque to this layer.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from .ids import ActorId, NodeId, ObjectId, WorkerId


@attrs.frozen
class Payload:
    """Serialized user data: pickle bytes and the out-of-band buffers they refer to."""

    data: bytes
    buffers: tuple[memoryview, ...] = ()

    @property
    def nbytes(self) -> int:
        return len(self.data) + sum(b.nbytes for b in self.buffers)


@attrs.frozen
class WorkerInfo:
    """Where a worker lives and what it offers; carried by membership messages."""

    worker_id: WorkerId
    node_id: NodeId
    address: str
    pid: int
    hostname: str
    num_cpus: float


@attrs.frozen
class ActorInfo:
    """Where an actor lives: enough to address it from any process."""

    actor_id: ActorId
    address: str
    kind: str  # "class" or "coroutine"
    label: str  # class or function name, for messages and reprs
    name: str | None = None
    namespace: str | None = None
    methods: tuple[str, ...] = ()


# --- connection set-up -------------------------------------------------------------------


@attrs.frozen
class Hello:
    """First frame on every connection after authentication, sent by both sides."""

    kind: str  # "driver", "worker", "head", "node"
    address: str  # where this process listens for peers ("" if it does not listen)
    pid: int


@attrs.frozen
class Ack:
    """Reply to any request that only needs success or an error message."""

    rid: int
    error: str | None = None


# --- membership (head) --------------------------------------------------------------------


@attrs.frozen
class RegisterWorker:
    """Sent by a worker process to the head once it listens, to join the cluster."""

    rid: int
    worker: WorkerInfo


@attrs.frozen
class SubscribeMembership:
    """Sent by every runtime to the head: the current workers, then joins and leaves."""

    rid: int


@attrs.frozen
class Membership:
    """Head's reply to SubscribeMembership: the workers alive now."""

    rid: int
    workers: tuple[WorkerInfo, ...]


@attrs.frozen
class WorkerJoined:
    """Pushed by the head to subscribers when a worker registers."""

    worker: WorkerInfo


@attrs.frozen
class WorkerLeft:
    """Pushed by the head to subscribers when a worker's connection ends."""

    worker_id: WorkerId
    reason: str


@attrs.frozen
class Shutdown:
    """Sent by the head (or node agent) to a worker: stop now."""

    reason: str


# --- names (head) -------------------------------------------------------------------------


@attrs.frozen
class RegisterName:
    """Sent by ``.options(name=...).remote()``: claim a name for a new actor, atomically."""

    rid: int
    actor: ActorInfo
    get_if_exists: bool


@attrs.frozen
class LookupName:
    """Sent by ``ag.get_actor``, ``ctx.send(name)``, ``ag.send(name)``: resolve a name."""

    rid: int
    name: str
    namespace: str | None


@attrs.frozen
class NameReply:
    """Head's reply to RegisterName and LookupName.

    ``actor`` is the actor now holding the name (absent if none); ``created`` says whether a
    RegisterName's own actor got it.
    """

    rid: int
    actor: ActorInfo | None
    created: bool
    error: str | None = None


@attrs.frozen
class ActorEnded:
    """Sent by a worker to the head when a named actor ends: frees its name. The head sends
    it on to every process it told where that actor lives, to drop it from their name caches,
    and acks the worker once they have acked."""

    rid: int
    actor_id: ActorId
    reason: str


# --- calls (caller to worker, direct) -----------------------------------------------------


@attrs.frozen
class SubmitTask:
    """Sent by ``f.remote()``: run a remote function. ``function`` is sent once per link.

    ``actor`` is set for a remote coroutine that takes a Context: it becomes an actor with a
    mailbox for as long as it runs.
    """

    task_id: ObjectId
    function_id: bytes
    function: bytes | None
    args: Payload
    num_cpus: float
    actor: ActorInfo | None = None


@attrs.frozen
class CreateActor:
    """Sent by ``Cls.remote()``: construct an actor instance on this worker."""

    task_id: ObjectId
    actor: ActorInfo
    class_id: bytes
    cls: bytes | None
    args: Payload
    max_concurrency: int


@attrs.frozen
class CallActor:
    """Sent by ``handle.method.remote()``: queue a method call on an actor's mailbox."""

    task_id: ObjectId
    actor_id: ActorId
    method: str
    args: Payload


@attrs.frozen
class TaskResult:
    """Reply to SubmitTask, CreateActor and CallActor: a value, or a boxed error."""

    task_id: ObjectId
    ok: bool
    value: Payload


@attrs.frozen
class CancelTask:
    """Sent by ``ag.cancel(ref)`` to the worker running the task."""

    task_id: ObjectId


@attrs.frozen
class KillActor:
    """Sent by ``ag.kill(handle)`` to the actor's worker; answered with Ack."""

    rid: int
    actor_id: ActorId


# --- mailboxes ----------------------------------------------------------------------------


@attrs.frozen
class Deliver:
    """Sent by ``ctx.send``/``ag.send`` (``rid == 0``) and ``ctx.ask``/``ag.ask``: a mailbox
    message. An ask is answered with AskReply."""

    rid: int
    actor_id: ActorId
    payload: Payload


@attrs.frozen
class AskReply:
    """Sent by ``ctx.reply``: the answer to an ask, or a boxed error."""

    rid: int
    ok: bool
    value: Payload


@attrs.frozen
class DeliveryFailed:
    """Sent back by a worker when a Deliver names an actor that is not alive there."""

    actor_id: ActorId
    reason: str


# --- objects ------------------------------------------------------------------------------


@attrs.frozen
class FetchObject:
    """Sent by a process holding a borrowed ObjectRef to the ref's owner: send the value."""

    rid: int
    object_id: ObjectId


@attrs.frozen
class ObjectValue:
    """Owner's reply to FetchObject: the value (or the boxed error) once it is ready."""

    rid: int
    ok: bool
    value: Payload


Message: TypeAlias = (
    Hello
    | Ack
    | RegisterWorker
    | SubscribeMembership
    | Membership
    | WorkerJoined
    | WorkerLeft
    | Shutdown
    | RegisterName
    | LookupName
    | NameReply
    | ActorEnded
    | SubmitTask
    | CreateActor
    | CallActor
    | TaskResult
    | CancelTask
    | KillActor
    | Deliver
    | AskReply
    | DeliveryFailed
    | FetchObject
    | ObjectValue
)

MESSAGE_TYPES: tuple[type[Message], ...] = Message.__args__
