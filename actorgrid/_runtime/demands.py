"""From ``.options(num_cpus=, num_gpus=, memory=, resources=, label_selector=,
scheduling_strategy=)`` to the ``Demand`` placement works with, and ``ag.NodeAffinity``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .._protocol.ids import NodeId
from .._scheduler.demand import Demand, parse_label_selector

__all__ = ["NodeAffinity", "check_placement_options", "demand_of"]

STRATEGIES = ("DEFAULT", "SPREAD")


@attrs.frozen
class NodeAffinity:
    """``scheduling_strategy=ag.NodeAffinity(node_id)``: run on that node (the ids that
    ``Cluster.nodes()`` and ``ag.run_on_each_node`` give, as bytes or hex). ``soft=False``:
    only there, waiting while it has no worker that fits; ``soft=True``: there if it can,
    elsewhere otherwise (Ray's ``NodeAffinitySchedulingStrategy``)."""

    node_id: NodeId | bytes | str
    soft: bool = False

    @property
    def node(self) -> NodeId:
        raw = self.node_id
        if isinstance(raw, str):
            try:
                raw = bytes.fromhex(raw)
            except ValueError:
                raise ValueError(
                    f"NodeAffinity takes a node id as Cluster.nodes() gives it (bytes, or its "
                    f"full hex), not {self.node_id!r}"
                ) from None
        return NodeId(raw)


def check_placement_options(
    num_gpus: float | None,
    memory: float | None,
    resources: Mapping[str, float] | None,
    label_selector: Mapping[str, str] | None,
    scheduling_strategy: Any,
) -> None:
    """ValueError/TypeError, at ``.options()``, for what placement would not understand."""
    for name, value in (("num_gpus", num_gpus), ("memory", memory)):
        if value is not None and (not isinstance(value, int | float) or value < 0):
            raise ValueError(f"{name} must be a number >= 0, not {value!r}")
    if num_gpus is not None and num_gpus > 1 and num_gpus != int(num_gpus):
        raise ValueError(f"num_gpus above 1 must be whole, not {num_gpus:g}")
    if resources is not None:
        if not isinstance(resources, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int | float) and v >= 0
            for k, v in resources.items()
        ):
            raise ValueError(
                f'resources must map names to amounts >= 0, e.g. {{"camera": 1}}, not {resources!r}'
            )
        if "CPU" in resources or "GPU" in resources:
            raise ValueError(
                "ask for CPUs and GPUs with num_cpus= and num_gpus=, not in resources="
            )
    if label_selector is not None:
        parse_label_selector(label_selector)
    strategy = scheduling_strategy
    if (
        strategy is not None
        and not isinstance(strategy, NodeAffinity)
        and strategy not in STRATEGIES
    ):
        raise ValueError(
            f"scheduling_strategy must be 'DEFAULT' (pack by load), 'SPREAD' (round-robin "
            f"over nodes) or ag.NodeAffinity(node_id, soft=...), not {strategy!r}"
        )
    if isinstance(strategy, NodeAffinity):
        strategy.node  # noqa: B018  a bad id fails here, not at placement


def demand_of(
    num_cpus: float,
    num_gpus: float | None,
    memory: float | None,
    resources: Mapping[str, float] | None,
    label_selector: Mapping[str, str] | None,
    scheduling_strategy: Any,
    env: str = "",
) -> Demand:
    held = dict(resources or {})
    if num_gpus:
        held["GPU"] = float(num_gpus)
    if memory:
        held["memory"] = float(memory)
    labels = parse_label_selector(label_selector) if label_selector else ()
    affinity = scheduling_strategy if isinstance(scheduling_strategy, NodeAffinity) else None
    return Demand.of(
        num_cpus,
        held,
        labels=labels,
        node=affinity.node if affinity is not None else None,
        soft=affinity.soft if affinity is not None else False,
        spread=scheduling_strategy == "SPREAD",
        env=env,
    )
