"""Messages about nodes, events and operations (the head): events, control, cluster views.
Part of the closed union in ``messages``, which re-exports them."""

from .ids import ActorId, NodeId, ObjectId, WorkerId
from .records import Availability, NodeInfo, WorkerInfo
from .wireclass import message

# --- nodes, events and operations (head) --------------------------------------------------


@message
class RegisterNode:
    """Sent by a node agent to the head once connected, to join the cluster."""

    rid: int
    node: NodeInfo


@message
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
        "call_finished",  # an actor method call returned (name: "Class.method", at its caller)
        "call_failed",  # an actor method call raised (error: what)
        "message_undelivered",  # a fire-and-forget send() found its actor gone; detail: why
        "sends_lost",  # fire-and-forget calls or messages lost with their worker; detail: how many
    }
)


@message
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
    count: int | None = None  # sends_lost: how many calls or messages


@message
class EventBatch:
    """Events sent together, oldest first: task and actor events are batched per link and
    interval by the processes that see them (owners, workers), never one message per task.
    ``dropped``: events the sender left out because they came faster than it reports."""

    events: tuple[Event, ...]
    dropped: int = 0


@message
class SubscribeEvents:
    """Sent by ``Cluster.events()``: the recent events, then every new one."""

    rid: int


@message
class EventHistory:
    """Head's reply to SubscribeEvents: the events it still remembers, oldest first."""

    rid: int
    events: tuple[Event, ...]


@message
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


@message
class ControlNode:
    """Sent by ``Cluster.close_node``/``suspend``/``resume`` to the head; like ControlWorker
    for every worker of a node, and "close"/"terminate" also stop the node agent."""

    rid: int
    node_id: NodeId
    action: str


@message
class QueryCluster:
    """Sent by ``Cluster.nodes()`` and ``Cluster.status()``: the head's view of the cluster;
    with ``detail``, the head first asks every worker for a WorkerReport."""

    rid: int
    detail: bool = False


@message
class QueryWorker:
    """Sent by the head to a worker (for ``Cluster.status()``): answered with WorkerReport."""

    rid: int


@message
class ActorSummary:
    """One live actor, as its worker reports it."""

    actor_id: ActorId
    label: str
    kind: str
    name: str | None
    namespace: str | None
    worker_id: WorkerId | None = None
    mailbox_depth: int = 0  # messages waiting for the actor (its mailbox and overflow)


@message
class TaskSummary:
    """One call on a worker (a task, an actor call, or a running coroutine actor), as its
    worker reports it for ``Cluster.status()``."""

    task_id: ObjectId
    label: str  # function name, "Class.method", or the coroutine actor's function name
    kind: str  # "task", "actor call" or "coroutine actor"
    state: str  # "running" or "queued"
    worker_id: WorkerId | None = None


@message
class WorkerReport:
    """A worker's answer to QueryWorker: its actors and its calls."""

    rid: int
    actors: tuple[ActorSummary, ...]
    running: int  # calls being run now
    queued: int  # sync tasks waiting for a CPU
    tasks: tuple[TaskSummary, ...] = ()
    cpus_reserved: float = 0.0  # CPUs held by the sync tasks running now
    held: tuple[tuple[str, float], ...] = ()  # resources its tasks and actors hold now


@message
class NodeView:
    """One node in a ClusterView."""

    node: NodeInfo
    state: str  # "alive", "suspended", "unhealthy" (every worker slot in a crash loop)
    availability: Availability | None
    last_pulse_s: float  # seconds since the node's last pulse
    detail: str = ""  # why it is unhealthy: "all workers of node N are in a crash loop: ..."


@message
class WorkerView:
    """One worker in a ClusterView; ``running``/``queued`` are -1 unless asked in detail."""

    worker: WorkerInfo
    state: str  # "alive", "suspended"
    running: int = -1
    queued: int = -1
    cpus_reserved: float = 0.0
    held: tuple[tuple[str, float], ...] = ()


@message
class ClusterView:
    """Head's reply to QueryCluster."""

    rid: int
    nodes: tuple[NodeView, ...]
    workers: tuple[WorkerView, ...]
    actors: tuple[ActorSummary, ...] = ()
    tasks: tuple[TaskSummary, ...] = ()
