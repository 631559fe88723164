"""What the dashboard needs from the cluster, given to it by the layer that starts it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .._protocol.messages import ClusterView, Event

__all__ = ["DashboardSource"]


class DashboardSource(Protocol):
    """The head's view of the cluster, its event stream, and the operator actions."""

    async def view(self) -> ClusterView:
        """The cluster now, with every worker's actors and calls (QueryCluster in detail)."""
        ...

    async def subscribe(self, listener: Callable[[Event], None]) -> list[Event]:
        """Call ``listener`` (on the loop) for each new event; return those remembered."""
        ...

    def unsubscribe(self, listener: Callable[[Event], None]) -> None: ...

    async def act(self, action: str, target: bytes) -> str:
        """Carry out one of model.ACTIONS on the id ``target``; return what was done.
        Raises an Exception whose message teaches when it cannot be done."""
        ...
