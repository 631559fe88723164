"""The I/O shell around the backlog of calls waiting for a worker (``_scheduler/backlog.py``).

A caller's runtime puts a call here when no worker fits it now, hands out what fits when a
worker joins or is resumed, and logs the backlog's warning when it is due, with what it knows
of the cluster: the workers that take work, a lost head, and nodes whose workers all
crash-loop (from the ``worker_crash_loop`` events of the head's event feed, subscribed to the
first time a warning is due).

The hot path (a worker fits) never comes here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from .._exceptions import ActorgridError, RuntimeEnvError
from .._protocol.ids import ActorId, NodeId, short
from .._protocol.messages import ActorInfo, Event, WorkerInfo
from .._scheduler.backlog import Backlog, ClusterPicture, describe_wait
from .._scheduler.demand import Demand
from .._scheduler.placement import NoWorkerError, Placement
from .headlink import EventFeed
from .records import _Placing

__all__ = ["WorkerWait"]

log = logging.getLogger("actorgrid.runtime")

# How long subscribing to the head's events may take when a warning wants crash-loop news.
EVENTS_FOR_WARNING_TIMEOUT_S = 2.0


class WorkerWait:
    """Calls of one process waiting for a worker. Loop thread only."""

    def __init__(
        self,
        placement: Placement,
        warning_s: float,
        *,
        events: EventFeed,
        subscribe_events: Callable[[], Awaitable[object]],
        head_lost: Callable[[], str | None],
    ) -> None:
        self.placement = placement
        self.backlog: Backlog[Callable[[], None]] = Backlog(warning_s)
        self._events = events
        self._subscribe_events = subscribe_events
        self._head_lost = head_lost
        self._nursery: trio.Nursery | None = None
        self._warning = False
        # Told of each worker that takes new work (joins or is resumed): run_on_each_node's
        # subscriptions. O(listeners) per such worker.
        self.on_worker: list[Callable[[WorkerInfo], None]] = []
        # Runtime envs (by key) that could not be made ready: why, for actors that wait.
        self.env_errors: dict[str, str] = {}
        placement.on_room = self.room_freed

    def room_freed(self, worker: WorkerInfo) -> None:
        """An actor this process placed on ``worker`` ended: what waits for the room it held
        is placed again."""
        if len(self.backlog):
            for place in self.backlog.take_fitting(worker):
                place()

    def __repr__(self) -> str:
        return f"<WorkerWait {self.backlog!r}>"

    def __len__(self) -> int:
        return len(self.backlog)

    def start(self, nursery: trio.Nursery) -> None:
        """Warnings run in ``nursery`` from now on."""
        self._nursery = nursery

    def add(self, place: Callable[[], None], need: float | Demand, kind: str) -> None:
        """``place()`` once a worker that fits ``need`` takes new work; warn after
        ``pending_warning_s`` of waiting."""
        self.backlog.add(place, need, kind, trio.current_time())
        if not self._warning and self._nursery is not None:
            self._warning = True
            self._nursery.start_soon(self._warn_while_waiting)

    def worker_available(self, worker: WorkerInfo) -> None:
        """``worker`` takes new work: place what waits for it."""
        for listener in list(self.on_worker):
            try:
                listener(worker)
            except Exception:
                log.exception("a run_on_each_node subscription failed to start on a new node")
        if len(self.backlog):
            for place in self.backlog.take_fitting(worker):
                place()

    async def worker_for_actor(
        self, num_cpus: float | Demand, actor: ActorId | None = None
    ) -> WorkerInfo:
        """A worker to place an actor on, waiting until one fits (``actor``: its id, whose
        held resources placement counts there until it ends)."""
        while True:
            try:
                return self.placement.choose_for_actor(num_cpus, actor)
            except NoWorkerError:
                pass
            env = num_cpus.env if isinstance(num_cpus, Demand) else ""
            if env in self.env_errors:
                raise RuntimeEnvError(self.env_errors[env])
            fits = trio.Event()
            self.add(fits.set, num_cpus, "actor")
            await fits.wait()

    def fail_env(self, key: str, error: str) -> None:
        """Runtime env ``key`` could not be made ready: every call waiting for its workers
        fails with ``error`` (tasks at once; actors when they wake and see it)."""
        self.env_errors[key] = error
        for place in self.backlog.take_needing(lambda demand: demand.env == key):
            if isinstance(place, _Placing):
                place.entry.set_error(RuntimeEnvError(error))
            else:
                place()

    async def place_actor(self, info: ActorInfo, num_cpus: float | Demand) -> ActorInfo:
        """``info`` with an address: as it is if it has one, else once a worker fits."""
        if info.address:
            return info
        worker = await self.worker_for_actor(num_cpus, info.actor_id)
        return attrs.evolve(info, address=worker.address)

    async def _warn_while_waiting(self) -> None:
        try:
            while (due := self.backlog.warning_at()) is not None:
                await trio.sleep_until(due)
                now = trio.current_time()
                if not self.backlog.warning_due(now):
                    continue
                picture = await self._cluster_picture()
                since = self.backlog.since
                if since is not None:
                    log.warning(describe_wait(self.backlog.counts(), now - since, picture))
        finally:
            self._warning = False

    async def _cluster_picture(self) -> ClusterPicture:
        """What a warning says of the cluster. O(workers + events): for warnings only."""
        placement = self.placement
        head_lost = self._head_lost()
        crash_loops: dict[str, str] = {}
        if head_lost is None:
            if not self._events.subscribed:
                with trio.move_on_after(EVENTS_FOR_WARNING_TIMEOUT_S):
                    try:
                        await self._subscribe_events()
                    except ActorgridError:
                        pass
            with_workers = {w.node_id for w in placement.workers.values()}
            last: dict[NodeId, Event] = {}
            for event in self._events.history:
                if event.kind == "worker_crash_loop" and event.node_id is not None:
                    last[event.node_id] = event
            for node_id, event in last.items():
                if node_id not in with_workers:
                    where = f" ({event.hostname})" if event.hostname else ""
                    crash_loops[f"{short(node_id)}{where}"] = event.detail
        return ClusterPicture(
            alive=len(placement),
            suspended=len(placement.suspended),
            largest=placement.largest(),
            head_lost=head_lost,
            crash_loops=crash_loops,
            offered=placement.offered(),
            largest_share=placement.largest_share(),
            elsewhere=placement.offered_elsewhere(),
        )
