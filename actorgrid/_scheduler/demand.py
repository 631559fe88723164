"""What a call asks of the worker that runs it: its ``Demand``.

A demand is CPUs (``num_cpus``), held resources (``GPU``, ``memory``, custom ones such as
``camera``), a label selector over the node's labels, and where to go: anywhere (pack by load),
``SPREAD`` (round-robin over nodes) or a node affinity (hard or soft). Each worker offers a share
of its node's resources (``WorkerInfo.resources``) and carries its node's labels
(``WorkerInfo.labels``); a demand ``fits`` a worker when every part of it is met there.

Demands are frozen and hashable: placement indexes eligible workers by demand, so a call with
a demand seen before costs O(1), whatever the size of the cluster.

Label selectors use Ray's spelling: ``{"zone": "a"}`` (equal), ``{"zone": "!a"}`` (not equal),
``{"zone": "in(a,b)"}`` and ``{"zone": "!in(a,b)"}``. A label the node lacks matches only the
negative forms.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from .._protocol.ids import NodeId, WorkerId
from .._protocol.messages import WorkerInfo

__all__ = ["CPU_DEMANDS", "Demand", "LabelTerm", "parse_label_selector"]

# Resource names placement treats as the worker's own, not as held resources.
RESERVED = ("CPU",)


@attrs.frozen
class LabelTerm:
    """One label condition: the label's value is (``negate=False``) or is not in ``values``."""

    key: str
    values: frozenset[str]
    negate: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        found = value is not None and value in self.values
        return found != self.negate

    def __str__(self) -> str:
        values = ",".join(sorted(self.values))
        inner = values if len(self.values) == 1 else f"in({values})"
        return f"{self.key}={'!' if self.negate else ''}{inner}"


def parse_label_selector(selector: Mapping[str, str]) -> tuple[LabelTerm, ...]:
    """Ray's label selector ``{"zone": "a", "rack": "!in(3,4)"}`` as terms; ValueError that
    shows the accepted forms for anything else."""
    if not isinstance(selector, Mapping):
        raise TypeError(
            f'label_selector must be a dict such as {{"zone": "a"}}, not {type(selector).__name__}'
        )
    terms = []
    for key, raw in sorted(selector.items()):
        if not isinstance(key, str) or not isinstance(raw, str) or not key:
            raise ValueError(
                f"label_selector entries are label name -> string, not {key!r}: {raw!r}"
            )
        text = raw.strip()
        negate = text.startswith("!")
        if negate:
            text = text[1:].strip()
        if text.startswith("in(") and text.endswith(")"):
            values = frozenset(v.strip() for v in text[3:-1].split(",") if v.strip())
        else:
            values = frozenset([text]) if text else frozenset()
        if not values:
            raise ValueError(
                f"label_selector[{key!r}] = {raw!r} names no value; use 'a', '!a', 'in(a,b)' "
                "or '!in(a,b)'"
            )
        terms.append(LabelTerm(key, values, negate))
    return tuple(terms)


@attrs.frozen
class Demand:
    """What one task or actor needs of its worker (see the module docstring)."""

    num_cpus: float = 0.0
    # Held while the call runs (an actor: while it lives), sorted by name, amounts > 0.
    resources: tuple[tuple[str, float], ...] = ()
    labels: tuple[LabelTerm, ...] = ()
    node: NodeId | None = None  # a node affinity
    soft: bool = False  # the affinity is a preference: elsewhere if that node has no fit
    spread: bool = False  # SPREAD: round-robin over nodes rather than pack by load
    worker: WorkerId | None = None  # that worker only (ag.run_on_each_worker)
    # A runtime_env's key (``.options(runtime_env=)``): only that environment's workers fit.
    # "": the caller's own environment (placement knows which that is).
    env: str = ""
    # Only CPUs: any worker big enough fits (the common case, placement's fast path).
    # Computed once: placement reads it on every call.
    plain: bool = attrs.field(init=False, eq=False, hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        plain = (
            not self.resources
            and not self.labels
            and self.node is None
            and not self.spread
            and self.worker is None
            and not self.env
        )
        object.__setattr__(self, "plain", plain)

    @classmethod
    def of(
        cls,
        num_cpus: float,
        resources: Mapping[str, float] | None = None,
        *,
        labels: tuple[LabelTerm, ...] = (),
        node: NodeId | None = None,
        soft: bool = False,
        spread: bool = False,
        env: str = "",
    ) -> Demand:
        held = tuple(sorted((k, float(v)) for k, v in (resources or {}).items() if v))
        if not held and not labels and node is None and not spread and not env:
            return cpus(num_cpus)
        return cls(float(num_cpus), held, labels, node, soft, spread, env=env)

    def without_affinity(self) -> Demand:
        """The demand a soft affinity falls back to."""
        return Demand.of(self.num_cpus, dict(self.resources), labels=self.labels, env=self.env)

    def fits(self, worker: WorkerInfo) -> bool:
        """``worker`` offers all of it (not counting what calls hold there now)."""
        if worker.num_cpus < self.num_cpus:
            return False
        if self.env and worker.env != self.env:
            return False
        if self.node is not None and worker.node_id != self.node:
            return False
        if self.worker is not None and worker.worker_id != self.worker:
            return False
        if self.resources:
            offered = dict(worker.resources)
            if any(offered.get(name, 0.0) < amount for name, amount in self.resources):
                return False
        if self.labels:
            labels = dict(worker.labels)
            if not all(term.matches(labels) for term in self.labels):
                return False
        return True

    def describe(self) -> str:
        """As a warning names it: "2 CPUs, camera=1, zone=a, on node 3f2a…"."""
        parts = [f"{self.num_cpus:g} CPU" if self.num_cpus == 1 else f"{self.num_cpus:g} CPUs"]
        parts += [f"{name}={_amount(name, amount)}" for name, amount in self.resources]
        parts += [f"label {term}" for term in self.labels]
        if self.node is not None:
            parts.append(f"{'preferably ' if self.soft else ''}on node {self.node.hex()[:8]}")
        if self.spread:
            parts.append("SPREAD")
        if self.worker is not None:
            parts.append(f"on worker {self.worker.hex()[:8]}")
        if self.env:
            parts.append(f"runtime_env {self.env[:12]}")
        return ", ".join(parts)


def _amount(name: str, amount: float) -> str:
    if name == "memory":
        return f"{amount / 2**20:.0f} MiB"
    return f"{amount:g}"


# The plain demands met on every call: interned, so they are hashed and compared once.
CPU_DEMANDS: dict[float, Demand] = {}


def cpus(num_cpus: float) -> Demand:
    """The plain demand for ``num_cpus`` CPUs (interned)."""
    demand = CPU_DEMANDS.get(num_cpus)
    if demand is None:
        demand = Demand(float(num_cpus))
        if len(CPU_DEMANDS) < 64:
            CPU_DEMANDS[num_cpus] = demand
    return demand


def as_demand(need: float | Demand) -> Demand:
    return need if isinstance(need, Demand) else cpus(need)
