"""Every message that crosses the wire: a closed union of frozen attrs classes.

Each docstring names the API or component that sends the message. ``rid`` fields correlate a
request with its reply on the same connection; ``rid == 0`` means no reply is wanted. User data
(arguments, results, mailbox messages) travels as :class:`Payload`: cloudpickle bytes plus
pickle protocol 5 out-of-band buffers, opaque to this layer.
"""

from typing import TypeAlias

from .agentstop import TasksCancelled as TasksCancelled
from .batches import ActorCalls as ActorCalls
from .batches import SubmitTasks as SubmitTasks
from .batches import TaskResults as TaskResults
from .calls import AdoptActor as AdoptActor
from .calls import BorrowUpdate as BorrowUpdate
from .calls import CallActor as CallActor
from .calls import CancelById as CancelById
from .calls import CancelTask as CancelTask
from .calls import CreateActor as CreateActor
from .calls import FetchObject as FetchObject
from .calls import KillActor as KillActor
from .calls import ObjectValue as ObjectValue
from .calls import RefReceipt as RefReceipt
from .calls import RefsReceived as RefsReceived
from .calls import StreamAck as StreamAck
from .calls import StreamItem as StreamItem
from .calls import SubmitTask as SubmitTask
from .calls import TaskResult as TaskResult
from .creations import CreateAgents as CreateAgents
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
from .ids import ActorId, WorkerId
from .mailboxes import AskReply as AskReply
from .mailboxes import Credit as Credit
from .mailboxes import Deliver as Deliver
from .mailboxes import DeliverToKey as DeliverToKey
from .mailboxes import DeliveryFailed as DeliveryFailed
from .mailboxes import FinishedSends as FinishedSends
from .mailboxes import Publish as Publish
from .namebatch import ClaimNames as ClaimNames
from .namebatch import LookupNames as LookupNames
from .namebatch import NamesClaimed as NamesClaimed
from .namebatch import NamesEnded as NamesEnded
from .namebatch import NamesFound as NamesFound
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
from .wireclass import message

# --- connection set-up -------------------------------------------------------------------


@message
class Hello:
    """First frame on every connection after authentication, sent by both sides."""

    kind: str  # "driver", "worker", "head", "node"
    address: str  # where this process listens for peers ("" if it does not listen)
    pid: int
    # The largest frame this process accepts, when it says (the head does): drivers adopt
    # the head's, so they refuse oversized data before sending it (0: not said).
    max_message_bytes: int = 0


@message
class Pulse:
    """Sent on every link that has been quiet for one pulse interval, by every process:
    the silence of a peer for 5 intervals is how zombies are found."""


@message
class Ack:
    """Reply to any request that only needs success or an error message."""

    rid: int
    error: str | None = None


# --- membership (head) --------------------------------------------------------------------


@message
class RegisterWorker:
    """Sent by a worker process to the head once it listens, to join the cluster."""

    rid: int
    worker: WorkerInfo


@message
class SubscribeMembership:
    """Sent by every runtime to the head: the current workers, then joins and leaves."""

    rid: int


@message
class Membership:
    """Head's reply to SubscribeMembership: the workers alive now."""

    rid: int
    workers: tuple[WorkerInfo, ...]


@message
class WorkerJoined:
    """Pushed by the head to subscribers when a worker registers."""

    worker: WorkerInfo


@message
class WorkerLeft:
    """Pushed by the head to subscribers when a worker's connection ends."""

    worker_id: WorkerId
    reason: str


@message
class WorkerState:
    """Pushed by the head to subscribers when a worker is suspended (no new work is placed
    there) or resumed, by ``Cluster.suspend``/``Cluster.resume``."""

    worker_id: WorkerId
    suspended: bool


@message
class Shutdown:
    """Sent by the head (or node agent) to a worker: stop now."""

    reason: str


# --- names (head) -------------------------------------------------------------------------


@message
class RegisterName:
    """Sent by ``.options(name=...).remote()``: claim a name for a new actor, atomically."""

    rid: int
    actor: ActorInfo
    get_if_exists: bool


@message
class LookupName:
    """Sent by ``ag.get_actor``, ``ctx.send(name)``, ``ag.send(name)``: resolve a name."""

    rid: int
    name: str
    namespace: str | None


@message
class NameReply:
    """Head's reply to RegisterName and LookupName.

    ``actor`` is the actor now holding the name (absent if none); ``created`` says whether a
    RegisterName's own actor got it.
    """

    rid: int
    actor: ActorInfo | None
    created: bool
    error: str | None = None


@message
class ActorEnded:
    """Sent by a worker to the head when an actor ends: frees its name (if it has one) and
    forgets its owner. For a named actor the head sends it on to every process it told where
    that actor lives, to drop it from their name caches, and acks the worker once they have
    acked (``rid == 0``, as for an unnamed actor: no ack)."""

    rid: int
    actor_id: ActorId
    reason: str


@message
class OwnActor:
    """Sent by the process creating (or restarting) a non-detached actor (``Cls.remote()``,
    a remote coroutine's ``.remote()``) to the head, before the creation itself: the actor is
    this process's and is killed when this process leaves the cluster. No reply."""

    actor_id: ActorId
    address: str


# --- a restarted head (``_node/rejoin.py``) ------------------------------------------------


@message
class RejoinNode:
    """Sent by a node agent that lost its head, to the head at the same address, under its old
    identity, with the workers it kept. Ack; an error: this head declared the node dead (its
    work failed over), so the agent fences its workers and joins as a new node."""

    rid: int
    node: NodeInfo
    workers: tuple[WorkerId, ...]


@message
class RejoinWorker:
    """Sent by a worker that lost its head, on its new link: itself, its actors (the head
    takes their names again) and how to create its detached actors again. Ack; an error: this
    head declared the worker dead, so the worker exits."""

    rid: int
    worker: WorkerInfo
    actors: tuple[ActorInfo, ...]
    detached: tuple[CreateActor, ...]


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
    | TaskResults
    | ActorCalls
    | SubmitTasks
    | CancelTask
    | CancelById
    | KillActor
    | Deliver
    | AskReply
    | DeliveryFailed
    | FinishedSends
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
    | ClaimNames
    | NamesClaimed
    | LookupNames
    | NamesFound
    | NamesEnded
    | TasksCancelled
    | CreateAgents
)

MESSAGE_TYPES: tuple[type[Message], ...] = Message.__args__
