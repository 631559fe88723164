"""Batch messages of the hot path: many calls to one worker, or many answers to one caller, in
one message.

A run of calls queued for one link in one turn of the loop (``[a.ping.remote() for _ in
range(N)]``, ``[f.remote() for ...]``) is written as one ActorCalls or SubmitTasks frame
(``coalesce.py``), and the worker handles its calls one by one, in order, exactly as if each
had come in its own frame. A worker that runs such a burst answers the calls its pool threads
finished while its loop was busy in one TaskResults, encoded once (``hotcodec.py``) and
handled by the caller in one loop, rather than one TaskResult message, envelope and dispatch
per call. A lone call is still answered by a TaskResult, straight from its pool thread. Part
of the closed union in ``messages.py``.
"""

from .calls import CallActor, SubmitTask, TaskResult
from .wireclass import message


@message
class TaskResults:
    """Sent by a worker instead of several TaskResult to one caller (``handle.method.remote()``
    and ``f.remote()`` bursts): each is handled exactly as its own TaskResult, in order."""

    results: tuple[TaskResult, ...]


@message
class ActorCalls:
    """Written by a link's writer for a run of CallActor (``handle.method.remote()`` bursts):
    each is handled exactly as its own CallActor, in order."""

    calls: tuple[CallActor, ...]


@message
class SubmitTasks:
    """Written by a link's writer for a run of SubmitTask without an actor (``f.remote()``
    bursts): each is handled exactly as its own SubmitTask, in order."""

    tasks: tuple[SubmitTask, ...]
