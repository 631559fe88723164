"""Caller-side placement of tasks and actors.

Each caller (driver or worker) places its own calls directly on workers, so the head is never
on the path of a call. The choice is "power of two choices" on this caller's own outstanding
load: two random eligible workers are sampled and the less loaded one wins. That is O(1) per
call however large the cluster, and with one busy caller it balances almost as well as
least-loaded.
"""

from __future__ import annotations

import random

from .._exceptions import NoWorkerError
from .._protocol.ids import WorkerId
from .._protocol.messages import WorkerInfo

__all__ = ["NoWorkerError", "Placement"]

_SAMPLES = 8  # random probes before falling back to a scan for a rare large request


class Placement:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._order: list[WorkerId] = []
        self._index: dict[WorkerId, int] = {}
        self.workers: dict[WorkerId, WorkerInfo] = {}
        self.load: dict[WorkerId, int] = {}  # tasks this caller has outstanding there
        self.actors: dict[WorkerId, int] = {}  # actors this caller placed there
        self.suspended: set[WorkerId] = set()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, info: WorkerInfo) -> None:
        wid = info.worker_id
        if wid in self._index or wid in self.suspended:
            self.workers[wid] = info
            return
        self._index[wid] = len(self._order)
        self._order.append(wid)
        self.workers[wid] = info
        self.load.setdefault(wid, 0)
        self.actors.setdefault(wid, 0)

    def remove(self, worker_id: WorkerId) -> None:
        self._unlist(worker_id)
        self.suspended.discard(worker_id)
        self.workers.pop(worker_id, None)
        self.load.pop(worker_id, None)
        self.actors.pop(worker_id, None)

    def set_suspended(self, worker_id: WorkerId, suspended: bool) -> None:
        """A suspended worker keeps its calls in flight but is chosen for nothing new."""
        if worker_id not in self.workers:
            return
        if suspended:
            self.suspended.add(worker_id)
            self._unlist(worker_id)
        elif worker_id in self.suspended:
            self.suspended.discard(worker_id)
            self._index[worker_id] = len(self._order)
            self._order.append(worker_id)

    def _unlist(self, worker_id: WorkerId) -> None:
        i = self._index.pop(worker_id, None)
        if i is None:
            return
        last = self._order.pop()
        if last != worker_id:  # swap-remove keeps removal O(1)
            self._order[i] = last
            self._index[last] = i

    def choose_for_task(self, num_cpus: float) -> WorkerInfo:
        return self.workers[self._choose(num_cpus, self.load)]

    def choose_for_actor(self, num_cpus: float) -> WorkerInfo:
        wid = self._choose(num_cpus, self.actors)
        self.actors[wid] = self.actors.get(wid, 0) + 1
        return self.workers[wid]

    def started(self, worker_id: WorkerId) -> None:
        if worker_id in self.load:
            self.load[worker_id] += 1

    def finished(self, worker_id: WorkerId) -> None:
        if self.load.get(worker_id, 0) > 0:
            self.load[worker_id] -= 1

    def _choose(self, num_cpus: float, counts: dict[WorkerId, int]) -> WorkerId:
        order = self._order
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
        fits = [
            w
            for w in (order[self._rng.randrange(len(order))] for _ in range(_SAMPLES))
            if self.workers[w].num_cpus >= num_cpus
        ]
        fits = list(dict.fromkeys(fits))  # two distinct choices, where there are two
        if len(fits) < 2:
            fits = list(
                dict.fromkeys(fits + [w for w in order if self.workers[w].num_cpus >= num_cpus][:2])
            )
        if not fits:
            largest = max(self.workers[w].num_cpus for w in order)
            raise NoWorkerError(
                f"no worker offers num_cpus={num_cpus:g}; the largest worker has "
                f"{largest:g}. Lower num_cpus in .options() or start bigger workers"
            )
        a, b = fits[0], fits[1] if len(fits) > 1 else fits[0]
        return a if counts.get(a, 0) <= counts.get(b, 0) else b
