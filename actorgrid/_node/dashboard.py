"""Serving the dashboard (``actorgrid._dashboard``) for a cluster, from a process that has a
runtime connected to its head: ``ag.init(dashboard=True)`` (the driver's runtime), and
``ag.serve_dashboard`` (a runtime of its own; ``actorgrid start --head`` runs it beside the
head).

The dashboard reads what ``Cluster.status()`` and ``Cluster.events()`` read, and acts as
``Cluster.kill_actor``, ``cancel_task``, ``restart_worker``, ``close_worker``, ``suspend`` and
``resume`` do.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import trio

from .._dashboard.auth import dashboard_token
from .._dashboard.source import Traffic
from .._exceptions import ActorgridError
from .._protocol.ids import NodeId, WorkerId, short
from .._protocol.messages import (
    Ack,
    ClusterView,
    ControlNode,
    ControlWorker,
    Event,
    Message,
    QueryCluster,
)
from .._protocol.observe import WorkerOutput
from .._runtime.core import Runtime
from .._transport.addresses import local_address_towards
from .._transport.tls import TLSConfig
from .operations import cancel_task, kill_actor
from .records import ClusterStatus, status_from_view

__all__ = ["RuntimeSource", "parse_dashboard", "serve_dashboard", "serve_runtime_dashboard"]

DEFAULT_DASHBOARD_HOST = "127.0.0.1"


class RuntimeSource:
    """The dashboard's view of the cluster, through a runtime's link to the head."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    async def view(self) -> ClusterView:
        reply = await self._rt.head_request(lambda rid: QueryCluster(rid, True))
        assert isinstance(reply, ClusterView)
        return reply

    async def _status(self) -> ClusterStatus:
        return status_from_view(await self.view())

    async def subscribe(self, listener: Callable[[Event], None]) -> list[Event]:
        return await self._rt.subscribe_events(listener)

    def unsubscribe(self, listener: Callable[[Event], None]) -> None:
        self._rt.unsubscribe_events(listener)

    def follow_output(self, listener: Callable[[WorkerOutput], None]) -> None:
        self._rt.on_loop(self._rt.observe.follow, listener, self._rt.head)

    def traffic(self) -> Traffic:
        return self._rt.observe.traffic.rows()

    async def act(self, action: str, target: bytes) -> str:
        rt = self._rt
        if action == "kill_actor":
            actor = await kill_actor(rt, self._status, target, None)
            return f"killed actor {actor.name or actor.label} {actor.short_id}"
        if action == "cancel_task":
            task = await cancel_task(rt, self._status, target, False)
            return f"cancelled task {task.label} {task.short_id}"
        if action in ("restart_worker", "close_worker"):
            verb = action.partition("_")[0]
            await self._control(lambda rid: ControlWorker(rid, WorkerId(target), verb))
            return f"worker {short(target)}: {verb} done"
        if action in ("suspend_node", "resume_node"):
            verb = action.partition("_")[0]
            await self._control(lambda rid: ControlNode(rid, NodeId(target), verb))
            return f"node {short(target)}: {verb} done"
        raise ActorgridError(f"the dashboard has no action {action!r}")

    async def _control(self, make: Callable[[int], Message]) -> None:
        reply = await self._rt.head_request(make)
        assert isinstance(reply, Ack)
        if reply.error is not None:
            raise ActorgridError(reply.error)


def parse_dashboard(dashboard: bool | str) -> tuple[str, int] | None:
    """``dashboard=`` of ``ag.init``: False (none), True (127.0.0.1, any free port), or
    ``"HOST:PORT"`` (``":8265"`` for 127.0.0.1:8265)."""
    if dashboard is False:
        return None
    if dashboard is True:
        return DEFAULT_DASHBOARD_HOST, 0
    host, colon, port = str(dashboard).rpartition(":")
    try:
        if not colon:
            raise ValueError
        number = int(port)
    except ValueError:
        raise ValueError(
            f"dashboard={dashboard!r}: pass True, or 'HOST:PORT' such as '127.0.0.1:8265' "
            "(port 0 picks a free one)"
        ) from None
    return host.strip("[]") or DEFAULT_DASHBOARD_HOST, number


async def serve_runtime_dashboard(
    rt: Runtime,
    *,
    host: str = DEFAULT_DASHBOARD_HOST,
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the dashboard of ``rt``'s cluster until cancelled; report its URL."""
    # Imported here: the server pulls in trio-websocket (wsproto, h11), ~10% of a cold start
    # that most clusters, started without a dashboard, never use.
    from .._dashboard.server import DashboardServer, dashboard_ssl_context

    context = dashboard_ssl_context(rt.tls) if rt.tls is not None else None
    server = DashboardServer(
        RuntimeSource(rt), dashboard_token(rt.secret), host=host, port=port, ssl_context=context
    )
    await server.serve(task_status=task_status)


async def serve_dashboard(
    address: str,
    *,
    secret: bytes,
    host: str = DEFAULT_DASHBOARD_HOST,
    port: int = 0,
    tls: TLSConfig | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the live dashboard and ``/metrics`` of the cluster whose head is at
    ``address``, on ``host:port`` (default 127.0.0.1, a free port), until cancelled; report
    its URL, token included, through ``task_status``. With ``tls``, it is served over HTTPS
    with that certificate. ``actorgrid start --head`` runs this beside its head."""
    rt = Runtime(
        kind="driver",
        secret=secret,
        head_address=address,
        host=local_address_towards(address),
        tls=tls,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(rt.serve)
        try:
            url = await nursery.start(
                functools.partial(serve_runtime_dashboard, rt, host=host, port=port)
            )
            task_status.started(url)
            await trio.sleep_forever()
        finally:
            rt.closing()
            nursery.cancel_scope.cancel()
