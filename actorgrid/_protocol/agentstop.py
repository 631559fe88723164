"""What a stopping worker tells the owners of its agents: one message per batch of ended
calls, not one TaskResult each (a worker hosting 100,000 agents ends them all at once)."""

from __future__ import annotations

from .ids import ObjectId
from .records import Payload
from .wireclass import message

__all__ = ["TasksCancelled"]


@message
class TasksCancelled:
    """Sent by a stopping worker (SIGTERM, its node or cluster stopping) to the process that
    started these calls, once per loop turn: each ended with ``value`` (one boxed
    TaskCancelledError for all), as a ``TaskResult(task_id, False, value)`` each would say."""

    task_ids: tuple[ObjectId, ...]
    value: Payload
