"""Frames for a link's queued messages, runs of calls coalesced: what a link's writer sends.

A burst of ``.remote()`` calls queues many CallActor (or SubmitTask) on one link in one turn
of the loop. Each as its own frame costs an envelope to pack on the caller and one to unpack
and dispatch on the worker; a run of them goes as one ActorCalls (SubmitTasks) frame instead
(``batches.py``), which the worker takes apart in order. The worker that runs such a burst on
its loop (inline methods) queues one TaskResult per call on the caller's link in that turn: a
run of them goes as one TaskResults, on a link to a runtime (``answers``: a driver or worker,
which takes any answer in one; the head takes TaskResult alone). Anything else, and a message
alone, goes as before.

A coalesced frame stays under a quarter of the link's frame cap (``max_message_bytes``, the
cluster's) and under COALESCE_MAX_BYTES, by a conservative estimate of each call's size;
a call at or above that goes alone, as it always did. Costs: O(messages), one ``type()``
check each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .batches import ActorCalls, SubmitTasks, TaskResults
from .calls import CallActor, SubmitTask, TaskResult
from .codec import encode
from .messages import Message

__all__ = ["COALESCE_MAX_BYTES", "COALESCE_MAX_CALLS", "encode_frames"]

COALESCE_MAX_BYTES = 64 * 1024
COALESCE_MAX_CALLS = 512
# What a call's frame holds besides its arguments and method name, at most: ids, envelope.
_OVERHEAD_BYTES = 96


_Runnable = CallActor | SubmitTask | TaskResult
_RunKind = type[CallActor] | type[SubmitTask] | type[TaskResult]


def _size(message: _Runnable) -> int:
    """At least the bytes ``message`` takes in a frame."""
    if isinstance(message, TaskResult):
        return _OVERHEAD_BYTES + message.value.nbytes
    size = _OVERHEAD_BYTES + message.args.nbytes + len(message.root)
    if type(message) is CallActor:
        return size + len(message.method)
    assert type(message) is SubmitTask
    code = len(message.function) if message.function is not None else 0
    return size + code + 32 * len(message.resources)


def _run_kind(message: Message, answers: bool) -> _RunKind | None:
    """The kind of run ``message`` may be coalesced into, if any."""
    if type(message) is CallActor:
        return CallActor
    if type(message) is TaskResult:
        return TaskResult if answers else None
    if type(message) is SubmitTask and message.actor is None:
        return SubmitTask
    return None


def encode_frames(
    messages: Sequence[Message], cap: int, answers: bool = False
) -> list[list[bytes | memoryview]]:
    """The frames for ``messages`` in order, runs of two or more CallActor (or SubmitTask
    without an actor; or TaskResult, if ``answers``: the link's far end takes TaskResults)
    coalesced; ``cap``: the link's frame cap (0: unknown, nothing is coalesced)."""
    budget = min(COALESCE_MAX_BYTES, cap // 4)
    frames: list[list[bytes | memoryview]] = []
    i, n = 0, len(messages)
    while i < n:
        first = messages[i]
        kind = _run_kind(first, answers) if i + 1 < n else None
        run: list[Any] = [first]
        if kind is not None:
            size = _size(first)  # type: ignore[arg-type]
            for nxt in messages[i + 1 : i + COALESCE_MAX_CALLS]:
                if _run_kind(nxt, answers) is not kind:
                    break
                size += _size(nxt)  # type: ignore[arg-type]
                if size > budget:
                    break
                run.append(nxt)
        if len(run) == 1:
            frames.append(encode(first))
        elif kind is CallActor:
            frames.append(encode(ActorCalls(tuple(run))))
        elif kind is TaskResult:
            frames.append(encode(TaskResults(tuple(run))))
        else:
            frames.append(encode(SubmitTasks(tuple(run))))
        i += len(run)
    return frames
