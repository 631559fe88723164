"""Messages of worker output and log files (``print`` in a task, ``actorgrid logs``).

Kept apart from ``messages.py`` (which puts them in the wire's closed union) so that module
stays one screenful per concern. Output travels in batches: a node agent sends one
WorkerOutput per interval with every line its workers wrote meanwhile, never one message per
line.
"""

import attrs

from .ids import NodeId, WorkerId


@attrs.frozen
class OutputLine:
    """One line a worker wrote to its stdout or stderr (or a ``logging`` record)."""

    worker_id: WorkerId
    pid: int
    source: str  # the task's function name or the actor's name/class; "" outside any call
    owner: str  # address of the process that sent the call ("" if unknown)
    stream: str  # "out" or "err"
    text: str
    time: float = 0.0


@attrs.frozen
class WorkerOutput:
    """Sent by a node agent to the head, and by the head to each driver that asked for output
    (``ag.init(log_to_driver=True)``, the default): lines written by workers, oldest first.
    ``dropped``: lines the sender had to drop because the receiver could not keep up."""

    node_id: NodeId
    hostname: str
    lines: tuple[OutputLine, ...]
    dropped: int = 0


@attrs.frozen
class SubscribeOutput:
    """Sent by a driver to the head (``log_to_driver=True``): send me the output of the calls
    I sent; with ``everything``, every worker's output (``actorgrid logs --follow``). No
    reply."""

    everything: bool = False


@attrs.frozen
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


@attrs.frozen
class LogLines:
    """Reply to ReadLogs: lines of the nodes' log files, each "(source pid=P node=H) text",
    oldest first; ``error`` says why some node could not be read."""

    rid: int
    lines: tuple[str, ...]
    error: str | None = None
