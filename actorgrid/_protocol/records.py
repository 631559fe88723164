"""Records carried inside messages: serialized user data, and what a worker, an actor and a node
are. Re-exported by ``messages``."""

from .ids import ActorId, NodeId, WorkerId
from .wireclass import message


@message
class Payload:
    """Serialized user data: pickle bytes and the out-of-band buffers they refer to."""

    data: bytes
    buffers: tuple[memoryview, ...] = ()

    @property
    def nbytes(self) -> int:
        if not self.buffers:  # most messages: no generator on the hot path
            return len(self.data)
        return len(self.data) + sum(b.nbytes for b in self.buffers)


@message
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


@message
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


@message
class Availability:
    """A node's resources at one pulse (psutil), as dispycos reports them."""

    cpu_percent: float
    memory_available: int  # bytes
    memory_percent: float
    disk_available: int  # bytes, on the node's working directory's filesystem
    disk_percent: float
    swap_percent: float
    num_cpus: int
    # The node's object store (``_scheduler/store.py``): bytes of shared memory it may use,
    # uses now, and has spilled to disk; the files of its free pool of recycled segments and
    # the bytes they keep.
    store_capacity: int = 0
    store_used: int = 0
    store_spilled: int = 0
    store_pooled: int = 0
    store_pooled_bytes: int = 0


@message
class NodeInfo:
    """A node agent: one per machine; carried by RegisterNode and cluster listings."""

    node_id: NodeId
    hostname: str
    pid: int
    num_workers: int
    # What it offers in all: "CPU", "memory", "GPU" and custom ones, e.g. (("GPU", 1.0),).
    resources: tuple[tuple[str, float], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # automatic (hostname, ...) and user labels
