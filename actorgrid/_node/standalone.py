"""Long-running cluster processes, and the file that lets drivers find them.

- ``serve_head``: a head (and, with ``num_workers``, a node agent in the same process): what
  ``actorgrid start --head`` and ``actorgrid up`` run. Its node agent is ``serve_node``'s, so
  it rejoins its own head after losing it (a head process stopped for longer than 5 pulse
  intervals, then continued, finds its workers gone and starts new ones).
- ``serve_node``: a node agent joining a head by address: what ``actorgrid node`` runs. A node
  that loses its head (the head stopped, died, or the network cut it off for 5 pulse
  intervals) keeps its workers and dials the head again under its identity (``rejoin.py``):
  a restarted head takes it back, with its workers, actors and names; the head that declared
  it dead refuses it, and then it kills its workers, so nothing of the old membership
  survives, and joins again under a new identity (fencing by new identity). Whatever ends an
  agent after it first joined (a refusal, a fault in the agent itself) is logged and followed
  by a new join: only a wrong secret, a first join that fails for a reason other than the
  network, or a close on request (``actorgrid down``) ends ``serve_node``.
- ``ClusterFile``: the address and secret of the cluster ``actorgrid up`` started, in a file
  only its user can read (0600); ``ag.init(address="auto")`` reads it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import attrs
import trio

from .._dashboard.auth import dashboard_token
from .._exceptions import AuthenticationError, NotInitializedError, ProtocolError, unwrap_group
from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES
from .._runtime.pulse import DEFAULT_PULSE_INTERVAL_S
from .._scheduler.restart import RestartPolicy
from .._transport.tcp import ListenLimits
from .._transport.tls import TLSConfig
from .head import Head
from .logs import RateLimitedLog
from .node import DEFAULT_GRACE_S, REJOIN_INTERVAL_S, NodeAgent

__all__ = ["ClusterFile", "serve_head", "serve_node"]

log = logging.getLogger("actorgrid.node")

CLUSTER_FILE_ENV = "ACTORGRID_CLUSTER_FILE"


@attrs.frozen
class ClusterFile:
    """Where a running cluster's head listens and its secret; written by ``actorgrid up``."""

    address: str
    secret: bytes = attrs.field(repr=False)
    head_pid: int = 0
    num_workers: int = 0
    nodes: tuple[str, ...] = ()  # hosts that `actorgrid up --config` started nodes on
    tls: dict[str, str] | None = None
    dashboard: str = ""  # the dashboard's URL without its token ("": none was started)

    @property
    def dashboard_url(self) -> str:
        """The dashboard's URL with its token (derived from the secret), or ""."""
        return f"{self.dashboard}?token={dashboard_token(self.secret)}" if self.dashboard else ""

    @staticmethod
    def default_path() -> Path:
        """``$ACTORGRID_CLUSTER_FILE``, else ``$XDG_RUNTIME_DIR/actorgrid/cluster.json``, else
        ``~/.config/actorgrid/cluster.json``."""
        explicit = os.environ.get(CLUSTER_FILE_ENV)
        if explicit:
            return Path(explicit)
        runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
        base = Path(runtime_dir) if runtime_dir else Path.home() / ".config"
        return base / "actorgrid" / "cluster.json"

    def save(self, path: Path | None = None) -> Path:
        """Write the file readable by this user only (0600, in a 0700 folder), atomically."""
        path = path or self.default_path()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = attrs.asdict(self)
        data["secret"] = self.secret.hex()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cluster-")  # created 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: Path | None = None) -> ClusterFile:
        path = path or cls.default_path()
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise NotInitializedError(
                f"no running cluster is recorded in {path}: start one with `actorgrid up`, or "
                "pass the head's address (ag.init(address='host:port'))"
            ) from None
        try:
            data: dict[str, Any] = json.loads(text)
            data["secret"] = bytes.fromhex(data["secret"])
            data["nodes"] = tuple(data.get("nodes", ()))
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise NotInitializedError(
                f"the cluster file {path} is damaged ({exc}); remove it and run `actorgrid up`"
            ) from None

    @classmethod
    def remove(cls, path: Path | None = None) -> None:
        (path or cls.default_path()).unlink(missing_ok=True)


async def serve_head(
    *,
    secret: bytes,
    host: str = "127.0.0.1",
    port: int = 0,
    num_workers: int = 0,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    object_store_memory: int | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    pulse_interval: float = DEFAULT_PULSE_INTERVAL_S,
    grace_s: float = DEFAULT_GRACE_S,
    worker_restarts: RestartPolicy | None = None,
    tls: TLSConfig | None = None,
    listen_limits: ListenLimits | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a cluster head until cancelled; report its ``host:port`` through ``task_status``.

    With ``num_workers``, a node agent with that many workers runs here too. When cancelled,
    the nodes are stopped first (their workers get ``grace_s``), then the head.
    ``listen_limits`` (an ``ag.ListenLimits``) bounds the connections still in their
    handshake on every listener here (the head's and its workers').
    """
    if num_workers > 0 and host in ("0.0.0.0", "::", ""):
        raise ValueError(
            f"a head listening on the wildcard address {host!r} cannot tell its own workers "
            "which address to advertise: pass this machine's address as host"
        )
    head = Head(
        secret,
        host=host,
        port=port,
        max_message_bytes=max_message_bytes,
        pulse_interval_s=pulse_interval,
        tls=tls,
        listen_limits=listen_limits,
    )
    stopping = trio.Event()

    async def wait_for_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stopping.set()

    async with trio.open_nursery() as outer:
        outer.start_soon(wait_for_cancel)
        # The head keeps running while it stops the nodes: a cancel from outside only sets
        # ``stopping``, then the nodes are closed in order, and only then does the head stop.
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as inner:
                address: str = await inner.start(head.serve)
                if num_workers > 0:
                    await inner.start(
                        functools.partial(
                            serve_node,
                            address,
                            secret=secret,
                            num_workers=num_workers,
                            resources=resources,
                            labels=labels,
                            object_store_memory=object_store_memory,
                            max_message_bytes=max_message_bytes,
                            pulse_interval=pulse_interval,
                            grace_s=grace_s,
                            worker_restarts=worker_restarts,
                            tls=tls,
                            listen_limits=listen_limits,
                        )
                    )
                task_status.started(address)
                await stopping.wait()
                # Every node, this process's own included, interrupts its workers (grace_s)
                # and closes on request; cancelling serve_node then kills what is left.
                await head.close_nodes(grace_s)
                inner.cancel_scope.cancel()


async def serve_node(
    address: str,
    *,
    secret: bytes,
    num_workers: int | None = None,
    num_cpus_per_worker: float = 1.0,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    object_store_memory: int | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    pulse_interval: float = DEFAULT_PULSE_INTERVAL_S,
    grace_s: float = DEFAULT_GRACE_S,
    worker_restarts: RestartPolicy | None = None,
    host: str | None = None,
    tls: TLSConfig | None = None,
    listen_limits: ListenLimits | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Join this machine to the cluster whose head is at ``address``, until cancelled.

    Starts ``num_workers`` workers (default: one per CPU), listening on ``host`` (default:
    the local address this machine uses to reach the head). Reports started once joined. A
    wrong secret fails at once (AuthenticationError); a head that cannot be reached is tried
    again every REJOIN_INTERVAL_S; one lost later is rejoined under this node's identity, or
    as a new node if it declared this one dead. ``listen_limits`` (an ``ag.ListenLimits``)
    bounds the connections still in their handshake on each worker's listener.
    """
    n = num_workers if num_workers is not None else (os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"num_workers must be at least 1, not {n}")
    status: trio.TaskStatus[None] | None = task_status
    errors = RateLimitedLog(log)
    while True:
        agent = NodeAgent(
            address,
            secret,
            num_workers=n,
            num_cpus_per_worker=num_cpus_per_worker,
            resources=resources,
            labels=labels,
            object_store_memory=object_store_memory,
            max_message_bytes=max_message_bytes,
            pulse_interval_s=pulse_interval,
            grace_s=grace_s,
            restart_policy=worker_restarts,
            host=host,
            tls=tls,
            listen_limits=listen_limits,
        )
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(agent.serve)
                if status is not None:
                    status.started()
                    status = None
        except Exception as group:
            # Nurseries wrap errors in groups: look at the one inside.
            exc = unwrap_group(group)
            # A wrong secret, or a mismatch that shows on the first try (TLS on one side
            # only, not an actorgrid head), is a misconfiguration: trying again cannot help.
            first = status is not None
            if isinstance(exc, AuthenticationError) or (first and isinstance(exc, ProtocolError)):
                raise exc from None
            network = isinstance(exc, (OSError, ConnectionError))
            if first and not network:
                raise
            if network:
                errors.warning(
                    "join", "cannot join the head at %s (%s); trying again", address, exc
                )
            else:
                # A fault in the agent itself: this machine's workers must not stay away for
                # good because of it.
                errors.exception("agent", "the node agent failed; joining %s again", address)
        finally:
            with trio.CancelScope(shield=True):
                await agent.aclose()
        if agent.closed_on_request:
            return
        if not agent.fenced:  # else the head answers: join it again at once
            await trio.sleep(REJOIN_INTERVAL_S)
