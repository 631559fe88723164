"""Starting and joining clusters: ``ag.init`` (sync), ``ag.connect`` (Trio), ``ag.shutdown``,
and the ``Cluster`` object they return.

With no address (and no ``ACTORGRID_ADDRESS``), the driver hosts an embedded cluster: a head
and a node agent in its own process, and worker processes as its descendants (forked from a
template process it starts, so they end with it). The sync API runs the runtime's Trio loop
on a background thread; the Trio API runs it in the caller's loop. What opening a cluster
does is in ``opening.py``.
"""

from __future__ import annotations

import atexit
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from .._exceptions import NotInitializedError, unwrap_group
from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES
from .._protocol.messages import (
    ClusterView,
    Event,
    QueryCluster,
)
from .._runtime.core import Runtime, runtime_or_none
from .._runtime.gcyoung import young_threshold_raised
from .._runtime.pulse import DEFAULT_PULSE_INTERVAL_S
from .._scheduler.backlog import DEFAULT_PENDING_WARNING_S
from .._scheduler.restart import RestartPolicy
from .._transport.tcp import ListenLimits
from .._transport.tls import TLSConfig
from .clusterops import OperationMethods
from .jobclient import Jobs
from .node import DEFAULT_GRACE_S, NodeAgent
from .observing import ObserveMethods
from .opening import open_runtime
from .records import (
    ClusterStatus,
    NodeStatistics,
    WorkerStatistics,
    node_statistics,
    status_from_view,
)

__all__ = [
    "Cluster",
    "connect",
    "init",
    "is_initialized",
    "shutdown",
]

T = TypeVar("T")


class Cluster(ObserveMethods, OperationMethods):
    """The cluster this process is connected to; returned by ``ag.init()``/``ag.connect()``.

    ``with ag.init():`` shuts the cluster down (an embedded one) or disconnects on exit.
    Operations (``close_worker``, ``suspend``...) and listings that ask the head block, and
    have ``*_async`` twins for Trio code.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        embedded: bool,
        head_address: str,
        node: NodeAgent | None = None,
        dashboard_url: str | None = None,
    ) -> None:
        self._runtime = runtime
        self._jobs: Jobs | None = None
        self._node = node
        self.embedded = embedded
        self.address = head_address
        # The live dashboard's URL, token included: the one this process serves
        # (ag.init(dashboard=...)), else that of the head `actorgrid up` started ("auto").
        self.dashboard_url = dashboard_url

    def __repr__(self) -> str:
        kind = "embedded" if self.embedded else "remote"
        return f"<Cluster {kind} head={self.address} workers={len(self._runtime.placement)}>"

    def workers(self) -> list[WorkerStatistics]:
        """The workers this process knows of, as frozen records (no round trip)."""
        placement = self._runtime.placement
        return [
            WorkerStatistics(
                w.address,
                w.pid,
                w.hostname,
                w.num_cpus,
                w.worker_id,
                w.node_id,
                "suspended" if w.worker_id in placement.suspended else "alive",
            )
            for w in list(placement.workers.values())
        ]

    @property
    def undelivered_messages(self) -> int:
        """Fire-and-forget messages (``ag.send`` from this process) that found their actor
        gone, since this process connected; each is also an event, kind
        ``"message_undelivered"``, whose detail says which actor and why."""
        return self._runtime.undelivered

    @property
    def lost_sends(self) -> int:
        """Calls made without keeping their ref (``h.method.remote()`` as a statement) and
        fire-and-forget messages (``ag.send``) that this process sent and whose actor's worker
        died (or was cut off) before confirming them finished, since this process connected;
        each actor's are also an event, kind ``"sends_lost"``, naming it (``actor_id``,
        ``name``) and how many (``count``)."""
        return self._runtime.lost_sends

    def _sync(self, afn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if trio.lowlevel.in_trio_run():
            raise RuntimeError(
                f"Cluster.{afn.__name__.removesuffix('_async')}() blocks, and it was called "
                f"from a thread running a Trio loop; use `await cluster.{afn.__name__}(...)`"
            )
        result: T = self._runtime.portal.run(functools.partial(afn, *args, **kwargs))
        return result

    # --- listings --------------------------------------------------------------------------

    async def nodes_async(self) -> list[NodeStatistics]:
        reply = await self._runtime.head_request(QueryCluster)
        assert isinstance(reply, ClusterView)
        return [node_statistics(n) for n in reply.nodes]

    def nodes(self) -> list[NodeStatistics]:
        """The cluster's node agents and their state, as the head sees them."""
        return self._sync(self.nodes_async)

    async def status_async(self) -> ClusterStatus:
        reply = await self._runtime.head_request(lambda rid: QueryCluster(rid, True))
        assert isinstance(reply, ClusterView)
        return status_from_view(reply)

    def status(self) -> ClusterStatus:
        """Nodes, workers (with their running and queued calls), live actors and the calls
        on every worker, asked of the head and every worker now."""
        return self._sync(self.status_async)

    # --- events ----------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """Trio code: the events the head remembers, then each new one as it happens."""
        send, receive = trio.open_memory_channel[Event](1000)

        def offer(event: Event) -> None:
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                pass  # a reader 1000 events behind misses some rather than stall the feed

        history = await self._runtime.subscribe_events(offer)
        try:
            for event in history:
                yield event
            async with receive:
                async for event in receive:
                    yield event
        finally:
            self._runtime.unsubscribe_events(offer)

    async def recent_events_async(self) -> list[Event]:
        return await self._runtime.subscribe_events(None)

    def recent_events(self) -> list[Event]:
        """The events seen so far (the head keeps the last 1000, node pulses excepted, and
        the last 10,000 task events apart from those)."""
        return self._sync(self.recent_events_async)

    def on_event(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` (on the runtime's thread: keep it quick) for every new
        event; returns a function that stops it."""
        rt = self._runtime
        if rt.portal.in_loop_thread():
            raise RuntimeError("in Trio code, iterate `async for event in cluster.events()`")
        rt.portal.run(rt.subscribe_events, callback)
        return lambda: rt.on_loop(rt.unsubscribe_events, callback)

    @property
    def jobs(self) -> Jobs:
        """The cluster's jobs: ``await cluster.jobs.submit_async([...])`` and the like."""
        if self._jobs is None:
            self._jobs = Jobs(self._runtime)
        return self._jobs

    @property
    def node_pids(self) -> list[int]:
        """The worker processes an embedded cluster's node agent runs now (empty if remote)."""
        return [] if self._node is None else self._node.pids()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        shutdown()


@asynccontextmanager
async def _open_cluster(address: str | None, **options: Any) -> AsyncIterator[Cluster]:
    with young_threshold_raised():  # fewer collections per call in flight: gcyoung.py
        async with open_runtime(address, **options) as opened:
            yield Cluster(
                opened.runtime,
                embedded=opened.node is not None,
                head_address=opened.head_address,
                node=opened.node,
                dashboard_url=opened.dashboard_url,
            )


@asynccontextmanager
async def connect(
    address: str | None = None,
    *,
    num_workers: int | None = None,
    secret: bytes | None = None,
    host: str | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    pulse_interval: float = DEFAULT_PULSE_INTERVAL_S,
    grace_s: float = DEFAULT_GRACE_S,
    worker_restarts: RestartPolicy | None = None,
    tls: TLSConfig | None = None,
    pending_warning_s: float = DEFAULT_PENDING_WARNING_S,
    listen_limits: ListenLimits | None = None,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    object_store_memory: int | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    dashboard: bool | str = False,
    log_to_driver: bool = True,
) -> AsyncIterator[Cluster]:
    """Trio-native: ``async with ag.connect() as cluster:`` inside ``trio.run``.

    With no address, starts an embedded cluster of ``num_workers`` workers (default: one per
    CPU) for the duration of the block.
    """
    try:
        async with _open_cluster(
            address,
            num_workers=num_workers,
            secret=secret,
            host=host,
            max_message_bytes=max_message_bytes,
            pulse_interval=pulse_interval,
            grace_s=grace_s,
            worker_restarts=worker_restarts,
            tls=tls,
            pending_warning_s=pending_warning_s,
            listen_limits=listen_limits,
            resources=resources,
            labels=labels,
            object_store_memory=object_store_memory,
            runtime_env=runtime_env,
            dashboard=dashboard,
            log_to_driver=log_to_driver,
        ) as cluster:
            yield cluster
    except BaseExceptionGroup as group:
        # The body's own error, or a start-up failure, shown as itself rather than a group.
        raise unwrap_group(group) from None


class _LoopThread(threading.Thread):
    """Runs the runtime's Trio loop for the sync API."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__(name="actorgrid-runtime", daemon=True)
        self._kwargs = kwargs
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.cluster: Cluster | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop_event: trio.Event | None = None

    def run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            if self.error is None:
                self.error = exc
        finally:
            self.ready.set()

    async def _main(self) -> None:
        self._stop_event = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        async with _open_cluster(**self._kwargs) as cluster:
            self.cluster = cluster
            self.ready.set()
            await self._stop_event.wait()

    def stop(self) -> None:
        if self._token is not None and self._stop_event is not None:
            try:
                self._token.run_sync_soon(self._stop_event.set)
            except trio.RunFinishedError:
                pass
        self.join(timeout=30)


_thread: _LoopThread | None = None
_lock = threading.Lock()


def init(
    address: str | None = None,
    *,
    num_workers: int | None = None,
    secret: bytes | None = None,
    host: str | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    pulse_interval: float = DEFAULT_PULSE_INTERVAL_S,
    grace_s: float = DEFAULT_GRACE_S,
    worker_restarts: RestartPolicy | None = None,
    tls: TLSConfig | None = None,
    pending_warning_s: float = DEFAULT_PENDING_WARNING_S,
    listen_limits: ListenLimits | None = None,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    object_store_memory: int | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    dashboard: bool | str = False,
    log_to_driver: bool = True,
) -> Cluster:
    """Connect this process to a cluster, starting an embedded one if there is no address.

    ``address`` (or ``ACTORGRID_ADDRESS``) names a running cluster's head as ``host:port``,
    or is ``"auto"`` for the cluster `actorgrid up` started on this machine;
    without one, a head and ``num_workers`` workers (default: one per CPU) start here and stop
    with ``ag.shutdown()``, at the end of a ``with ag.init():`` block, or when this process
    exits. ``max_message_bytes`` caps any one message (default 1 GiB); a lower cap that the
    cluster's head was started with (``actorgrid up --max-message-bytes``) applies.

    Supervision: every link pulses every ``pulse_interval`` seconds and a peer silent for 5
    intervals is treated as dead; interrupted or cancelled work gets ``grace_s`` seconds to
    clean up before its worker is killed; ``worker_restarts`` (an ``ag.RestartPolicy``,
    default 3 restarts in 5 s) says how often a node restarts a crashing worker.

    Tasks and actors submitted while no worker can take them wait for one (``ag.get(timeout=)``
    bounds a wait); after ``pending_warning_s`` seconds a warning in the log says what they
    wait for.

    ``tls`` (an ``ag.TLSConfig`` of certificate, key and CA files) turns on mutual TLS on
    every link, on top of the secret; every member of a cluster needs the same setting.

    ``listen_limits`` (an ``ag.ListenLimits``) bounds the connections still in their handshake
    on this process's listener and, for an embedded cluster, on its head's and workers': how
    many at once (``max_unauthenticated``) and for how long (``handshake_timeout_s``).

    ``resources`` (e.g. ``{"GPU": 2, "camera": 1}``) and ``labels`` (e.g. ``{"zone": "a"}``)
    describe the embedded cluster's node: they add to or override what it detects (CPUs,
    memory, GPUs; hostname, platform, ...), for ``.options(num_gpus=, resources=,
    label_selector=)`` to ask for.

    ``runtime_env`` (a dict: ``working_dir``, ``py_modules``, ``env_vars``, ``excludes``,
    ``worker_setup``, ``node_setup``, ``node_cleanup``) ships this driver's code to every
    node and runs its tasks and actors in workers of that environment only; see the README's
    "Runtime environments".

    ``dashboard=True`` serves the live dashboard and ``/metrics`` from this process, on
    127.0.0.1 and a free port (``"HOST:PORT"`` to choose); ``cluster.dashboard_url`` is its
    URL, token included.

    ``object_store_memory``: bytes of shared memory the embedded node's object store may use
    (default 30% of the machine's memory); values of 100 KB or more (results, ``ag.put``,
    arguments) stay there, read without a copy on the node; when it is full, unreferenced
    cached copies are evicted and the rest spill to local disk.

    ``log_to_driver`` (default True): what remote calls print (stdout, stderr, ``logging``)
    is shown here, prefixed with where it ran, repeated lines folded.
    """
    global _thread
    if trio.lowlevel.in_trio_run():
        raise RuntimeError(
            "ag.init() is for sync code; in Trio code use `async with ag.connect(...)`"
        )
    with _lock:
        if _thread is not None or runtime_or_none() is not None:
            raise RuntimeError(
                "actorgrid is already initialized in this process; call ag.shutdown() first"
            )
        thread = _LoopThread(
            dict(
                address=address,
                num_workers=num_workers,
                secret=secret,
                host=host,
                max_message_bytes=max_message_bytes,
                pulse_interval=pulse_interval,
                grace_s=grace_s,
                worker_restarts=worker_restarts,
                tls=tls,
                pending_warning_s=pending_warning_s,
                listen_limits=listen_limits,
                resources=resources,
                labels=labels,
                object_store_memory=object_store_memory,
                runtime_env=runtime_env,
                dashboard=dashboard,
                log_to_driver=log_to_driver,
            )
        )
        thread.start()
        thread.ready.wait()
        if thread.cluster is None:
            thread.join(timeout=30)
            error = thread.error or RuntimeError("the actorgrid runtime failed to start")
            raise unwrap_group(error)
        _thread = thread
    atexit.register(shutdown)
    return thread.cluster


def shutdown() -> None:
    """Stop the embedded cluster (or disconnect from a remote one). Safe to call twice."""
    global _thread
    with _lock:
        thread, _thread = _thread, None
    if thread is not None:
        thread.stop()
        atexit.unregister(shutdown)


def is_initialized() -> bool:
    return runtime_or_none() is not None


def require_initialized() -> None:
    if runtime_or_none() is None:
        raise NotInitializedError("call ag.init() first")
