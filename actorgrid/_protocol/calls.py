"""Messages of calls, values and remote generators: a caller and the worker running its call,
talking directly (``f.remote()``, ``Cls.remote()``, ``handle.method.remote()``, ``ag.cancel``,
``ag.kill``), a borrower fetching a value from its owner, reference counting's receipts and
borrows. Part of the closed union in ``messages.py``, which re-exports them.
"""

from .ids import ActorId, ObjectId
from .records import ActorInfo, Payload
from .wireclass import message

# --- calls (caller to worker, direct) -----------------------------------------------------


@message
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


@message
class CreateActor:
    """Sent by ``Cls.remote()``: construct an actor instance on this worker."""

    task_id: ObjectId
    actor: ActorInfo
    class_id: bytes
    cls: bytes | None
    args: Payload
    max_concurrency: int


@message
class AdoptActor:
    """Sent by ``Cls.options(lifetime="detached").remote()`` to the head, before the creation:
    how to create the detached actor again (its class code always included), so that the head
    restarts it under ``max_restarts`` when its worker dies, whether or not its creator is
    still there. No reply. The head then sends the CreateActor to a worker itself, on that
    worker's link to the head, and receives its TaskResult."""

    create: CreateActor


@message
class CallActor:
    """Sent by ``handle.method.remote()``: queue a method call on an actor's mailbox."""

    task_id: ObjectId
    actor_id: ActorId
    method: str
    args: Payload
    root: str = ""  # as SubmitTask.root
    # No answer wanted: the caller dropped the call's ref (``x.remote()`` as a statement,
    # ``_runtime/quiet.py``). The worker answers nothing on success, reports an error.
    quiet: bool = False


@message
class TaskResult:
    """Reply to SubmitTask, CreateActor and CallActor: a value, or a boxed error."""

    task_id: ObjectId
    ok: bool
    value: Payload


@message
class CancelTask:
    """Sent by ``ag.cancel(ref)`` (and by a driver interrupted with Ctrl-C) to the worker
    running the task. ``force`` kills the worker process at once instead of interrupting.
    ``recursive``: the worker also cancels the tasks that task started (and so on down)."""

    task_id: ObjectId
    force: bool = False
    recursive: bool = True


@message
class CancelById:
    """Sent by ``Cluster.cancel_task`` (``actorgrid cancel``) to the worker running a task it
    does not own; answered with Ack, whose error says the task is not on that worker. The
    worker cancels it as CancelTask does and the owner gets TaskCancelledError."""

    rid: int
    task_id: ObjectId
    force: bool = False


@message
class KillActor:
    """Sent by ``ag.kill(handle)`` and ``Cluster.kill_actor`` (``actorgrid kill``) to the
    actor's worker; answered with Ack."""

    rid: int
    actor_id: ActorId


# --- objects ------------------------------------------------------------------------------


@message
class FetchObject:
    """Sent by a process holding a borrowed ObjectRef to the ref's owner: send the value.
    ``lost``: the value's copy of that name, in a node's object store, cannot be had (its
    node died): make it again if its lineage allows (``_runtime/stored.py``)."""

    rid: int
    object_id: ObjectId
    lost: str = ""


@message
class ObjectValue:
    """Owner's reply to FetchObject: the value (or the boxed error) once it is ready."""

    rid: int
    ok: bool
    value: Payload


# --- streams (remote generators) ----------------------------------------------------------


@message
class StreamItem:
    """Sent by the worker running a remote generator (``gen.remote()``, or an actor method that
    is a generator) to its caller, on the link the call came on: value ``index`` (0-based) of
    the stream ``task_id``. Items of one stream arrive in order, all before its TaskResult."""

    task_id: ObjectId
    index: int
    value: Payload


@message
class StreamAck:
    """Sent by the consumer of a remote generator (``ObjectRefGenerator``) to the worker
    producing it: ``consumed`` items are taken, so the producer may run up to its window
    ahead of that (backpressure)."""

    task_id: ObjectId
    consumed: int


@message
class RefReceipt:
    """One ObjectRef that arrived: its object, owner and the token its sender pickled it with;
    ``borrows``: the receiver starts borrowing the object with it."""

    object_id: ObjectId
    owner: str
    token: int
    borrows: bool


@message
class RefsReceived:
    """Sent by a process that unpickled ObjectRefs to the process that pickled them (batched
    per link): the sender may drop its holds on them (reference counting, refcounting.py)."""

    borrower: str
    receipts: tuple[RefReceipt, ...]


@message
class BorrowUpdate:
    """Sent by a borrower to an object's owner (batched per link): processes it passed refs
    on to that borrow them now (``added``: object and borrower), then the borrows of its own
    that ended (``released``)."""

    borrower: str
    added: tuple[tuple[ObjectId, str], ...]
    released: tuple[ObjectId, ...]
