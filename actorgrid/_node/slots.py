"""A worker slot of the node agent: one worker position, whose process changes across
restarts."""

from __future__ import annotations

from collections import deque

import trio

from .._protocol.ids import WorkerId, new_worker_id, short
from .._scheduler.restart import RestartPolicy, RestartTracker
from .envnode import EnvLaunch
from .spawn import STDERR_TAIL_LINES, WorkerProcess

# Lines of a worker's error output shown in a crash-loop report.
CRASH_LOOP_TAIL_LINES = 8


class Slot:
    """One worker position on this node; its process changes across restarts."""

    def __init__(self, index: int, policy: RestartPolicy, share: int | None = None) -> None:
        self.index = index
        # Which of the node's worker shares (GPUs, custom resources) it owns: its own index,
        # or for a runtime_env's worker the base slot it stands beside (env workers are a
        # second set of the node's workers, each with the share of its counterpart).
        self.share = index if share is None else share
        self.tracker = RestartTracker(policy)
        self.worker_id: WorkerId = new_worker_id()
        self.proc: WorkerProcess | None = None
        self.intent: str | None = None  # "close", "terminate", "restart" once requested
        self.replace = False  # start a replacement after a requested close
        self.zombie = False
        self.exited = trio.Event()
        self.over = False  # the slot will not be refilled
        self.ready = False  # the current incarnation has registered with the head
        self.last_exit = ""  # how the last incarnation ended, for reports
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)  # of this incarnation
        self.incarnations = 0
        self.env: EnvLaunch | None = None  # the runtime_env of its workers (None: the base)
        self.released = False  # its runtime_env was released: not refilled

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"<slot {self.index} worker {short(self.worker_id)} pid={pid}>"


def tail_of(slot: Slot) -> str:
    lines = list(slot.stderr_tail)[-CRASH_LOOP_TAIL_LINES:]
    return "\n".join(lines) if lines else "(it wrote no error output)"
