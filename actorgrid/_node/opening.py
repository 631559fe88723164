"""Opening a cluster for ``ag.init``/``ag.connect``: with no address, an embedded one (a head
and a node agent in this process, workers forked from a template process); with one, the
cluster running there (``"auto"``: the one `actorgrid up` started). Either way this process's
driver runtime, set as current until the block ends. ``cluster.py`` wraps what it yields in
the ``Cluster`` object users get.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._exceptions import NotInitializedError
from .._protocol.wireclass import message
from .._runtime.core import Runtime, runtime_or_none, set_current_runtime
from .._runtime.envship import remember
from .._runtime.pulse import DEFAULT_PULSE_INTERVAL_S
from .._scheduler.backlog import DEFAULT_PENDING_WARNING_S
from .._scheduler.restart import RestartPolicy
from .._transport.addresses import local_address_towards
from .._transport.tcp import ListenLimits
from .._transport.tls import TLSConfig
from .envdriver import ensure_runtime_env, prepare_runtime_env
from .head import Head
from .jobclient import driver_tls, rejoin_as_job
from .node import DEFAULT_GRACE_S, NodeAgent, WorkerStartError
from .spawn import serve_template
from .standalone import ClusterFile

WORKER_START_TIMEOUT_S = 60.0


@message
class Opened:
    """What an open cluster is to this process: its driver runtime, the head's address, the
    embedded node agent (None when joined to a running cluster) and the dashboard's URL."""

    runtime: Runtime
    head_address: str
    node: NodeAgent | None
    dashboard_url: str | None


@asynccontextmanager
async def open_runtime(
    address: str | None,
    *,
    num_workers: int | None,
    secret: bytes | None,
    host: str | None,
    max_message_bytes: int,
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
) -> AsyncIterator[Opened]:
    """Start an embedded cluster (no address) or join the one at ``address``, and set this
    process's runtime; yields what the ``Cluster`` object is made of. Leaving stops it all."""
    serve_at = None
    if dashboard is not False:  # the dashboard's modules are imported only to serve one
        from .dashboard import parse_dashboard

        serve_at = parse_dashboard(dashboard)
    url = None
    if runtime_or_none() is not None:
        raise RuntimeError(
            "actorgrid is already initialized in this process; call ag.shutdown() first"
        )
    address = address or os.environ.get("ACTORGRID_ADDRESS") or None
    prepared = await prepare_runtime_env(runtime_env)
    async with trio.open_nursery() as nursery:
        node: NodeAgent | None = None
        head: Head | None = None
        if address is None:
            # Workers fork from a template that imports while the head and the node start.
            await nursery.start(serve_template)
            host = host or "127.0.0.1"
            secret = secret or os.urandom(32)
            head = Head(
                secret,
                host=host,
                max_message_bytes=max_message_bytes,
                pulse_interval_s=pulse_interval,
                tls=tls,
                listen_limits=listen_limits,
            )
            head_address = await nursery.start(head.serve)
            n = num_workers if num_workers is not None else (os.cpu_count() or 1)
            if n < 1:
                raise ValueError(f"num_workers must be at least 1, not {n}")
            node = NodeAgent(
                head_address,
                secret,
                num_workers=n,
                max_message_bytes=max_message_bytes,
                pulse_interval_s=pulse_interval,
                grace_s=grace_s,
                restart_policy=worker_restarts,
                tls=tls,
                listen_limits=listen_limits,
                resources=resources,
                labels=labels,
                object_store_memory=object_store_memory,
            )
        else:
            if resources is not None or labels is not None:
                raise ValueError(
                    "resources= and labels= describe the embedded cluster's node; a node of a "
                    "running cluster declares its own (`actorgrid node --resources ... "
                    "--labels ...`)"
                )
            head_address, secret, tls = _remote(address, secret, tls)
            if address == "auto":  # the dashboard its head serves, if this one serves none
                url = ClusterFile.load().dashboard_url or None
            host = host or local_address_towards(head_address)
        rt = Runtime(
            kind="driver",
            secret=secret,
            head_address=head_address,
            host=host,
            max_message_bytes=max_message_bytes,
            pulse_interval_s=pulse_interval,
            tls=tls,
            pending_warning_s=pending_warning_s,
            listen_limits=listen_limits,
        )
        rt.env_key = "" if prepared is None else prepared.spec.key
        rt.observe.show_output(log_to_driver)
        try:
            if node is not None:
                await nursery.start(node.serve)
            await nursery.start(rt.serve)
            _adopt_head_cap(rt)
            # An embedded cluster's driver is a process of its node: it shares its store.
            rt.join_store(None if node is None else node.store.config())
            set_current_runtime(rt)
            if node is not None and prepared is None:
                await _wait_for_workers(rt, node)
            if prepared is not None:
                await ensure_runtime_env(rt, prepared)
                remember(rt, prepared)  # shipped again to a restarted head
            rejoin_as_job(rt)
            if serve_at is not None:
                from .dashboard import serve_runtime_dashboard

                serve = functools.partial(serve_runtime_dashboard, rt, host=serve_at[0])
                url = await nursery.start(functools.partial(serve, port=serve_at[1]))
            yield Opened(rt, head_address, node, url)
        finally:
            with trio.CancelScope(shield=True):
                await rt.observe.settle()  # at most OUTPUT_SETTLE_S, even when cancelled
            rt.closing()
            rt.leave_store()
            if runtime_or_none() is rt:
                set_current_runtime(None)
            with trio.CancelScope(shield=True):
                if head is not None:
                    head.stopping()  # the cluster's names and actors go with it, all at once
                if node is not None:
                    await node.aclose()
            nursery.cancel_scope.cancel()


def _adopt_head_cap(rt: Runtime) -> None:
    """Take the head's lower ``max_message_bytes`` as this process's own: the cluster's
    members refuse bigger frames, so ``ag.put`` and ``.remote()`` refuse such data here,
    with a message that says so, instead of sending it to be dropped."""
    hello = rt.head.remote_hello if rt.head is not None else None
    if hello is not None and 0 < hello.max_message_bytes < rt.max_message_bytes:
        rt.max_message_bytes = hello.max_message_bytes


def _remote(
    address: str, secret: bytes | None, tls: TLSConfig | None
) -> tuple[str, bytes, TLSConfig | None]:
    """The head address and secret to join: ``"auto"`` reads the file `actorgrid up` wrote;
    a secret comes from ``secret=``, ``ACTORGRID_SECRET`` (hex), or that file if it names the
    same address."""
    if address == "auto":
        up = ClusterFile.load()
        if tls is None and up.tls is not None:
            tls = TLSConfig.from_dict(up.tls)
        return up.address, secret or up.secret, tls
    tls = tls or driver_tls(address)  # a job's on a TLS cluster, or the recorded cluster's
    if secret is not None:
        return address, secret, tls
    env = os.environ.get("ACTORGRID_SECRET")
    if env:
        try:
            return address, bytes.fromhex(env), tls
        except ValueError:
            raise ValueError("ACTORGRID_SECRET must be the cluster secret in hex") from None
    recorded: ClusterFile | None
    try:
        recorded = ClusterFile.load()
    except NotInitializedError:
        recorded = None
    if recorded is not None and recorded.address == address:
        if tls is None and recorded.tls is not None:
            tls = TLSConfig.from_dict(recorded.tls)
        return address, recorded.secret, tls
    raise ValueError(
        f"connecting to the cluster at {address} needs its secret: pass secret=, set "
        "ACTORGRID_SECRET (hex), or use address='auto' on the machine that ran `actorgrid up`"
    )


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
