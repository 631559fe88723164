"""Which tasks each running task started, so that cancelling a task cancels them too.

One table per process that runs tasks (a worker). A task that calls ``f.remote()`` while it
runs is the *parent* of that call (``started``); ``ag.cancel(parent)`` cancels, through
``cancel``, every child still in flight, and each child's worker does the same for its own
children: the cancel reaches every descendant, whether or not anyone waits on it (Ray's
``ray.cancel(recursive=True)``). Only task calls are children: actors a task creates, and
calls on actors, are not cancelled with it.

A child leaves the table when its result arrives (``finished``); a parent leaves it when it
ends (``parent_done``): its children keep running, as in Ray (they belong to this worker
process, not to the parent), and cancelling a finished task does nothing. So the table holds
only the children of tasks running now.

Costs: every operation is O(1) except ``cancel`` and ``parent_done``, which are O(children of
that parent). Never reads a clock, does no I/O.
"""

from __future__ import annotations

from .._protocol.ids import ObjectId

__all__ = ["TaskTree"]


class TaskTree:
    def __init__(self) -> None:
        self._children: dict[ObjectId, set[ObjectId]] = {}
        self._parent: dict[ObjectId, ObjectId] = {}

    def __len__(self) -> int:
        """Children in flight."""
        return len(self._parent)

    def __repr__(self) -> str:
        return f"<TaskTree parents={len(self._children)} children={len(self._parent)}>"

    def started(self, parent: ObjectId, child: ObjectId) -> None:
        self._children.setdefault(parent, set()).add(child)
        self._parent[child] = parent

    def finished(self, child: ObjectId) -> None:
        parent = self._parent.pop(child, None)
        if parent is None:
            return
        siblings = self._children.get(parent)
        if siblings is not None:
            siblings.discard(child)
            if not siblings:
                del self._children[parent]

    def parent_done(self, parent: ObjectId) -> None:
        for child in self._children.pop(parent, ()):
            self._parent.pop(child, None)

    def cancel(self, parent: ObjectId) -> list[ObjectId]:
        """The children of ``parent`` to cancel now (it is being cancelled)."""
        children = list(self._children.get(parent, ()))
        self.parent_done(parent)
        return children
