"""``ag.run_on_each_node`` and ``ag.run_on_each_worker``: one call of a function per node or per
worker of the cluster, results by id (dispycos' "run on each node", Ray's per-node setup).

Each call is a task pinned to its worker (a ``Demand`` naming it) taking no CPU, so it runs
beside whatever the worker is busy with. ``subscribe=True`` also runs the function on each node
that joins later, until the returned ``NodeSubscription`` is closed: it listens to this
process's membership news (``WorkerWait.on_worker``), O(1) per joining worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .._protocol.ids import NodeId, WorkerId
from .._protocol.messages import WorkerInfo
from .._scheduler.demand import Demand
from .api import get
from .core import Runtime, current_runtime
from .refs import ObjectRef
from .remote import RemoteFunction, remote
from .serialization import dumps_call

__all__ = ["NodeSubscription", "run_on_each_node", "run_on_each_worker"]


def _remote_fn(fn: Callable[..., Any] | RemoteFunction[..., Any]) -> RemoteFunction[..., Any]:
    if isinstance(fn, RemoteFunction):
        return fn
    if not callable(fn):
        raise TypeError(f"run_on_each_* takes a function, not {type(fn).__name__} {fn!r}")
    made: RemoteFunction[..., Any] = remote(fn)
    return made


def _start_on(
    rt: Runtime, rf: RemoteFunction[..., Any], worker: WorkerInfo, args: tuple[Any, ...]
) -> ObjectRef[Any]:
    """Loop or any thread: ``rf(*args)`` on ``worker``, taking no CPU there."""
    if rf._check is not None:
        rf._check.check(args, {})
    payload = dumps_call(rf.__qualname__, rf._fn, args, {})
    rt.check_size(payload, f"{rf.__qualname__}()")
    entry = rt.new_entry()
    need = Demand(0.0, worker=worker.worker_id)
    code = rf._code
    rt.on_loop(rt.send_task, entry, code.id, code.blob, payload, need, None, 0)
    return ObjectRef._make(entry)


def _one_per_node(rt: Runtime) -> dict[NodeId, WorkerInfo]:
    """A worker of each node that takes new work. O(workers): once per call of the API."""
    placement = rt.placement
    chosen: dict[NodeId, WorkerInfo] = {}
    for wid, info in list(placement.workers.items()):
        if wid not in placement.suspended and info.env == rt.env_key:
            chosen.setdefault(info.node_id, info)
    return chosen


def run_on_each_worker(
    fn: Callable[..., Any] | RemoteFunction[..., Any], *args: Any, timeout: float | None = None
) -> dict[WorkerId, Any]:
    """``fn(*args)`` once on every worker that takes new work now; ``{worker_id: result}``.
    An error raised by one of them is raised here (``ag.RemoteError`` with its traceback);
    ``timeout`` bounds the wait (``ag.GetTimeoutError``)."""
    rt = current_runtime()
    rf = _remote_fn(fn)
    placement = rt.placement
    workers = [
        w
        for wid, w in list(placement.workers.items())
        if wid not in placement.suspended and w.env == rt.env_key
    ]
    refs = {w.worker_id: _start_on(rt, rf, w, args) for w in workers}
    values = get(list(refs.values()), timeout=timeout)
    return dict(zip(refs, values, strict=True))


def run_on_each_node(
    fn: Callable[..., Any] | RemoteFunction[..., Any],
    *args: Any,
    timeout: float | None = None,
    subscribe: bool = False,
) -> Any:
    """``fn(*args)`` once on each node of the cluster (in one of its workers);
    ``{node_id: result}``, the ids ``Cluster.nodes()`` and ``ag.NodeAffinity`` use.

    ``subscribe=True``: returns at once a ``NodeSubscription`` that runs ``fn`` on each node now
    and on every node that joins later, until ``close()`` (or the end of its ``with`` block);
    its ``results()`` waits for the calls started so far.
    """
    rt = current_runtime()
    rf = _remote_fn(fn)
    if subscribe:
        return NodeSubscription._start(rt, rf, args)
    refs = {node: _start_on(rt, rf, w, args) for node, w in _one_per_node(rt).items()}
    values = get(list(refs.values()), timeout=timeout)
    return dict(zip(refs, values, strict=True))


class NodeSubscription:
    """``run_on_each_node(fn, ..., subscribe=True)``: ``fn`` runs on each node, those joining
    later too, until ``close()``. Use from any thread."""

    _rt: Runtime
    _rf: RemoteFunction[..., Any]
    _args: tuple[Any, ...]
    _lock: threading.Lock
    _refs: dict[NodeId, ObjectRef[Any]]
    _closed: bool

    def __init__(self) -> None:
        raise TypeError("NodeSubscription is made by ag.run_on_each_node(..., subscribe=True)")

    @classmethod
    def _start(
        cls, rt: Runtime, rf: RemoteFunction[..., Any], args: tuple[Any, ...]
    ) -> NodeSubscription:
        self = cls.__new__(cls)
        self._rt = rt
        self._rf = rf
        self._args = args
        self._lock = threading.Lock()
        self._refs = {}
        self._closed = False

        def begin() -> None:
            rt.waiting.on_worker.append(self._on_worker)
            for info in _one_per_node(rt).values():
                self._on_worker(info)

        async def begin_async() -> None:
            begin()

        if rt.portal.in_loop_thread():
            begin()
        else:
            rt.portal.run(begin_async)
        return self

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<NodeSubscription {self._rf.__qualname__} nodes={len(self._refs)} {state}>"

    def _on_worker(self, info: WorkerInfo) -> None:
        """Loop: a worker takes work; the first of its node runs ``fn``."""
        if self._closed or info.node_id in self._refs or info.env != self._rt.env_key:
            return
        ref = _start_on(self._rt, self._rf, info, self._args)
        with self._lock:
            self._refs[info.node_id] = ref

    @property
    def refs(self) -> dict[NodeId, ObjectRef[Any]]:
        """The calls started so far, by node."""
        with self._lock:
            return dict(self._refs)

    def results(self, timeout: float | None = None) -> dict[NodeId, Any]:
        """``{node_id: result}`` of the calls started so far, waiting for them."""
        refs = self.refs
        values = get(list(refs.values()), timeout=timeout)
        return dict(zip(refs, values, strict=True))

    def close(self) -> None:
        """No more nodes: calls started keep running. Idempotent."""
        if self._closed:
            return
        self._closed = True
        rt = self._rt

        def end() -> None:
            if self._on_worker in rt.waiting.on_worker:
                rt.waiting.on_worker.remove(self._on_worker)

        try:
            rt.on_loop(end)
        except Exception:
            pass  # the runtime is gone, and the listener with it

    def __enter__(self) -> NodeSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
