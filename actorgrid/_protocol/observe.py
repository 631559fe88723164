"""Messages of task events, worker output and log files (``print`` in a task, ``actorgrid
logs``, ``Cluster.events()``).

Kept apart from ``messages.py`` (which puts them in the wire's closed union) so that module
stays one screenful per concern. Output travels in batches: a node agent sends one
WorkerOutput per interval with every line its workers wrote meanwhile, never one message per
line. Task events travel in columns (TaskEvents): the codec sees a few byte strings per
batch, however many events it holds, and no side builds a record per event until someone
reads them (``expand_task_events``).
"""

import struct
import sys
from array import array
from collections.abc import Iterable

from .ids import ActorId, NodeId, ObjectId, WorkerId
from .operations import Event
from .wireclass import message

# A kind's index here is its code in TaskEvents.kinds; append only (the wire depends on it).
TASK_EVENT_KINDS = (
    "task_submitted",
    "task_scheduled",
    "task_started",
    "task_finished",
    "task_failed",
    "task_cancelled",
    "task_retried",
    "actor_created",
    "call_finished",
    "call_failed",
)
_KIND_CODES = {kind: code for code, kind in enumerate(TASK_EVENT_KINDS)}
ID_BYTES = 16  # ObjectId: 8 bytes of process prefix, 8 of counter
_NO_ID = bytes(ID_BYTES)
# In a note's text: "Type: message", then this, then the remote traceback (a task_failed's;
# the Event gets it as ``detail``).
TRACEBACK_MARK = "\x1e"
_TIME = struct.Struct("<d")
_SWAP = sys.byteorder != "little"  # the columns are little-endian on the wire


@message
class TaskEvents:
    """Sent by every process that owns or runs calls (drivers, workers) to the head once per
    flush interval, and forwarded by the head to each event subscriber (``Cluster.events()``,
    the dashboard): the task and actor-call events it saw, oldest first, in columns.

    Per event: ``kinds`` one byte (index in TASK_EVENT_KINDS), ``times`` a float64,
    ``task_ids`` ID_BYTES (zeros: none), ``names`` and ``workers`` a uint16 index into
    ``strings`` and ``worker_ids`` (0: none; both tables start with that empty entry).
    ``notes``: (event index, error text, actor id) for the few events that carry either.
    ``sent_bytes``/``received_bytes``: what the sender's links carried since it started.
    ``dropped``: events left out because they came faster than the sender reports.
    """

    node_id: NodeId | None
    hostname: str
    pid: int | None  # set by a worker
    kinds: bytes
    times: bytes
    task_ids: bytes
    names: bytes
    workers: bytes
    strings: tuple[str, ...]
    worker_ids: tuple[bytes, ...]
    notes: tuple[tuple[int, str, bytes], ...] = ()
    sent_bytes: int = 0
    received_bytes: int = 0
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.kinds)


# (kind, time, task id, name, worker id, error text, actor id), as TaskEvents packs them.
TaskEventRecord = tuple[str, float, ObjectId | None, str, WorkerId | None, str, ActorId | None]


def pack_task_events(
    records: Iterable[TaskEventRecord],
    *,
    node_id: NodeId | None,
    hostname: str,
    pid: int | None,
    sent_bytes: int = 0,
    received_bytes: int = 0,
    dropped: int = 0,
) -> TaskEvents:
    """One TaskEvents of ``records``: a few appends per event, no record built."""
    kinds = bytearray()
    times = array("d")
    ids = bytearray()
    names = array("H")
    workers = array("H")
    strings: dict[str, int] = {"": 0}
    worker_ids: dict[bytes, int] = {b"": 0}
    notes: list[tuple[int, str, bytes]] = []
    for i, (kind, when, task_id, name, worker_id, text, actor_id) in enumerate(records):
        kinds.append(_KIND_CODES[kind])
        times.append(when)
        ids += task_id if task_id is not None and len(task_id) == ID_BYTES else _NO_ID
        code = strings.get(name)
        if code is None:
            code = strings[name] = len(strings)
        names.append(code)
        wid = worker_id or b""
        code = worker_ids.get(wid)
        if code is None:
            code = worker_ids[wid] = len(worker_ids)
        workers.append(code)
        if text or actor_id:
            notes.append((i, text, actor_id or b""))
    if _SWAP:
        times.byteswap()
        names.byteswap()
        workers.byteswap()
    return TaskEvents(
        node_id,
        hostname,
        pid,
        bytes(kinds),
        times.tobytes(),
        bytes(ids),
        names.tobytes(),
        workers.tobytes(),
        tuple(strings),
        tuple(worker_ids),
        tuple(notes),
        sent_bytes,
        received_bytes,
        dropped,
    )


def expand_task_events(batch: TaskEvents) -> list[Event]:
    """The events of ``batch`` as Event records (for those who read them). Raises
    ValueError for a batch whose columns do not agree (a sender's bug)."""
    n = len(batch.kinds)
    if (
        len(batch.times) != 8 * n
        or len(batch.task_ids) != ID_BYTES * n
        or len(batch.names) != 2 * n
        or len(batch.workers) != 2 * n
    ):
        raise ValueError(f"TaskEvents columns of different lengths for {n} events")
    names = array("H", batch.names)
    workers = array("H", batch.workers)
    if _SWAP:
        names.byteswap()
        workers.byteswap()
    notes = {i: (text, actor) for i, text, actor in batch.notes}
    events = []
    ids = batch.task_ids
    for i, code in enumerate(batch.kinds):
        if code >= len(TASK_EVENT_KINDS):
            raise ValueError(f"unknown task event kind code {code}")
        task_id = ids[i * ID_BYTES : (i + 1) * ID_BYTES]
        text, actor = notes.get(i, ("", b""))
        text, _, trace = text.partition(TRACEBACK_MARK)
        kind = TASK_EVENT_KINDS[code]
        events.append(
            Event(
                kind,
                _TIME.unpack_from(batch.times, 8 * i)[0],
                node_id=batch.node_id,
                worker_id=WorkerId(batch.worker_ids[workers[i]]) if workers[i] else None,
                pid=batch.pid,
                hostname=batch.hostname,
                task_id=ObjectId(task_id) if task_id != _NO_ID else None,
                actor_id=ActorId(actor) if actor else None,
                name=batch.strings[names[i]],
                detail=f"task {task_id.hex()[:8]}: {text}" if kind == "task_retried" else trace,
                error=text,
            )
        )
    return events


@message
class OutputLine:
    """One line a worker wrote to its stdout or stderr (or a ``logging`` record)."""

    worker_id: WorkerId
    pid: int
    source: str  # the task's function name or the actor's name/class; "" outside any call
    owner: str  # address of the driver whose work the call is part of ("" if unknown)
    stream: str  # "out" or "err"
    text: str
    time: float = 0.0


@message
class CallSpans:
    """Sent by a worker to the head once per flush interval, and by the head on to the driver
    at ``root``: the calls the worker sent on behalf of that driver's work (nested tasks,
    actor calls), for the driver's ``ag.timeline()``. Each span: (name, id of the worker it
    ran on or b"", argument bytes, sent, answered, ok); times in seconds since the epoch."""

    root: str
    spans: tuple[tuple[str, bytes, int, float, float, bool], ...]


@message
class WorkerOutput:
    """Sent by a node agent to the head, and by the head to each driver that asked for output
    (``ag.init(log_to_driver=True)``, the default): lines written by workers, oldest first.
    ``dropped``: lines the sender had to drop because the receiver could not keep up."""

    node_id: NodeId
    hostname: str
    lines: tuple[OutputLine, ...]
    dropped: int = 0


@message
class SubscribeOutput:
    """Sent by a driver to the head (``log_to_driver=True``): send me the output of the calls
    I sent; with ``everything``, every worker's output (``actorgrid logs --follow``). No
    reply."""

    everything: bool = False


@message
class ReadLogs:
    """Sent by ``Cluster.read_logs`` (``actorgrid logs``) to the head, which asks every node
    agent that matches ``node`` (a hex prefix, "" for all) with the same message; answered
    with LogLines. ``worker``: a worker id hex prefix; ``actor``: lines of calls of that
    actor (name or class); ``tail``: the last that many lines (0: all kept)."""

    rid: int
    node: str = ""
    worker: str = ""
    actor: str = ""
    tail: int = 0


@message
class LogLines:
    """Reply to ReadLogs: lines of the nodes' log files, each "(source pid=P node=H) text",
    oldest first; ``error`` says why some node could not be read."""

    rid: int
    lines: tuple[str, ...]
    error: str | None = None
