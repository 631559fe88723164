"""What the runtime needs of the executor a worker hosts: the executor (``executor.py``)
sits above the runtime's modules, so the runtime knows it by this protocol only."""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Any, Protocol

import trio

from .._protocol.ids import ActorId
from .._protocol.messages import CallActor, Deliver, DeliverToKey, Payload
from .peer import Peer

__all__ = ["HostedExecutor"]


class _Load(Protocol):
    @property
    def total(self) -> float: ...

    @property
    def free(self) -> float: ...

    @property
    def items(self) -> Sized: ...


class HostedExecutor(Protocol):
    """What the runtime needs of the executor a worker hosts (``executor.Executor``, which sits
    above the runtime's modules: it runs the calls the runtime receives)."""

    @property
    def queue(self) -> _Load: ...

    @property
    def actors(self) -> dict[ActorId, Any]: ...  # the actors it hosts, by id: their slots

    def handlers(self) -> dict[type, Callable[[Peer, Any], Any]]: ...

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...

    def caller_gone(self, peer: Peer) -> None: ...

    def deliver_nowait(self, actor_id: ActorId, payload: Payload) -> bool: ...

    def call_from_thread(self, peer: Peer, msg: CallActor) -> bool: ...

    def agent_here(self, name: str, namespace: str | None) -> Any: ...

    def put_here(self, slot: Any, payload: Payload) -> bool: ...

    def local_payload(self, payload: Payload) -> bool: ...

    def on_deliver(self, peer: Peer, msg: Deliver) -> None: ...

    def deliver_to_key_nowait(self, msg: DeliverToKey) -> bool: ...
