"""What the dashboard needs from the cluster, given to it by the layer that starts it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .._protocol.ids import NodeId
from .._protocol.messages import ClusterView, Event
from .._protocol.observe import WorkerOutput

# (node id, hostname, pid) of a process -> bytes its links sent and received since it began
Traffic = dict[tuple[NodeId | None, str, int | None], tuple[int, int]]

__all__ = ["DashboardSource", "Traffic"]


class DashboardSource(Protocol):
    """The head's view of the cluster, its event stream, and the operator actions."""

    async def view(self) -> ClusterView:
        """The cluster now, with every worker's actors and calls (QueryCluster in detail)."""
        ...

    async def subscribe(self, listener: Callable[[Event], None]) -> list[Event]:
        """Call ``listener`` (on the loop) for each new event; return those remembered."""
        ...

    def unsubscribe(self, listener: Callable[[Event], None]) -> None: ...

    def follow_output(self, listener: Callable[[WorkerOutput], None]) -> None:
        """Call ``listener`` (on the loop) with every worker's output from now on."""
        ...

    def traffic(self) -> Traffic:
        """What each process of the cluster last reported its links carried."""
        ...

    async def act(self, action: str, target: bytes) -> str:
        """Carry out one of model.ACTIONS on the id ``target``; return what was done.
        Raises an Exception whose message teaches when it cannot be done."""
        ...
