"""Calls waiting for a worker that fits, and the warning that says what they wait for.

A task or an actor submitted while no worker can take it (the cluster is starting, its workers
are restarting, every worker is suspended, or none is big enough yet: a bigger node may join)
waits here, as in Ray, rather than failing. Nothing here ever fails a call: ``ag.get(timeout=)``
bounds a caller's wait, ``ag.cancel`` ends a call.

Invariants:

- An item is handed out at most once, by ``take_fitting`` for a worker big enough for it;
  among items of one need, in the order they came.
- The warning is due ``warning_s`` after the backlog last became non-empty, then at doubling
  intervals while it stays non-empty, so a long outage logs a few lines, not one per second.

Costs: ``add`` is O(1); ``take_fitting`` is O(distinct needs + items handed out), so a new
worker costs nothing for a backlog that still does not fit it; ``remove_where`` (cancels) is
O(items). The backlog holds items only
while no worker fits: the hot path (a worker fits) never touches it. Never reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from .._protocol.messages import WorkerInfo
from .demand import Demand, as_demand

__all__ = ["DEFAULT_PENDING_WARNING_S", "Backlog", "ClusterPicture", "describe_wait"]

# Ray warns after a similar delay; 10 s is longer than a worker restart (about a second),
# so a routine restart says nothing, and short enough that a user who wonders gets told.
DEFAULT_PENDING_WARNING_S = 10.0
# The longest gap between two warnings about one wait.
MAX_WARNING_INTERVAL_S = 300.0

T = TypeVar("T")


class Backlog(Generic[T]):
    def __init__(self, warning_s: float = DEFAULT_PENDING_WARNING_S) -> None:
        if warning_s <= 0:
            raise ValueError(f"pending_warning_s must be positive, not {warning_s}")
        self.warning_s = warning_s
        self._by_need: dict[Demand, deque[tuple[str, T]]] = {}
        self._counts: dict[tuple[str, Demand], int] = {}
        self._len = 0
        self.since: float | None = None  # when the backlog last became non-empty
        self._next_warning = 0.0
        self._interval = warning_s

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        needs = sorted(d.describe() for d in self._by_need)
        return f"<Backlog {self._len} waiting, needs {needs}>"

    def add(self, item: T, need: float | Demand, kind: str, now: float) -> None:
        """``item`` (a "task" or an "actor") waits for a worker that fits ``need`` (a
        Demand, or a number of CPUs)."""
        demand = as_demand(need)
        if self._len == 0:
            self.since = now
            self._interval = self.warning_s
            self._next_warning = now + self.warning_s
        self._by_need.setdefault(demand, deque()).append((kind, item))
        key = (kind, demand)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._len += 1

    def take_fitting(self, offer: float | WorkerInfo) -> list[T]:
        """A worker can take work (``offer``: the worker, or a number of CPUs, which any
        demand for no more CPUs fits): every item it fits, smallest needs first, in order
        within a need. They leave the backlog."""
        if isinstance(offer, WorkerInfo):
            needs = [n for n in self._by_need if n.fits(offer)]
        else:
            needs = [n for n in self._by_need if n.num_cpus <= offer]
        return self._take(needs)

    def take_needing(self, predicate: Callable[[Demand], bool]) -> list[T]:
        """Every item whose demand ``predicate`` picks (a runtime_env that could not be made
        ready). O(distinct demands)."""
        return self._take([n for n in self._by_need if predicate(n)])

    def _take(self, needs: list[Demand]) -> list[T]:
        taken: list[T] = []
        for need in sorted(needs, key=lambda n: (n.num_cpus, n.resources)):
            for kind, item in self._by_need.pop(need):
                self._counts[(kind, need)] -= 1
                if not self._counts[(kind, need)]:
                    del self._counts[(kind, need)]
                taken.append(item)
        self._len -= len(taken)
        if self._len == 0:
            self.since = None
        return taken

    def remove_where(self, predicate: Callable[[T], bool]) -> list[T]:
        """Take out the items ``predicate`` picks (cancelled calls). O(items): for cancels,
        never per call."""
        removed: list[T] = []
        for need, queue in list(self._by_need.items()):
            kept: deque[tuple[str, T]] = deque()
            for kind, item in queue:
                if predicate(item):
                    removed.append(item)
                    self._counts[(kind, need)] -= 1
                    if not self._counts[(kind, need)]:
                        del self._counts[(kind, need)]
                else:
                    kept.append((kind, item))
            if kept:
                self._by_need[need] = kept
            else:
                del self._by_need[need]
        self._len -= len(removed)
        if self._len == 0:
            self.since = None
        return removed

    def take_all(self) -> list[T]:
        """Everything waiting (this process is leaving the cluster)."""
        return self.take_fitting(float("inf"))

    def counts(self) -> Mapping[tuple[str, Demand], int]:
        """How many items wait, by (kind, demand)."""
        return self._counts

    def warning_at(self) -> float | None:
        """When the next warning is due (None: nothing waits)."""
        return self._next_warning if self._len else None

    def warning_due(self, now: float) -> bool:
        """True once per due warning; the next one is due twice as long after."""
        if not self._len or now < self._next_warning:
            return False
        self._next_warning = now + self._interval
        self._interval = min(self._interval * 2, MAX_WARNING_INTERVAL_S)
        return True


class ClusterPicture:
    """What this process knows of the cluster, for a warning about waiting calls."""

    __slots__ = (
        "alive",
        "crash_loops",
        "elsewhere",
        "head_lost",
        "largest",
        "largest_share",
        "offered",
        "suspended",
    )

    def __init__(
        self,
        *,
        alive: int,
        suspended: int = 0,
        largest: float = 0.0,
        head_lost: str | None = None,
        crash_loops: Mapping[str, str] | None = None,
        offered: Mapping[str, float] | None = None,
        largest_share: Mapping[str, float] | None = None,
        elsewhere: Mapping[str, float] | None = None,
    ) -> None:
        # What the alive workers offer in all, by resource ("CPU", "GPU", "camera", ...).
        self.offered = dict(offered or {})
        # The most of each resource one alive worker offers: a call runs in one worker.
        self.largest_share = dict(largest_share or {})
        # What workers of other runtime_envs offer: a node's GPUs and custom resources go to
        # one worker at a time, an environment's first, so they may all be there.
        self.elsewhere = dict(elsewhere or {})
        self.alive = alive  # workers that take new work
        self.suspended = suspended
        self.largest = largest  # CPUs of the largest worker that takes new work
        self.head_lost = head_lost  # why the head link is down, while reconnecting
        # Nodes with no live worker whose slots are in a crash loop: node -> last stderr lines.
        self.crash_loops = crash_loops or {}


def _cpus(n: float) -> str:
    return f"{n:g} CPU" if n == 1 else f"{n:g} CPUs"


def _what(counts: Mapping[tuple[str, Demand], int]) -> str:
    parts = []
    order = sorted(
        counts.items(), key=lambda kv: (kv[0][0] != "task", kv[0][1].num_cpus, kv[0][1].resources)
    )
    for (kind, need), n in order:
        noun = kind if n == 1 else f"{kind}s"
        verb = "needs" if n == 1 else "need"
        parts.append(f"{n} {noun} {verb} {need.describe()}")
    return ", ".join(parts)


_ONE_HOLDER = (
    "each GPU, and each worker's share of a custom resource, belongs to one worker process "
    "at a time, and a runtime_env's workers get them first, for as long as it is in use"
)


def _lacking(counts: Mapping[tuple[str, Demand], int], cluster: ClusterPicture) -> str | None:
    """What waiting calls ask of a resource the alive workers do not offer at all, or None."""
    if not cluster.offered:
        return None
    lacks: list[tuple[str, float]] = []
    for _, need in counts:
        for name, amount in need.resources:
            has = cluster.offered.get(name, 0.0)
            if has < amount and name not in (n for n, _ in lacks):
                lacks.append((name, has))
        if need.labels or need.node is not None:
            lacks.append((need.describe(), -1.0))
    if not lacks:
        return None
    held_elsewhere = [
        (name, has) for name, has in lacks if has >= 0 and cluster.elsewhere.get(name, 0.0) > 0
    ]
    if held_elsewhere:
        name, has = held_elsewhere[0]
        there = cluster.elsewhere[name]
        option = "num_gpus" if name == "GPU" else f"resources[{name!r}]"
        return (
            f"the workers this call may use offer {name}={has:g} in all, while other workers "
            f"(of another runtime_env, or the nodes' own) hold {name}={there:g}: {_ONE_HOLDER}. "
            f"The call waits until that runtime_env is released (the last driver using it "
            f"ends) or the actors holding {name} there end. To run it now, ask with the "
            f"runtime_env of those workers (.options(runtime_env=...), {option}=...), or give "
            "the cluster more (`actorgrid node --resources ...`; used as soon as it joins)"
        )
    have = ", ".join(f"{k}={v:g}" for k, v in sorted(cluster.offered.items()) if k != "memory")
    said = []
    for name, has in lacks:
        if has < 0:
            said.append(f"no alive worker fits {name}")
        else:
            said.append(f"the cluster's alive workers offer {name}={has:g} in all")
    exclusive = [n for n, has in lacks if has >= 0 and n != "memory"]
    also = ""
    if exclusive:
        # This process does not see the workers of other drivers' runtime_envs.
        also = (
            f". If a node has {exclusive[0]} that this process's workers do not offer, the "
            f"workers of another driver's runtime_env may hold it ({_ONE_HOLDER}): it comes "
            "back when that runtime_env is released (its last driver ends), and `actorgrid "
            "status` shows which workers hold what"
        )
    return (
        f"{'; '.join(said)} (the cluster has {have}): start a node that offers it "
        "(`actorgrid node --resources`, --labels; it is used as soon as it joins) or change "
        f"the request in .options(){also}"
    )


def _too_big_for_one_worker(
    counts: Mapping[tuple[str, Demand], int], cluster: ClusterPicture
) -> str | None:
    """What waiting calls ask of a resource that the cluster has enough of in all, but no
    one worker's share does, or None. One call runs in one worker process and holds what it
    asks for there; a node deals its resources out over its workers (whole units round-robin,
    memory evenly), so a request larger than any one share can never be placed."""
    shares = cluster.largest_share
    if not shares:
        return None
    for _, need in counts:
        for name, amount in need.resources:
            share = shares.get(name, 0.0)
            if share < amount <= cluster.offered.get(name, 0.0):
                return _one_worker_advice(f"{name}={amount:g}", f"{name}={share:g}", name)
    return None


def _one_worker_advice(asked: str, share: str, name: str) -> str:
    option = "num_cpus" if name == "CPU" else f"resources[{name!r}]"
    if name == "GPU":
        option = "num_gpus"
    elif name == "memory":
        option = "memory"
    return (
        f"a call runs in one worker and holds what it asks for there, and no alive worker's "
        f"share reaches {asked} (the largest is {share}: a node deals its resources out over "
        f"its workers, one share each); lower {option} in .options() to at most {share}, or "
        "run a node with fewer, bigger workers (`actorgrid node --num-workers N "
        "--num-cpus-per-worker C --resources ...`; it is used as soon as it joins)"
    )


def describe_wait(
    counts: Mapping[tuple[str, float], int] | Mapping[tuple[str, Demand], int],
    waited_s: float,
    cluster: ClusterPicture,
) -> str:
    """The warning for calls that have waited ``waited_s`` for a worker: what they need, what
    the cluster has, and what to do about it."""
    demands = {(kind, as_demand(need)): n for (kind, need), n in counts.items()}
    what = _what(demands)
    head = f"{what} (waiting {waited_s:.0f} s for a worker)"
    if cluster.head_lost is not None:
        return f"{head}: {cluster.head_lost}"
    reasons = []
    for node, stderr in sorted(cluster.crash_loops.items()):
        tail = stderr.strip() or "(no output)"
        reasons.append(f"all workers of node {node} are in a crash loop: {tail}")
    if cluster.alive == 0:
        if cluster.suspended:
            reasons.append(
                f"every worker of the cluster ({cluster.suspended}) is suspended: resume one "
                "with Cluster.resume()"
            )
        elif not reasons:
            reasons.append(
                "the cluster has 0 alive workers: they may be starting or restarting; "
                "`actorgrid node` joins a machine to a running cluster"
            )
    elif (lacking := _lacking(demands, cluster)) is not None:
        reasons.append(lacking)
    elif (too_big := _too_big_for_one_worker(demands, cluster)) is not None:
        reasons.append(too_big)
    else:
        largest_need = max(need.num_cpus for _, need in demands)
        if largest_need > cluster.largest:
            reasons.append(
                f"the largest of the cluster's {cluster.alive} alive workers has "
                f"{_cpus(cluster.largest)}; "
                + _one_worker_advice(_cpus(largest_need), _cpus(cluster.largest), "CPU")
            )
        else:
            reasons.append(f"the cluster has {cluster.alive} alive workers")
    return f"{head}: {'; '.join(reasons)}"
