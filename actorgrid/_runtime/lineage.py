"""The task this code runs for, so that the tasks it starts are known as its children.

Set by the executor around a task's user code (on its pool thread, or in its Trio task, each of
which has a context of its own); read by ``f.remote()``. None outside any task (a driver).
"""

from __future__ import annotations

from contextvars import ContextVar

from .._protocol.ids import ObjectId

__all__ = ["current_task"]

current_task: ContextVar[ObjectId | None] = ContextVar("actorgrid_current_task", default=None)
