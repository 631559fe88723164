"""Every message that crosses the wire: a closed union of frozen attrs classes.

Each docstring names the API or component that sends the message. ``rid`` fields correlate a
request with its reply on the same connection; ``rid == 0`` means no reply is wanted. User data
(arguments, results, mailbox messages) travels as :class:`Payload`: cloudpickle bytes plus
pickle protocol 5 out-of-band buffers, opaque to this layer.
"""

from typing import TypeAlias

import attrs

from .envmessages import (
    EnsureEnv,
    EnvsHeld,
    JobEnded,
    JobList,
    JobLogs,
    JobOutput,
    JobRejoin,
    JobStarted,
    PackageData,
    PackageFetch,
    PackageHave,
    PackagePut,
    PackageQuery,
    QueryJobLogs,
    QueryJobs,
    ReleaseEnv,
    StopJob,
    SubmitJob,
)
from .ids import ActorId, ObjectId, WorkerId
from .observe import (
    CallSpans,
    LogLines,
    ReadLogs,
    SubscribeOutput,
    TaskEvents,
    WorkerOutput,
)
from .operations import (
    EVENT_KINDS as EVENT_KINDS,
)
from .operations import (
    ActorSummary as ActorSummary,
)
from .operations import (
    ClusterView as ClusterView,
)
from .operations import (
    ControlNode as ControlNode,
)
from .operations import (
    ControlWorker as ControlWorker,
)
from .operations import (
    Event as Event,
)
from .operations import (
    EventBatch as EventBatch,
)
from .operations import (
    EventHistory as EventHistory,
)
from .operations import (
    NodeStatus as NodeStatus,
)
from .operations import (
    NodeView as NodeView,
)
from .operations import (
    QueryCluster as QueryCluster,
)
from .operations import (
    QueryWorker as QueryWorker,
)
from .operations import (
    RegisterNode as RegisterNode,
)
from .operations import (
    SubscribeEvents as SubscribeEvents,
)
from .operations import (
    TaskSummary as TaskSummary,
)
from .operations import (
    WorkerReport as WorkerReport,
)
from .operations import (
    WorkerView as WorkerView,
)
from .ownermessages import LocateActor as LocateActor
from .records import (
    ActorInfo as ActorInfo,
)
from .records import (
    Availability as Availability,
)
from .records import (
    NodeInfo as NodeInfo,
)
from .records import (
    Payload as Payload,
)
from .records import (
    WorkerInfo as WorkerInfo,
)
from .store import FreeObjects, ObjectChunk, PullObject

# --- connection set-up -------------------------------------------------------------------


@attrs.frozen
class Hello:
    """First frame on every connection after authentication, sent by both sides."""

    kind: str  # "driver", "worker", "head", "node"
    address: str  # where this process listens for peers ("" if it does not listen)
    pid: int
    # The largest frame this process accepts, when it says (the head does): drivers adopt
    # the head's, so they refuse oversized data before sending it (0: not said).
    max_message_bytes: int = 0


@attrs.frozen
class Pulse:
    """Sent on every link that has been quiet for one pulse interval, by every process:
    the silence of a peer for 5 intervals is how zombies are found."""


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
class WorkerState:
    """Pushed by the head to subscribers when a worker is suspended (no new work is placed
    there) or resumed, by ``Cluster.suspend``/``Cluster.resume``."""

    worker_id: WorkerId
    suspended: bool


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
    """Sent by a worker to the head when an actor ends: frees its name (if it has one) and
    forgets its owner. For a named actor the head sends it on to every process it told where
    that actor lives, to drop it from their name caches, and acks the worker once they have
    acked (``rid == 0``, as for an unnamed actor: no ack)."""

    rid: int
    actor_id: ActorId
    reason: str


@attrs.frozen
class OwnActor:
    """Sent by the process creating (or restarting) a non-detached actor (``Cls.remote()``,
    a remote coroutine's ``.remote()``) to the head, before the creation itself: the actor is
    this process's and is killed when this process leaves the cluster. No reply."""

    actor_id: ActorId
    address: str


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
    resources: tuple[tuple[str, float], ...] = ()  # held on the worker while it runs
    root: str = ""  # sent by a worker for a driver's work: that driver's address (output)


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
class AdoptActor:
    """Sent by ``Cls.options(lifetime="detached").remote()`` to the head, before the creation:
    how to create the detached actor again (its class code always included), so that the head
    restarts it under ``max_restarts`` when its worker dies, whether or not its creator is
    still there. No reply. The head then sends the CreateActor to a worker itself, on that
    worker's link to the head, and receives its TaskResult."""

    create: CreateActor


@attrs.frozen
class CallActor:
    """Sent by ``handle.method.remote()``: queue a method call on an actor's mailbox."""

    task_id: ObjectId
    actor_id: ActorId
    method: str
    args: Payload
    root: str = ""  # as SubmitTask.root


@attrs.frozen
class TaskResult:
    """Reply to SubmitTask, CreateActor and CallActor: a value, or a boxed error."""

    task_id: ObjectId
    ok: bool
    value: Payload


@attrs.frozen
class CancelTask:
    """Sent by ``ag.cancel(ref)`` (and by a driver interrupted with Ctrl-C) to the worker
    running the task. ``force`` kills the worker process at once instead of interrupting.
    ``recursive``: the worker also cancels the tasks that task started (and so on down)."""

    task_id: ObjectId
    force: bool = False
    recursive: bool = True


@attrs.frozen
class CancelById:
    """Sent by ``Cluster.cancel_task`` (``actorgrid cancel``) to the worker running a task it
    does not own; answered with Ack, whose error says the task is not on that worker. The
    worker cancels it as CancelTask does and the owner gets TaskCancelledError."""

    rid: int
    task_id: ObjectId
    force: bool = False


@attrs.frozen
class KillActor:
    """Sent by ``ag.kill(handle)`` and ``Cluster.kill_actor`` (``actorgrid kill``) to the
    actor's worker; answered with Ack."""

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


@attrs.frozen
class Credit:
    """Sent back by the receiver of Delivers: it took ``n`` more messages to ``actor_id`` in
    (into the mailbox, or refused), so the sender may send that many more (flow control)."""

    actor_id: ActorId
    n: int


# --- objects ------------------------------------------------------------------------------


@attrs.frozen
class FetchObject:
    """Sent by a process holding a borrowed ObjectRef to the ref's owner: send the value.
    ``lost``: the value's copy of that name, in a node's object store, cannot be had (its
    node died): make it again if its lineage allows (``_runtime/stored.py``)."""

    rid: int
    object_id: ObjectId
    lost: str = ""


@attrs.frozen
class ObjectValue:
    """Owner's reply to FetchObject: the value (or the boxed error) once it is ready."""

    rid: int
    ok: bool
    value: Payload


# --- a restarted head (``_node/rejoin.py``) ------------------------------------------------


@attrs.frozen
class RejoinNode:
    """Sent by a node agent that lost its head, to the head at the same address, under its old
    identity, with the workers it kept. Ack; an error: this head declared the node dead (its
    work failed over), so the agent fences its workers and joins as a new node."""

    rid: int
    node: NodeInfo
    workers: tuple[WorkerId, ...]


@attrs.frozen
class RejoinWorker:
    """Sent by a worker that lost its head, on its new link: itself, its actors (the head
    takes their names again) and how to create its detached actors again. Ack; an error: this
    head declared the worker dead, so the worker exits."""

    rid: int
    worker: WorkerInfo
    actors: tuple[ActorInfo, ...]
    detached: tuple[CreateActor, ...]


# --- streams (remote generators) ----------------------------------------------------------


@attrs.frozen
class StreamItem:
    """Sent by the worker running a remote generator (``gen.remote()``, or an actor method that
    is a generator) to its caller, on the link the call came on: value ``index`` (0-based) of
    the stream ``task_id``. Items of one stream arrive in order, all before its TaskResult."""

    task_id: ObjectId
    index: int
    value: Payload


@attrs.frozen
class StreamAck:
    """Sent by the consumer of a remote generator (``ObjectRefGenerator``) to the worker
    producing it: ``consumed`` items are taken, so the producer may run up to its window
    ahead of that (backpressure)."""

    task_id: ObjectId
    consumed: int


@attrs.frozen
class RefReceipt:
    """One ObjectRef that arrived: its object, owner and the token its sender pickled it with;
    ``borrows``: the receiver starts borrowing the object with it."""

    object_id: ObjectId
    owner: str
    token: int
    borrows: bool


@attrs.frozen
class RefsReceived:
    """Sent by a process that unpickled ObjectRefs to the process that pickled them (batched
    per link): the sender may drop its holds on them (reference counting, refcounting.py)."""

    borrower: str
    receipts: tuple[RefReceipt, ...]


@attrs.frozen
class BorrowUpdate:
    """Sent by a borrower to an object's owner (batched per link): processes it passed refs
    on to that borrow them now (``added``: object and borrower), then the borrows of its own
    that ended (``released``)."""

    borrower: str
    added: tuple[tuple[ObjectId, str], ...]
    released: tuple[ObjectId, ...]


# --- virtual agents and topics ----------------------------------------------------------------


@attrs.frozen
class DeliverToKey:
    """Sent by ``ctx.send``/``ag.send`` to ``kind.key(k)``: a message for the virtual agent
    ``key`` of a kind, to the worker that owns the key (rendezvous hashing); that worker
    activates the agent on its first message, or forwards to the owner in its own view
    (``hops`` counts the forwards). ``code`` is the pickled coroutine function, ``code_id``
    its hash. Sent by ``ctx.ask``/``ag.ask`` with a ``rid``, it is answered with AskReply
    (a forwarding worker relays the answer)."""

    kind: str
    key: str
    code_id: bytes
    code: bytes
    idle_timeout_s: float  # 0: never deactivated for idleness
    mailbox_size: int
    payload: Payload
    hops: int = 0
    rid: int = 0


@attrs.frozen
class Publish:
    """Sent by ``ctx.publish``/``ag.publish``: one message on ``topic``, once to each worker;
    the worker puts it in the mailbox of each of its agents subscribed to the topic."""

    topic: str
    payload: Payload


Message: TypeAlias = (
    Hello
    | Pulse
    | Ack
    | RegisterWorker
    | SubscribeMembership
    | Membership
    | WorkerJoined
    | WorkerLeft
    | WorkerState
    | Shutdown
    | RegisterNode
    | NodeStatus
    | Event
    | EventBatch
    | TaskEvents
    | CallSpans
    | SubscribeEvents
    | EventHistory
    | ControlWorker
    | ControlNode
    | QueryCluster
    | QueryWorker
    | WorkerReport
    | ClusterView
    | RegisterName
    | LookupName
    | NameReply
    | ActorEnded
    | OwnActor
    | AdoptActor
    | SubmitTask
    | CreateActor
    | CallActor
    | TaskResult
    | CancelTask
    | CancelById
    | KillActor
    | Deliver
    | AskReply
    | DeliveryFailed
    | FetchObject
    | ObjectValue
    | Credit
    | RejoinNode
    | RejoinWorker
    | StreamItem
    | StreamAck
    | PackageQuery
    | PackageHave
    | PackagePut
    | PackageFetch
    | PackageData
    | EnsureEnv
    | ReleaseEnv
    | EnvsHeld
    | SubmitJob
    | JobStarted
    | JobOutput
    | JobEnded
    | QueryJobs
    | JobList
    | QueryJobLogs
    | JobLogs
    | StopJob
    | JobRejoin
    | RefsReceived
    | BorrowUpdate
    | LocateActor
    | WorkerOutput
    | SubscribeOutput
    | ReadLogs
    | LogLines
    | DeliverToKey
    | Publish
    | PullObject
    | ObjectChunk
    | FreeObjects
)

MESSAGE_TYPES: tuple[type[Message], ...] = Message.__args__
