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
    JobEnded,
    JobList,
    JobLogs,
    JobOutput,
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
from .ids import ActorId, NodeId, ObjectId, WorkerId
from .observe import LogLines, ReadLogs, SubscribeOutput, WorkerOutput


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
    # Its share of the node's resources ("GPU", "memory", custom ones), held by its calls.
    resources: tuple[tuple[str, float], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # its node's labels, for label selectors
    gpu_ids: tuple[str, ...] = ()  # the GPUs it owns: its CUDA_VISIBLE_DEVICES
    env: str = ""  # the key of its runtime environment ("": none); it serves only that env


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
    max_restarts: int = 0  # restarts left to this actor's incarnations (-1: forever)
    max_task_retries: int = 0  # times a call in flight when the actor died is sent again
    # ``lifetime="detached"``: it outlives its creator, until ag.kill or cluster stop.
    detached: bool = False
    mailbox_size: int = 0  # messages its mailbox holds before senders wait (0: the default)
    resources: tuple[tuple[str, float], ...] = ()  # what it holds on its worker while alive


@attrs.frozen
class Availability:
    """A node's resources at one pulse (psutil), as dispycos reports them."""

    cpu_percent: float
    memory_available: int  # bytes
    memory_percent: float
    disk_available: int  # bytes, on the node's working directory's filesystem
    disk_percent: float
    swap_percent: float
    num_cpus: int


@attrs.frozen
class NodeInfo:
    """A node agent: one per machine; carried by RegisterNode and cluster listings."""

    node_id: NodeId
    hostname: str
    pid: int
    num_workers: int
    # What it offers in all: "CPU", "memory", "GPU" and custom ones, e.g. (("GPU", 1.0),).
    resources: tuple[tuple[str, float], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # automatic (hostname, ...) and user labels


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


# --- nodes, events and operations (head) --------------------------------------------------


@attrs.frozen
class RegisterNode:
    """Sent by a node agent to the head once connected, to join the cluster."""

    rid: int
    node: NodeInfo


@attrs.frozen
class NodeStatus:
    """Sent by a node agent to the head every pulse interval: its resources right now."""

    availability: Availability


EVENT_KINDS = frozenset(
    {
        "node_joined",  # a node agent registered with the head
        "node_closed",  # a node agent disconnected or was closed
        "node_zombie",  # a node agent went silent for 5 pulse intervals
        "node_status",  # a node's pulse, with its availability
        "worker_started",  # a worker process started (its first incarnation in a slot)
        "worker_died",  # a worker process exited (exit_code; negative = signal)
        "worker_zombie",  # a worker went silent for 5 pulse intervals and was killed
        "worker_restarted",  # a fresh worker process replaced one that died
        "worker_gave_up",  # an explicit max_restarts was exceeded: the slot stays empty
        "worker_crash_loop",  # a worker exited before it was ready; detail: its last stderr
        "node_unhealthy",  # every worker slot of a node is in a crash loop; detail: why
        "node_healthy",  # a worker of an unhealthy node became ready again
        "worker_closed",  # a worker was closed on request and not replaced
        "actor_created",  # an actor's constructor returned (name: its name or class)
        "actor_restarted",  # an actor was re-created after its code raised or its worker died
        "actor_died",  # an actor with no restarts left is gone
        "task_submitted",  # a task was submitted (task_id, name: its function)
        "task_scheduled",  # a task was sent to a worker (worker_id: which)
        "task_started",  # a worker started running a task
        "task_finished",  # a task returned
        "task_failed",  # a task raised (error: what)
        "task_cancelled",  # a task was cancelled
        "task_retried",  # a task was re-submitted after a system failure or a listed error
        "message_undelivered",  # a fire-and-forget send() found its actor gone; detail: why
    }
)


@attrs.frozen
class Event:
    """Something happened in the cluster: ``Cluster.events()`` yields these.

    ``kind`` is one of EVENT_KINDS; the other fields are set where they apply. Sent by node
    agents (worker and node life), by owners (actor restarts, task retries) and by the head
    (node joined, closed, zombie), to the head, which forwards them to its subscribers.
    """

    kind: str
    time: float  # seconds since the epoch, where it happened
    node_id: NodeId | None = None
    worker_id: WorkerId | None = None
    pid: int | None = None
    exit_code: int | None = None  # negative: killed by that signal
    detail: str = ""
    availability: Availability | None = None
    hostname: str = ""
    task_id: ObjectId | None = None  # task_* events
    actor_id: ActorId | None = None  # actor_* events
    name: str = ""  # the task's function, or the actor's name or class
    error: str = ""  # task_failed: the error, as "Type: message"


@attrs.frozen
class EventBatch:
    """Events sent together, oldest first: task and actor events are batched per link and
    interval by the processes that see them (owners, workers), never one message per task.
    ``dropped``: events the sender left out because they came faster than it reports."""

    events: tuple[Event, ...]
    dropped: int = 0


@attrs.frozen
class SubscribeEvents:
    """Sent by ``Cluster.events()``: the recent events, then every new one."""

    rid: int


@attrs.frozen
class EventHistory:
    """Head's reply to SubscribeEvents: the events it still remembers, oldest first."""

    rid: int
    events: tuple[Event, ...]


@attrs.frozen
class ControlWorker:
    """Sent by ``Cluster.close_worker``/``restart_worker``/``suspend``/``resume`` to the head,
    which applies it or forwards it to the worker's node agent. Answered with Ack.

    ``action``: "close" (finish running work, then stop), "terminate" (stop now),
    "restart" (stop, then start a fresh worker in its slot), "suspend", "resume".
    ``restart`` with close/terminate starts a replacement in the slot.
    """

    rid: int
    worker_id: WorkerId
    action: str
    restart: bool = False


@attrs.frozen
class ControlNode:
    """Sent by ``Cluster.close_node``/``suspend``/``resume`` to the head; like ControlWorker
    for every worker of a node, and "close"/"terminate" also stop the node agent."""

    rid: int
    node_id: NodeId
    action: str


@attrs.frozen
class QueryCluster:
    """Sent by ``Cluster.nodes()`` and ``Cluster.status()``: the head's view of the cluster;
    with ``detail``, the head first asks every worker for a WorkerReport."""

    rid: int
    detail: bool = False


@attrs.frozen
class QueryWorker:
    """Sent by the head to a worker (for ``Cluster.status()``): answered with WorkerReport."""

    rid: int


@attrs.frozen
class ActorSummary:
    """One live actor, as its worker reports it."""

    actor_id: ActorId
    label: str
    kind: str
    name: str | None
    namespace: str | None
    worker_id: WorkerId | None = None
    mailbox_depth: int = 0  # messages waiting for the actor (its mailbox and overflow)


@attrs.frozen
class TaskSummary:
    """One call on a worker (a task, an actor call, or a running coroutine actor), as its
    worker reports it for ``Cluster.status()``."""

    task_id: ObjectId
    label: str  # function name, "Class.method", or the coroutine actor's function name
    kind: str  # "task", "actor call" or "coroutine actor"
    state: str  # "running" or "queued"
    worker_id: WorkerId | None = None


@attrs.frozen
class WorkerReport:
    """A worker's answer to QueryWorker: its actors and its calls."""

    rid: int
    actors: tuple[ActorSummary, ...]
    running: int  # calls being run now
    queued: int  # sync tasks waiting for a CPU
    tasks: tuple[TaskSummary, ...] = ()
    cpus_reserved: float = 0.0  # CPUs held by the sync tasks running now
    held: tuple[tuple[str, float], ...] = ()  # resources its tasks and actors hold now


@attrs.frozen
class NodeView:
    """One node in a ClusterView."""

    node: NodeInfo
    state: str  # "alive", "suspended", "unhealthy" (every worker slot in a crash loop)
    availability: Availability | None
    last_pulse_s: float  # seconds since the node's last pulse
    detail: str = ""  # why it is unhealthy: "all workers of node N are in a crash loop: ..."


@attrs.frozen
class WorkerView:
    """One worker in a ClusterView; ``running``/``queued`` are -1 unless asked in detail."""

    worker: WorkerInfo
    state: str  # "alive", "suspended"
    running: int = -1
    queued: int = -1
    cpus_reserved: float = 0.0
    held: tuple[tuple[str, float], ...] = ()


@attrs.frozen
class ClusterView:
    """Head's reply to QueryCluster."""

    rid: int
    nodes: tuple[NodeView, ...]
    workers: tuple[WorkerView, ...]
    actors: tuple[ActorSummary, ...] = ()
    tasks: tuple[TaskSummary, ...] = ()


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
    """Sent by a process holding a borrowed ObjectRef to the ref's owner: send the value."""

    rid: int
    object_id: ObjectId


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
    its hash."""

    kind: str
    key: str
    code_id: bytes
    code: bytes
    idle_timeout_s: float  # 0: never deactivated for idleness
    mailbox_size: int
    payload: Payload
    hops: int = 0


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
    | SubmitJob
    | JobStarted
    | JobOutput
    | JobEnded
    | QueryJobs
    | JobList
    | QueryJobLogs
    | JobLogs
    | StopJob
    | RefsReceived
    | BorrowUpdate
    | WorkerOutput
    | SubscribeOutput
    | ReadLogs
    | LogLines
    | DeliverToKey
    | Publish
)

MESSAGE_TYPES: tuple[type[Message], ...] = Message.__args__
