"""Starting and joining clusters: ``ag.init`` (sync), ``ag.connect`` (Trio), ``ag.shutdown``.

With no address (and no ``ACTORGRID_ADDRESS``), the driver hosts an embedded cluster: a head
and a node agent in its own process, and worker processes as its children. The sync API runs
the runtime's Trio loop on a background thread; the Trio API runs it in the caller's loop.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from .._exceptions import NotInitializedError, unwrap_group
from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES
from .._runtime.core import Runtime, runtime_or_none, set_current_runtime
from .head import Head
from .node import NodeAgent, WorkerStartError

__all__ = ["Cluster", "connect", "init", "is_initialized", "shutdown"]

WORKER_START_TIMEOUT_S = 60.0


@attrs.frozen
class WorkerStatistics:
    address: str
    pid: int
    hostname: str
    num_cpus: float


class Cluster:
    """The cluster this process is connected to; returned by ``ag.init()``/``ag.connect()``.

    ``with ag.init():`` shuts the cluster down (an embedded one) or disconnects on exit.
    """

    def __init__(self, runtime: Runtime, *, embedded: bool, head_address: str) -> None:
        self._runtime = runtime
        self.embedded = embedded
        self.address = head_address

    def __repr__(self) -> str:
        kind = "embedded" if self.embedded else "remote"
        return f"<Cluster {kind} head={self.address} workers={len(self._runtime.placement)}>"

    def workers(self) -> list[WorkerStatistics]:
        """The workers this process knows of, as frozen records."""
        return [
            WorkerStatistics(w.address, w.pid, w.hostname, w.num_cpus)
            for w in list(self._runtime.placement.workers.values())
        ]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        shutdown()


@asynccontextmanager
async def _open_cluster(
    address: str | None,
    *,
    num_workers: int | None,
    secret: bytes | None,
    host: str,
    max_message_bytes: int,
) -> AsyncIterator[Cluster]:
    if runtime_or_none() is not None:
        raise RuntimeError(
            "actorgrid is already initialized in this process; call ag.shutdown() first"
        )
    address = address or os.environ.get("ACTORGRID_ADDRESS") or None
    async with trio.open_nursery() as nursery:
        node: NodeAgent | None = None
        if address is None:
            secret = secret or os.urandom(32)
            head = Head(secret, host=host, max_message_bytes=max_message_bytes)
            head_address = await nursery.start(head.serve)
            n = num_workers if num_workers is not None else (os.cpu_count() or 1)
            if n < 1:
                raise ValueError(f"num_workers must be at least 1, not {n}")
            node = NodeAgent(
                head_address, secret, num_workers=n, max_message_bytes=max_message_bytes
            )
        else:
            head_address = address
            if secret is None:
                env = os.environ.get("ACTORGRID_SECRET")
                if not env:
                    raise ValueError(
                        f"connecting to the cluster at {address} needs its secret: pass "
                        "secret= or set ACTORGRID_SECRET (hex)"
                    )
                secret = bytes.fromhex(env)
        rt = Runtime(
            kind="driver",
            secret=secret,
            head_address=head_address,
            host=host,
            max_message_bytes=max_message_bytes,
        )
        try:
            if node is not None:
                await nursery.start(node.serve)
            await nursery.start(rt.serve)
            set_current_runtime(rt)
            if node is not None:
                await _wait_for_workers(rt, node)
            yield Cluster(rt, embedded=node is not None, head_address=head_address)
        finally:
            if runtime_or_none() is rt:
                set_current_runtime(None)
            with trio.CancelScope(shield=True):
                if node is not None:
                    await node.aclose()
            nursery.cancel_scope.cancel()


async def _wait_for_workers(rt: Runtime, node: NodeAgent) -> None:
    async with trio.open_nursery() as nursery:

        async def on_failure() -> None:
            await node.failed.wait()
            raise WorkerStartError(
                f"a worker process failed to start ({node.failure}); its error output is above"
            )

        nursery.start_soon(on_failure)
        with trio.move_on_after(WORKER_START_TIMEOUT_S) as scope:
            await rt.wait_for_workers(node.num_workers)
        if scope.cancelled_caught:
            raise WorkerStartError(
                f"only {len(rt.placement)} of {node.num_workers} workers joined within "
                f"{WORKER_START_TIMEOUT_S:.0f} s"
            )
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def connect(
    address: str | None = None,
    *,
    num_workers: int | None = None,
    secret: bytes | None = None,
    host: str = "127.0.0.1",
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
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
    host: str = "127.0.0.1",
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Cluster:
    """Connect this process to a cluster, starting an embedded one if there is no address.

    ``address`` (or ``ACTORGRID_ADDRESS``) names a running cluster's head as ``host:port``;
    without one, a head and ``num_workers`` workers (default: one per CPU) start here and stop
    with ``ag.shutdown()``, at the end of a ``with ag.init():`` block, or when this process
    exits. ``max_message_bytes`` caps any one message (default 1 GiB).
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
