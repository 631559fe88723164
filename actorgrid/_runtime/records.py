"""What the runtime keeps about the calls and actors it owns: plain records, no behaviour."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._protocol.ids import ObjectId, short
from .._protocol.messages import ActorInfo, Payload
from .._scheduler.demand import Demand
from .refs import ObjectEntry

if TYPE_CHECKING:
    from .handles import ActorHandle

TASK, CALL, CREATE = 0, 1, 2


class TaskSpec:
    """What it takes to send a task again: its code, arguments and the retries left.

    Kept while the task is in flight, so a task whose worker dies is re-sent elsewhere
    (``max_retries``), and a remote coroutine actor whose worker dies is started again
    (``max_restarts``), keeping its ref.
    """

    __slots__ = (
        "actor",
        "blob",
        "function_id",
        "keep",
        "need",
        "parent",
        "payload",
        "retries",
        "retry_on",
        "root",
    )

    def __init__(
        self,
        function_id: bytes,
        blob: Callable[[], bytes],
        payload: Payload,
        need: Demand,
        actor: ActorInfo | None,
        retries: int,
        retry_on: bool | tuple[type[BaseException], ...],
        parent: ObjectId | None = None,
        keep: Sequence[ObjectEntry] = (),
        root: str = "",
    ) -> None:
        # The entries of the refs in its arguments: alive while the task may be sent again,
        # so that the objects outlive the borrows of a worker that died running it.
        self.keep = keep
        self.parent = parent  # the task of this process that started it, if any
        self.function_id = function_id
        self.blob = blob
        self.payload = payload
        self.need = need  # CPUs, resources and where it may run
        self.actor = actor
        self.retries = retries
        self.retry_on = retry_on
        # The driver whose work the caller's call is part of, when the caller is a call
        # with no task of its own here (a sync actor method's thread): SubmitTask.root.
        self.root = root


class Sent:
    """A call in flight on one link, until its result comes back or the link dies."""

    __slots__ = (
        "actor",
        "cancelled",
        "counted",
        "entry",
        "kind",
        "method",
        "owner",
        "payload",
        "retries",
        "spec",
    )

    def __init__(
        self,
        entry: ObjectEntry,
        kind: int,
        *,
        counted: bool = False,
        spec: TaskSpec | None = None,
        actor: ActorInfo | None = None,
        method: str = "",
        payload: Payload | None = None,
        retries: int = 0,
    ) -> None:
        self.entry = entry
        self.kind = kind
        self.counted = counted  # counts towards the worker's load in our placement
        self.spec = spec  # TASK: how to send it again
        self.actor = actor  # CALL, CREATE: the actor
        self.method = method  # CALL: to send it again (max_task_retries)
        self.payload = payload
        self.retries = retries
        self.cancelled = False  # ag.cancel() reached it: never retried nor restarted
        # CALL: this process's OwnerState owns the call (its actor is one this process
        # created): it decides what a reply, a lost link or a cancel does to it.
        self.owner = False


class _Placing:
    """A task or remote coroutine actor waiting for a worker (in Runtime.waiting): calling it
    places it; its entry lets a cancel find it."""

    __slots__ = ("entry", "place", "spec")

    def __init__(
        self, place: Callable[[ObjectEntry, TaskSpec], None], entry: ObjectEntry, spec: TaskSpec
    ) -> None:
        self.place, self.entry, self.spec = place, entry, spec

    def __call__(self) -> None:
        self.place(self.entry, self.spec)


class OwnedActor:
    """A restartable class actor this process created: how to create it again."""

    __slots__ = ("blob", "class_id", "handles", "info", "max_concurrency", "payload")

    def __init__(
        self,
        info: ActorInfo,
        class_id: bytes,
        blob: Callable[[], bytes],
        payload: Payload,
        max_concurrency: int,
    ) -> None:
        self.info = info
        self.class_id = class_id
        self.blob = blob
        self.payload = payload
        self.max_concurrency = max_concurrency
        self.handles: weakref.WeakSet[ActorHandle[Any]] = weakref.WeakSet()


def _call_sent(entry: ObjectEntry, info: ActorInfo, method: str, payload: Payload) -> Sent:
    return Sent(
        entry, CALL, actor=info, method=method, payload=payload, retries=info.max_task_retries
    )


def _describe(info: ActorInfo) -> str:
    return repr(info.name) if info.name else f"{info.label}#{short(info.actor_id)}"
