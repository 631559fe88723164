"""``/metrics`` figures that come from outside the event stream: the bytes each process's
links carried (summed per node; drivers apart) and the object store figures of a node's
last pulse."""

from __future__ import annotations

import attrs

from actorgrid._dashboard.metrics import DRIVER_NODE, _store_lines, _traffic_samples
from actorgrid._protocol.ids import NodeId


@attrs.frozen
class _Availability:
    store_used: int
    store_capacity: int
    store_spilled: int = 0


@attrs.frozen
class _Node:
    node_id: NodeId


@attrs.frozen
class _NodeView:
    node: _Node
    availability: _Availability | None = None


@attrs.frozen
class _View:
    nodes: tuple[_NodeView, ...]


def test_bytes_are_summed_per_node_and_drivers_are_apart() -> None:
    a, b = NodeId(b"a" * 16), NodeId(b"b" * 16)
    traffic = {
        (a, "vm-1", 10): (100, 1000),
        (a, "vm-1", 11): (5, 50),
        (None, "laptop", None): (7, 70),
    }
    sent, received = _traffic_samples(traffic, [a.hex(), b.hex()])
    assert dict(sent) == {a.hex(): 105, b.hex(): 0, DRIVER_NODE: 7}
    assert dict(received) == {a.hex(): 1050, b.hex(): 0, DRIVER_NODE: 70}


def test_a_node_views_store_figures_become_gauges() -> None:
    a, b = NodeId(b"a" * 16), NodeId(b"b" * 16)
    view = _View((_NodeView(_Node(a), _Availability(10, 100)), _NodeView(_Node(b))))
    lines = _store_lines(view)  # type: ignore[arg-type]
    assert f'actorgrid_object_store_used_bytes{{node="{a.hex()}"}} 10' in lines
    assert f'actorgrid_object_store_capacity_bytes{{node="{a.hex()}"}} 100' in lines
    assert "# TYPE actorgrid_object_store_used_bytes gauge" in lines
    assert f'actorgrid_object_store_spilled_bytes{{node="{a.hex()}"}} 0' in lines
    assert not any(b.hex() in line for line in lines)  # no pulse from b yet: no figures
