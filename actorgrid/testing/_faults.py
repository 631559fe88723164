"""Faults a simulation injects, at chosen or seeded virtual times (pure data, no I/O).

A schedule is a list of fault records; ``random_faults`` draws one from a seed, so a failure
it provokes comes back with the same seed. Targets are simulated host names: ``"driver"``,
``"head"``, and ``"n<node>w<worker>"`` for worker ``worker`` of node ``node`` (``"n0w1"``);
a worker left as None is drawn from the simulation's seeded generator when the fault fires.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import attrs

__all__ = [
    "DelayLink",
    "DropLink",
    "Fault",
    "KillWorker",
    "PartitionNode",
    "random_faults",
    "worker_host",
]


def worker_host(node: int, worker: int) -> str:
    """The host name of a simulated worker: ``worker_host(0, 1) == "n0w1"``."""
    return f"n{node}w{worker}"


@attrs.frozen
class KillWorker:
    """At ``at`` virtual seconds, kill a worker as ``kill -9`` would: its connections reset,
    its actors and running calls are lost; its node starts a fresh one ``restart_after_s``
    later (None: never)."""

    at: float
    worker: str | None = None
    restart_after_s: float | None = 0.0


@attrs.frozen
class DropLink:
    """From ``at`` to ``until`` (None: for good), frames between hosts ``a`` and ``b`` vanish
    both ways, as on a cut cable: nothing resets, only pulses stop arriving."""

    at: float
    a: str
    b: str
    until: float | None = None


@attrs.frozen
class DelayLink:
    """From ``at`` to ``until``, frames between ``a`` and ``b`` arrive ``by_s`` late."""

    at: float
    a: str
    b: str
    by_s: float
    until: float | None = None


@attrs.frozen
class PartitionNode:
    """From ``at`` to ``until``, node ``node``'s workers hear nobody outside the node and
    nobody outside hears them."""

    at: float
    node: int
    until: float | None = None


Fault = KillWorker | DropLink | DelayLink | PartitionNode


def random_faults(
    seed: int,
    *,
    within_s: float,
    kills: int = 1,
    partitions: int = 0,
    nodes: int = 1,
    workers_per_node: int = 2,
    partition_s: float = 10.0,
) -> list[Fault]:
    """A fault schedule drawn from ``seed``: ``kills`` worker kills and ``partitions`` node
    partitions (each ``partition_s`` long) at times in ``[0, within_s)``."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    for _ in range(kills):
        host = worker_host(rng.randrange(nodes), rng.randrange(workers_per_node))
        faults.append(KillWorker(round(rng.uniform(0, within_s), 3), host))
    for _ in range(partitions):
        at = round(rng.uniform(0, within_s), 3)
        faults.append(PartitionNode(at, rng.randrange(nodes), until=at + partition_s))
    return sorted(faults, key=lambda f: f.at)


def timeline(faults: Sequence[Fault]) -> list[tuple[float, int, Fault, bool]]:
    """Every start and end of ``faults`` as ``(time, order, fault, starting)``, in time order;
    ties keep the order given (a fault's end before a later fault's start at the same time)."""
    steps: list[tuple[float, int, Fault, bool]] = []
    for i, fault in enumerate(faults):
        if fault.at < 0:
            raise ValueError(f"{fault!r} is scheduled before the simulation starts (at < 0)")
        steps.append((fault.at, 2 * i + 1, fault, True))
        until = getattr(fault, "until", None)
        if until is not None:
            if until < fault.at:
                raise ValueError(f"{fault!r} ends before it starts (until < at)")
            steps.append((until, 2 * i, fault, False))
    return sorted(steps, key=lambda s: (s[0], s[1]))
