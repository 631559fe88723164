"""Caller-side placement of tasks and actors.

Each caller (driver or worker) places its own calls directly on workers, so the head is never
on the path of a call. The choice is "power of two choices" on this caller's own outstanding
load: two random eligible workers are sampled and the less loaded one wins. That is O(1) per
call however large the cluster, and with one busy caller it balances almost as well as
least-loaded.

A caller that is itself a worker also knows how busy it is (``local_load``: the CPUs its own
tasks hold and the tasks queued there), so a task started by a busy task goes to another
worker rather than queueing behind its parent; that costs one call, only when the caller's
own worker is one of the two sampled.

A call that asks for more than CPUs (a ``Demand`` with resources, a label selector, a node
affinity or SPREAD) chooses among the workers that fit it. Those are indexed by demand: the
first call of a demand lists them (O(workers), once), membership changes keep every listed
demand up to date (O(demands listed) per join, O(workers) per leave), so later calls of that
demand cost the same O(1) as plain ones. SPREAD takes the eligible nodes round-robin, then the
less loaded of two workers there.

Workers of another runtime_env than the caller's own (``env``) that its calls use
(``.options(runtime_env=)``) are kept apart: only a demand naming their environment chooses
among them, so plain calls, and their O(1) path, never see them.

Held resources (``memory=``, ``num_gpus=``, custom ones) are counted by the worker that holds
them, and placement sees the holds of the actors this caller placed (``hold``/``release_actor``,
until they end): among the workers that fit a demand with resources, those with room left for
it (what they offer less what this caller's actors hold there) are chosen first, so a second
memory-holding actor goes to a free worker rather than wait behind the first on its worker.
Only when none has room does it go where the load is lowest, to wait there for the holder to
end (as two actors on the one camera do). Holds of actors other callers placed are not seen
(the worker's own ledger still makes them wait for each other). Looking for room costs at most
``_ROOM_PROBES`` workers per call, whatever the size of the cluster.

When every worker that fits such a demand (no more than ``_ROOM_PROBES`` of them) is full of
this caller's holds, placement raises NoWorkerError: the call waits in the caller's backlog,
not on a worker, so it goes wherever room comes first, a worker that joins or one whose
holder ends (``on_room``, called when ``release_actor`` frees a hold). A hold outlives its
actor only when another process ended it (``Cluster.kill_actor``); then this caller's calls
that need that resource wait for a worker that joins, and the pending warning says so.

Placement raises NoWorkerError when no worker fits now; the caller's runtime then keeps the
call waiting (``_scheduler/backlog.py``) until one does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable

from .._exceptions import NoWorkerError
from .._protocol.ids import NodeId, WorkerId
from .._protocol.messages import WorkerInfo
from .demand import Demand

__all__ = ["NoWorkerError", "Placement"]

_SAMPLES = 8  # random probes before falling back to a scan for a rare large request
# Workers of a demand with resources looked at for room left, per call (all of them when there
# are no more than this).
_ROOM_PROBES = 16
# Distinct non-plain demands whose eligible workers are kept listed; past it the lists start
# afresh (a program with more distinct demands than this pays a scan per new one).
_DEMANDS_MAX = 256


class _Eligible:
    """The workers that fit one demand, and where SPREAD goes next."""

    __slots__ = ("by_node", "cursor", "nodes", "workers")

    def __init__(self) -> None:
        self.workers: list[WorkerId] = []
        self.by_node: dict[NodeId, list[WorkerId]] = {}
        self.nodes: list[NodeId] = []
        self.cursor = 0

    def add(self, info: WorkerInfo) -> None:
        self.workers.append(info.worker_id)
        on_node = self.by_node.get(info.node_id)
        if on_node is None:
            on_node = self.by_node[info.node_id] = []
            self.nodes.append(info.node_id)
        on_node.append(info.worker_id)

    def discard(self, info: WorkerInfo) -> None:
        if info.worker_id not in self.workers:
            return
        self.workers.remove(info.worker_id)
        on_node = self.by_node[info.node_id]
        on_node.remove(info.worker_id)
        if not on_node:
            del self.by_node[info.node_id]
            self.nodes.remove(info.node_id)


class Placement:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._order: list[WorkerId] = []
        self._index: dict[WorkerId, int] = {}
        self.workers: dict[WorkerId, WorkerInfo] = {}
        self.load: dict[WorkerId, int] = {}  # tasks this caller has outstanding there
        self.actors: dict[WorkerId, int] = {}  # actors this caller placed there
        self.suspended: set[WorkerId] = set()
        # The worker this caller runs on (None in a driver), and how busy it is now.
        self.local: WorkerId | None = None
        self.local_load: Callable[[], float] | None = None
        self._eligible: dict[Demand, _Eligible] = {}
        # The caller's own runtime_env, and the workers of others its calls use (listed
        # only for demands that name their env, never in ``_order``).
        self.env = ""
        self._foreign: dict[WorkerId, None] = {}
        # What the live actors this caller placed hold, by worker, and where each one is.
        self.holding: dict[WorkerId, dict[str, float]] = {}
        self._holders: dict[Hashable, tuple[WorkerId, tuple[tuple[str, float], ...]]] = {}
        self._held_on: dict[WorkerId, set[Hashable]] = {}
        # Told of a worker where an ended actor's hold was freed (loop thread only).
        self.on_room: Callable[[WorkerInfo], None] | None = None

    def __len__(self) -> int:
        return len(self._order)

    def add(self, info: WorkerInfo) -> None:
        wid = info.worker_id
        if wid in self._index or wid in self._foreign or wid in self.suspended:
            self.workers[wid] = info
            return
        self.workers[wid] = info
        self.load.setdefault(wid, 0)
        self.actors.setdefault(wid, 0)
        self._take(info)

    def _take(self, info: WorkerInfo) -> None:
        """``info`` takes new work from now on."""
        if info.env != self.env:
            self._foreign[info.worker_id] = None
        else:
            self._index[info.worker_id] = len(self._order)
            self._order.append(info.worker_id)
        if self._eligible:
            self._list_eligible(info)

    def _fits(self, demand: Demand, info: WorkerInfo) -> bool:
        return demand.fits(info) and (demand.env or self.env) == info.env

    def _list_eligible(self, info: WorkerInfo) -> None:
        for demand, eligible in self._eligible.items():
            if self._fits(demand, info):
                eligible.add(info)

    def remove(self, worker_id: WorkerId) -> None:
        self._unlist(worker_id)
        self.suspended.discard(worker_id)
        self.workers.pop(worker_id, None)
        self.load.pop(worker_id, None)
        self.actors.pop(worker_id, None)
        self.holding.pop(worker_id, None)
        for actor in self._held_on.pop(worker_id, ()):  # its actors ended with it
            del self._holders[actor]

    def set_suspended(self, worker_id: WorkerId, suspended: bool) -> None:
        """A suspended worker keeps its calls in flight but is chosen for nothing new. A
        worker may be suspended before it is added (it joins a suspended node)."""
        if worker_id not in self.workers:
            if suspended:
                self.suspended.add(worker_id)
            else:
                self.suspended.discard(worker_id)
            return
        if suspended:
            self.suspended.add(worker_id)
            self._unlist(worker_id)
        elif worker_id in self.suspended:
            self.suspended.discard(worker_id)
            self._take(self.workers[worker_id])

    def _unlist(self, worker_id: WorkerId) -> None:
        i = self._index.pop(worker_id, None)
        foreign = worker_id in self._foreign
        self._foreign.pop(worker_id, None)
        if i is None and not foreign:
            return
        if self._eligible and (info := self.workers.get(worker_id)) is not None:
            for eligible in self._eligible.values():
                eligible.discard(info)
        if i is None:
            return
        last = self._order.pop()
        if last != worker_id:  # swap-remove keeps removal O(1)
            self._order[i] = last
            self._index[last] = i

    def choose_for_task(self, need: float | Demand) -> WorkerInfo:
        return self.workers[self._choose(need, self.load)]

    def choose_for_actor(self, need: float | Demand, actor: Hashable = None) -> WorkerInfo:
        """A worker for a new actor (or a new incarnation of ``actor``: what its last one held
        is released). ``actor``'s held resources count there until ``release_actor``."""
        if actor is not None:
            self.release_actor(actor, notify=False)  # its last incarnation is over
        wid = self._choose(need, self.actors)
        self.actors[wid] = self.actors.get(wid, 0) + 1
        if actor is not None and isinstance(need, Demand) and need.resources:
            self.hold(actor, wid, need.resources)
        return self.workers[wid]

    def hold(
        self, actor: Hashable, worker_id: WorkerId, held: tuple[tuple[str, float], ...]
    ) -> None:
        """``actor``, placed on ``worker_id``, holds ``held`` there until it ends."""
        self.release_actor(actor)
        self._holders[actor] = (worker_id, held)
        self._held_on.setdefault(worker_id, set()).add(actor)
        on = self.holding.setdefault(worker_id, {})
        for name, amount in held:
            on[name] = on.get(name, 0.0) + amount

    def release_actor(self, actor: Hashable, *, notify: bool = True) -> None:
        """``actor`` ended (killed, dead, or being placed again): what it held is free, and
        ``on_room`` is told (``notify``). A no-op for an actor that holds nothing, so every
        ending may call it."""
        found = self._holders.pop(actor, None)
        if found is None:
            return
        worker_id, held = found
        actors = self._held_on.get(worker_id)
        if actors is not None:
            actors.discard(actor)
            if not actors:
                del self._held_on[worker_id]
        on = self.holding.get(worker_id)
        if on is None:
            return
        for name, amount in held:
            left = on.get(name, 0.0) - amount
            if left > 1e-9:
                on[name] = left
            else:
                on.pop(name, None)
        if not on:
            del self.holding[worker_id]
        info = self.workers.get(worker_id)
        if notify and self.on_room is not None and info is not None:
            self.on_room(info)

    def _has_room(self, worker_id: WorkerId, demand: Demand) -> bool:
        held = self.holding.get(worker_id)
        if not held:
            return True
        offered = dict(self.workers[worker_id].resources)
        return all(
            offered.get(name, 0.0) - held.get(name, 0.0) >= amount - 1e-9
            for name, amount in demand.resources
        )

    def _with_room(self, pool: list[WorkerId], demand: Demand) -> list[WorkerId]:
        """The workers of ``pool`` with room for ``demand``'s resources beside what this
        caller's actors hold there. NoWorkerError when none has (the call waits for room in
        the backlog); of a pool larger than the probes, all of it (it waits on one)."""
        if len(pool) > _ROOM_PROBES:
            roomy = [w for w in self._rng.sample(pool, _ROOM_PROBES) if self._has_room(w, demand)]
            return roomy or pool
        roomy = [w for w in pool if self._has_room(w, demand)]
        if not roomy:
            raise NoWorkerError(
                f"every worker that offers {demand.describe()} has it held by actors this "
                "process placed; it waits for one of them to end, or for a worker to join"
            )
        return roomy

    def started(self, worker_id: WorkerId) -> None:
        if worker_id in self.load:
            self.load[worker_id] += 1

    def finished(self, worker_id: WorkerId) -> None:
        if self.load.get(worker_id, 0) > 0:
            self.load[worker_id] -= 1

    def _choose(self, need: float | Demand, counts: dict[WorkerId, int]) -> WorkerId:
        order = self._order
        if isinstance(need, Demand):
            if (order or self._foreign) and not need.plain:
                return self._choose_among(need, counts)
            num_cpus = need.num_cpus
        else:
            num_cpus = need  # a number of CPUs
        if not order:
            if self.suspended:
                raise NoWorkerError(
                    f"every worker of the cluster ({len(self.suspended)}) is suspended: "
                    "resume one with Cluster.resume()"
                )
            raise NoWorkerError(
                "no worker is connected to the cluster: start one (ag.init() starts them for "
                "an embedded cluster; `actorgrid node` joins a machine to a running one)"
            )
        if len(order) <= _SAMPLES:
            # A small cluster: look at every worker (as cheap as sampling), two distinct ones.
            workers = self.workers
            fits = [w for w in order if workers[w].num_cpus >= num_cpus]
            if len(fits) > 1:
                # Two distinct random ones, in random order (ties go to the first), without
                # Random.sample's set and list on every call.
                rand = self._rng.random
                i = int(rand() * len(fits))
                j = int(rand() * (len(fits) - 1))
                return self._less_loaded_of_two(fits[i], fits[j + (j >= i)], counts)
        else:
            fits = [
                w
                for w in (order[self._rng.randrange(len(order))] for _ in range(_SAMPLES))
                if self.workers[w].num_cpus >= num_cpus
            ]
        if len(fits) < 2:
            fits += [w for w in order if self.workers[w].num_cpus >= num_cpus][:2]
        if not fits:
            largest = max(self.workers[w].num_cpus for w in order)
            raise NoWorkerError(
                f"no worker offers num_cpus={num_cpus:g}; the largest worker has "
                f"{largest:g}. Lower num_cpus in .options() or start bigger workers"
            )
        return self._less_loaded(fits, counts)

    def eligible(self, demand: Demand) -> list[WorkerId]:
        """The workers that take new work and fit ``demand`` (a live list: do not change it)."""
        return self._listed(demand).workers

    def _listed(self, demand: Demand) -> _Eligible:
        eligible = self._eligible.get(demand)
        if eligible is None:
            if len(self._eligible) >= _DEMANDS_MAX:
                self._eligible.clear()
            eligible = self._eligible[demand] = _Eligible()
            for wid in (*self._order, *self._foreign):  # once per demand, not per call
                info = self.workers[wid]
                if self._fits(demand, info):
                    eligible.add(info)
        return eligible

    def _choose_among(self, demand: Demand, counts: dict[WorkerId, int]) -> WorkerId:
        if demand.worker is not None:  # one given worker: no list to keep
            info = self.workers.get(demand.worker)
            listed = demand.worker in self._index or demand.worker in self._foreign
            if listed and info is not None and self._fits(demand, info):
                return demand.worker
            raise NoWorkerError(f"worker {demand.worker.hex()[:8]} takes no new work now")
        eligible = self._listed(demand)
        if not eligible.workers and demand.node is not None and demand.soft:
            eligible = self._listed(demand.without_affinity())
        if not eligible.workers:
            raise NoWorkerError(
                f"no worker of the cluster offers {demand.describe()}; it waits for one"
            )
        if demand.spread:
            node = eligible.nodes[eligible.cursor % len(eligible.nodes)]
            eligible.cursor += 1
            pool = eligible.by_node[node]
        else:
            pool = eligible.workers
        if demand.resources and self.holding:
            pool = self._with_room(pool, demand)
        if len(pool) <= 2:
            return self._less_loaded(pool, counts)
        return self._less_loaded(self._rng.sample(pool, 2), counts)

    def _less_loaded(self, fits: list[WorkerId], counts: dict[WorkerId, int]) -> WorkerId:
        a = fits[0]
        b = next((w for w in fits if w != a), a)  # two distinct workers where there are two
        if a == b:
            return a
        return self._less_loaded_of_two(a, b, counts)

    def _less_loaded_of_two(
        self, a: WorkerId, b: WorkerId, counts: dict[WorkerId, int]
    ) -> WorkerId:
        load_a: float = counts.get(a, 0)
        load_b: float = counts.get(b, 0)
        if self.local_load is not None and counts is self.load:
            if a == self.local:
                load_a += self.local_load()
            elif b == self.local:
                load_b += self.local_load()
        return a if load_a <= load_b else b

    def offered(self) -> dict[str, float]:
        """What the workers that take new work offer in all, by resource ("CPU" too).
        O(workers): for warnings, never per call."""
        total: dict[str, float] = {}
        for wid in self._order:
            info = self.workers[wid]
            total["CPU"] = total.get("CPU", 0.0) + info.num_cpus
            for name, amount in info.resources:
                total[name] = total.get(name, 0.0) + amount
        return total

    def offered_elsewhere(self) -> dict[str, float]:
        """What the workers of other runtime_envs than this caller's offer in all, by
        resource: GPUs and custom resources they hold are not its workers'. O(workers): for
        warnings, never per call."""
        total: dict[str, float] = {}
        for wid in self._foreign:
            for name, amount in self.workers[wid].resources:
                total[name] = total.get(name, 0.0) + amount
        return total

    def largest_share(self) -> dict[str, float]:
        """The most of each resource one worker that takes new work offers. O(workers):
        for warnings, never per call."""
        most: dict[str, float] = {}
        for wid in self._order:
            for name, amount in self.workers[wid].resources:
                most[name] = max(most.get(name, 0.0), amount)
        return most

    def largest(self) -> float:
        """CPUs of the largest worker that takes new work (0: none). O(workers): for
        warnings, never per call."""
        return max((self.workers[w].num_cpus for w in self._order), default=0.0)
