"""``ag.ActorPool``: a pool of stateful workers, one instance of a class per slot.

A class pool (``ActorPool(WorkerClass, args, kwargs, size=None, **options)``) runs jobs on
instances of ``WorkerClass``: each instance runs one job at a time, ``run(*args)``, and
between jobs the updates sent with ``update_workers``, ``handle_update(*args, **kwargs)``, in
the order sent. A handle pool (``ActorPool([handle, ...])``) is Ray's ``ActorPool`` over
actors the caller made.

Invariants of a class pool:

- a slot has at most one job in flight (``_Slot.job``); an update is sent to a slot only while
  it has none, so no instance sees an update during a job. Calls from one sender run in the
  order sent, so updates sent before a job run before it;
- ``_Slot.applied`` updates of ``_updates`` were sent to the slot's instance; a new instance
  (growth, or a replacement) starts at 0 and gets every update before its first job;
- a job whose instance died (its worker went away: ActorDiedError, WorkerDiedError) goes back
  to the front of the queue and a new instance takes the slot, so no job is lost. Instances
  are made with ``max_restarts=0`` for that reason: a restart by the runtime would run the
  job on a fresh instance before the pool could replay the updates to it;
- the pool's size is checked between jobs: ``size=None`` follows the number of alive workers
  (an O(1) read of this process's view of the cluster); a slot whose instance died is dropped
  instead of replaced while the pool is larger than that.

Completion is event-driven: a waiter on each job's ref queues it for the driving thread, so a
job costs O(1) whatever the pool's size. A pool is driven by the thread that calls it; use one
pool from one thread at a time.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence, Sized
from typing import Any, Generic, TypeVar

import trio

from .._exceptions import ActorDiedError, WorkerDiedError
from .._node.records import NodeStatistics
from .._protocol.ids import NodeId
from .._runtime.api import kill
from .._runtime.core import current_runtime
from .._runtime.demands import NodeAffinity
from .._runtime.handles import ActorHandle
from .._runtime.refs import ObjectRef
from .._runtime.remote import ActorClass, remote
from .allocate import Allocation
from .progress import open_progress

__all__ = ["ActorPool"]

T = TypeVar("T")

GROWTH_CHECK_S = 1.0  # how long a busy pool may go without noticing a worker that joined
# A job whose instance died this many times is failed with the last error rather than run
# again: an instance that cannot start (its __init__ raises) must not loop forever.
MAX_DEATHS_PER_JOB = 3
_DIED = (ActorDiedError, WorkerDiedError)
_END = object()

Job = tuple[int, tuple[Any, ...], dict[str, Any]]  # (index, args, kwargs)


class _Slot:
    __slots__ = ("applied", "handle", "job", "node", "owner", "ref")

    def __init__(self, handle: ActorHandle[Any], node: NodeId | None = None) -> None:
        self.handle = handle
        self.node = node  # the node an allocation filter gave it
        self.applied = 0
        self.job: Job | None = None
        self.ref: ObjectRef[Any] | None = None
        self.owner: object = None  # the _run call whose job this is; None for submit()


class _Finished:
    """Waiter on a job's ref (runs on the runtime's loop): queues the slot for the driver."""

    __slots__ = ("pool", "slot")

    def __init__(self, pool: ActorPool[Any], slot: _Slot) -> None:
        self.pool = pool
        self.slot = slot

    def set(self) -> None:
        with self.pool._cond:
            self.pool._finished.setdefault(self.slot.owner, deque()).append(self.slot)
            self.pool._cond.notify_all()


class ActorPool(Generic[T]):
    """A pool of ``WorkerClass`` instances (the GPU worker pool), or of given actor handles.

    ``ActorPool(WorkerClass, args=(), kwargs=None, *, size=None, **options)``: one instance per
    slot, made with ``WorkerClass.options(**options).remote(*args, **kwargs)``; ``size=None``
    means one per alive worker of the cluster, growing as workers join. Jobs:

    - ``map(items)``: ``instance.run(item)`` for each item, results in input order;
    - ``imap_unordered(items)``: the same, results as they finish;
    - ``starmap(items)``: ``instance.run(*item)``;
    - ``submit(*args, **kwargs)``: one ``instance.run(*args, **kwargs)``, an ObjectRef;
    - ``update_workers(*args, **kwargs)``: ``handle_update(*args, **kwargs)`` on every
      instance, now on idle ones and after its current job on busy ones, in the order sent,
      and on instances added later before their first job.

    An instance whose worker dies is replaced and its job (from map, imap_unordered or
    starmap) runs again on another; an error raised by ``run`` is raised to the caller.

    ``ActorPool([handle, ...])``: Ray's ActorPool: ``map(fn, values)``,
    ``map_unordered(fn, values)``, ``submit(fn, value)``, ``get_next()``,
    ``get_next_unordered()``, ``has_next()``, where ``fn(actor, value)`` returns a ref.
    """

    def __init__(
        self,
        worker_class: type[T] | ActorClass[T] | Sequence[ActorHandle[T]],
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        size: int | None = None,
        allocate: Callable[[NodeStatistics], int] | None = None,
        **options: Any,
    ) -> None:
        self._rt = current_runtime()
        self._cond = threading.Condition()
        self._finished: dict[object, deque[_Slot]] = {}  # by owner (a _run call, or None)
        self._slots: list[_Slot] = []
        self._idle: deque[_Slot] = deque()
        self._updates: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self._closed = False
        self._handles_mode = isinstance(worker_class, (list, tuple))
        if self._handles_mode:
            from .handlepool import HandlePool

            self._handle_pool: HandlePool | None = HandlePool(list(worker_class))  # type: ignore[arg-type]
            return
        self._handle_pool = None
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be a positive int or None (one per worker), not {size!r}")
        if not isinstance(worker_class, (type, ActorClass)):
            raise TypeError(
                "ActorPool takes a worker class (plain or @ag.remote) or a list of actor "
                f"handles, not {type(worker_class).__name__} {worker_class!r}"
            )
        if options.get("name") is not None or options.get("get_if_exists"):
            raise ValueError(
                "the instances of an ActorPool are anonymous (one name cannot belong to "
                "several actors): drop name= and get_if_exists="
            )
        cls: ActorClass[Any] = (
            worker_class if isinstance(worker_class, ActorClass) else remote(worker_class)
        )
        if "run" not in cls._methods:
            raise TypeError(
                f"{cls.__qualname__} has no method run(): a pool calls instance.run(*item) for "
                "each job (and handle_update(...) for update_workers)"
            )
        # max_restarts=0 whatever the options say: the pool replaces instances itself.
        self._cls: ActorClass[Any] = cls.options(**{**options, "max_restarts": 0})
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self._size = size
        # Who to count for size=None: the workers that fit the instances' options (those
        # with a GPU for num_gpus=1: one instance per GPU).
        self._demand = self._cls._options.demand(self._cls._options.num_cpus or 0.0)
        self._allocation = None if allocate is None else Allocation(self._rt, allocate)
        if allocate is not None and size is not None:
            raise ValueError("pass size= or allocate=, not both: allocate decides the size")
        self._grow()

    def __repr__(self) -> str:
        if self._handle_pool is not None:
            return repr(self._handle_pool)
        busy = len(self._slots) - len(self._idle)
        return (
            f"<ag.ActorPool {self._cls.__qualname__} instances={len(self._slots)} busy={busy} "
            f"updates={len(self._updates)}{' closed' if self._closed else ''}>"
        )

    # --- slots -------------------------------------------------------------------------------

    def _target(self) -> int:
        if self._size is not None:
            return self._size
        if self._allocation is not None:
            return sum(self._allocation.plan.values())
        if self._demand.plain:
            return max(1, len(self._rt.placement))
        return max(1, len(self._rt.placement.eligible(self._demand)))

    def _grow(self) -> None:
        if self._allocation is not None:
            self._grow_allocated(self._allocation.refresh())
            return
        while len(self._slots) < self._target():
            slot = _Slot(self._cls.remote(*self._args, **self._kwargs))
            self._slots.append(slot)
            self._make_idle(slot)

    def _grow_allocated(self, plan: dict[NodeId, int]) -> None:
        """Instances on each node up to what the allocation filter gave it."""
        placed: dict[NodeId | None, int] = {}
        for slot in self._slots:
            placed[slot.node] = placed.get(slot.node, 0) + 1
        for node, n in plan.items():
            pinned = self._cls.options(scheduling_strategy=NodeAffinity(node))
            for _ in range(n - placed.get(node, 0)):
                slot = _Slot(pinned.remote(*self._args, **self._kwargs), node)
                self._slots.append(slot)
                self._make_idle(slot)

    def _make_idle(self, slot: _Slot) -> None:
        """Between jobs: bring the instance up to date, then offer it for the next job."""
        slot.job = slot.ref = slot.owner = None
        if "handle_update" in self._cls._methods:
            while slot.applied < len(self._updates):
                args, kwargs = self._updates[slot.applied]
                slot.handle.handle_update.remote(*args, **kwargs)
                slot.applied += 1
        self._idle.append(slot)

    def _replace(self, slot: _Slot) -> None:
        self._slots.remove(slot)
        try:
            kill(slot.handle)
        except Exception:
            pass  # it is gone already, which is why it is replaced
        self._grow()

    def _send(self, slot: _Slot, job: Job) -> None:
        try:
            ref = slot.handle.run.remote(*job[1], **job[2])
        except Exception:  # the arguments do not bind or pickle: the slot stays free
            slot.owner = None
            self._idle.appendleft(slot)
            raise
        slot.job = job
        slot.ref = ref
        if not ref._entry.add_waiter(_Finished(self, slot)):
            _Finished(self, slot).set()

    def _drain_submitted(self) -> None:
        """Take back the slots whose submit() job finished (those of a running map stay)."""
        with self._cond:
            finished = self._finished.pop(None, deque())
        for slot in finished:
            if slot in self._slots:
                if slot.ref is not None and isinstance(slot.ref._entry.error, _DIED):
                    self._replace(slot)
                else:
                    self._make_idle(slot)

    def _next_finished(self, owner: object) -> _Slot | None:
        with self._cond:
            if not self._finished.get(owner):
                self._cond.wait_for(lambda: self._finished.get(owner), GROWTH_CHECK_S)
            queue = self._finished.get(owner)
            return queue.popleft() if queue else None

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the ActorPool is closed")
        if self._handle_pool is not None:
            raise TypeError(
                "this ActorPool was made from actor handles: use map(fn, values), "
                "map_unordered(fn, values), submit(fn, value) and get_next()"
            )

    # --- jobs --------------------------------------------------------------------------------

    def _run(
        self, jobs: Iterable[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> Iterator[tuple[int, bool, Any]]:
        """Run ``jobs`` on the pool; yield (index, ok, value or error) as they finish."""
        self._check_open()
        if trio.lowlevel.in_trio_run():
            raise RuntimeError(
                "ActorPool.map/starmap/imap_unordered block, and this thread runs a Trio loop; "
                "use `await pool.map_async(items)` or `async for x in "
                "pool.imap_unordered_async(items)` there instead"
            )
        source = iter(enumerate(jobs))
        retry: deque[Job] = deque()
        deaths: dict[int, int] = {}  # job index -> instances that died running it
        me = object()
        running = 0
        exhausted = False
        try:
            while True:
                self._grow()  # between jobs: O(1) unless the cluster grew
                while self._idle and not (exhausted and not retry):
                    if retry:
                        todo = retry.popleft()
                    else:
                        nxt = next(source, None)
                        if nxt is None:
                            exhausted = True
                            break
                        index, (args, kwargs) = nxt
                        todo = (index, args, kwargs)
                    free = self._idle.popleft()
                    free.owner = me
                    self._send(free, todo)
                    running += 1
                if exhausted and not retry and not running:
                    return
                self._drain_submitted()
                slot = self._next_finished(me)
                if slot is None:
                    continue
                running -= 1
                job, ref = slot.job, slot.ref
                assert job is not None and ref is not None
                try:
                    value = ref._entry.value()
                except _DIED as exc:
                    self._replace(slot)
                    deaths[job[0]] = deaths.get(job[0], 0) + 1
                    if deaths[job[0]] <= MAX_DEATHS_PER_JOB:
                        retry.append(job)
                        continue
                    yield job[0], False, exc
                    continue
                except Exception as exc:
                    self._make_idle(slot)
                    yield job[0], False, exc
                    continue
                self._make_idle(slot)
                yield job[0], True, value
        finally:
            # Abandoned (the caller stopped iterating, or raised): jobs still running become
            # like submit()'s, so their instances come back when they finish.
            with self._cond:
                for slot in self._slots:
                    if slot.owner is me:
                        slot.owner = None
                left = self._finished.pop(me, None)
                if left:
                    self._finished.setdefault(None, deque()).extend(left)

    def map(
        self,
        items: Iterable[Any],
        values: Iterable[Any] | None = None,
        *,
        progress: bool | None = None,
    ) -> Any:
        """``instance.run(item)`` for every item; the results in the order of ``items``, as a
        list. A pool of handles: ``map(fn, values)``, an iterator, as Ray's. ``progress``:
        draw a progress bar on stderr (None: only when it is a terminal)."""
        if self._handle_pool is not None:
            if values is None or not callable(items):
                raise TypeError("a pool of actor handles maps with map(fn, values)")
            return self._handle_pool.map(items, values)
        if values is not None:
            raise TypeError("map(items) takes one iterable; for several arguments use starmap")
        return self._ordered((((item,), {}) for item in items), items, progress)

    def starmap(self, items: Iterable[Iterable[Any]], *, progress: bool | None = None) -> list[Any]:
        """``instance.run(*item)`` for every item; the results in order."""
        return self._ordered(((tuple(item), {}) for item in items), items, progress)

    def _ordered(
        self, jobs: Iterable[tuple[tuple[Any, ...], dict[str, Any]]], items: Any, progress: Any
    ) -> list[Any]:
        total = len(items) if isinstance(items, Sized) else None
        bar = open_progress(
            progress, total, f"ag.ActorPool {getattr(self._cls, '__qualname__', 'map')}"
        )
        results: dict[int, Any] = {}
        try:
            for index, ok, value in self._run(jobs):
                if not ok:
                    raise value
                results[index] = value
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return [results[i] for i in range(len(results))]

    def imap_unordered(
        self, items: Iterable[Any], *, progress: bool | None = None
    ) -> Generator[Any, None, None]:
        """``instance.run(item)`` for every item, yielding results as they finish. The caller
        may ``update_workers`` between results: busy instances get it after their job."""
        total = len(items) if isinstance(items, Sized) else None
        bar = open_progress(
            progress, total, f"ag.ActorPool {getattr(self._cls, '__qualname__', 'map')}"
        )
        try:
            for _, ok, value in self._run(((item,), {}) for item in items):
                if not ok:
                    raise value
                if bar is not None:
                    bar.update(1)
                yield value
        finally:
            if bar is not None:
                bar.close()

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """One ``instance.run(*args, **kwargs)`` on an idle instance (or the next to be free),
        as an ObjectRef. Unlike map's jobs, it is not run again if its instance dies.
        A pool of handles: ``submit(fn, value)``, as Ray's (results from ``get_next``)."""
        if self._handle_pool is not None:
            self._handle_pool.submit(*args, **kwargs)
            return None
        self._check_open()
        if self._size is None:
            self._grow()
        self._drain_submitted()
        if self._idle:
            slot = self._idle.popleft()
        else:  # every instance is busy: queue behind the least recently started job
            slot = self._slots[0]
            self._slots.append(self._slots.pop(0))
            return slot.handle.run.remote(*args, **kwargs)
        self._send(slot, (-1, args, kwargs))
        assert slot.ref is not None
        return slot.ref

    def update_workers(self, *args: Any, **kwargs: Any) -> None:
        """``handle_update(*args, **kwargs)`` on every instance, between jobs, in order."""
        self._check_open()
        if "handle_update" not in self._cls._methods:
            raise TypeError(f"{self._cls.__qualname__} has no method handle_update")
        self._updates.append((args, kwargs))
        for slot in list(self._idle):
            while slot.applied < len(self._updates):
                a, k = self._updates[slot.applied]
                slot.handle.handle_update.remote(*a, **k)
                slot.applied += 1

    # --- Trio ------------------------------------------------------------------------------

    async def map_async(self, items: Iterable[Any]) -> list[Any]:
        """``map`` for Trio code: the pool is driven from a worker thread, the loop stays free."""
        return await trio.to_thread.run_sync(self.map, list(items))

    async def starmap_async(self, items: Iterable[Iterable[Any]]) -> list[Any]:
        return await trio.to_thread.run_sync(self.starmap, list(items))

    async def imap_unordered_async(self, items: Iterable[Any]) -> AsyncIterator[Any]:
        """``async for x in pool.imap_unordered_async(items)``: results as they finish; the
        body may ``update_workers`` between them."""
        results = self.imap_unordered(list(items))
        try:
            while True:
                value = await trio.to_thread.run_sync(next, results, _END)
                if value is _END:
                    return
                yield value
        finally:
            await trio.to_thread.run_sync(results.close)

    # --- introspection and lifecycle ---------------------------------------------------------

    def workers_count(self) -> int:
        """Instances in the pool now."""
        if self._handle_pool is not None:
            return self._handle_pool.size
        return len(self._slots)

    def nodes_count(self) -> int:
        """Nodes of the cluster with an alive worker the pool can use."""
        placement = self._rt.placement
        suspended = placement.suspended
        return len(
            {w.node_id for wid, w in list(placement.workers.items()) if wid not in suspended}
        )

    def close(self) -> None:
        """Stop every instance; jobs still running are abandoned. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for slot in self._slots:
            try:
                kill(slot.handle)
            except Exception:
                pass  # already gone
        self._slots.clear()
        self._idle.clear()

    def __enter__(self) -> ActorPool[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle_pool is None:
            self.close()

    # --- Ray's ActorPool over given handles ---------------------------------------------------

    def _handles(self) -> Any:
        if self._handle_pool is None:
            raise TypeError("this method belongs to a pool made from actor handles")
        return self._handle_pool

    def map_unordered(self, fn: Any, values: Iterable[Any]) -> Iterator[Any]:
        return self._handles().map_unordered(fn, values)  # type: ignore[no-any-return]

    def get_next(self, timeout: float | None = None) -> Any:
        return self._handles().get_next(timeout)

    def get_next_unordered(self, timeout: float | None = None) -> Any:
        return self._handles().get_next_unordered(timeout)

    def has_next(self) -> bool:
        return self._handles().has_next()  # type: ignore[no-any-return]
