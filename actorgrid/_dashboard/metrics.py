"""``/metrics``: the model and a fresh cluster view in the Prometheus text format (0.0.4).

Every series has a ``node`` label (the node id in hex; "unknown" for an event that names
neither a node nor a worker the dashboard knows). Counters count the head's events since
the dashboard started (see model.py); gauges are read from the cluster view of the scrape.

Bytes sent and received are what each process last reported its links carried (TCP and
TLS frames; see ``_transport.base.Traffic``), summed per node; processes on no node
(drivers, this dashboard) are reported as ``node="driver"``. Object store figures are every
numeric field of a node's ``store`` record in the cluster view, where the view carries one
(``actorgrid_object_store_<field>``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from .._protocol.messages import ClusterView
from .model import UNKNOWN_NODE, DashboardModel
from .source import Traffic

DRIVER_NODE = "driver"

__all__ = ["CONTENT_TYPE", "COUNTERS", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# counter name in the model -> help text; exposed as actorgrid_<name>_total
COUNTERS = {
    "tasks_submitted": "Tasks submitted (task_submitted events).",
    "tasks_finished": "Tasks that returned a value (task_finished events).",
    "tasks_failed": "Tasks whose code raised (task_failed events).",
    "tasks_retried": "Tasks sent again after a failure (task_retried events).",
    "tasks_cancelled": "Tasks cancelled (task_cancelled events).",
    "actor_calls": "Actor method calls answered (call_finished and call_failed events).",
    "worker_restarts": "Worker processes started in place of one that died.",
    "worker_deaths": "Worker processes that exited.",
    "actor_restarts": "Actors re-created after their code raised or their worker died.",
    "actor_deaths": "Actors gone with no restarts left.",
    "sends_lost": "Quiet calls and fire-and-forget messages lost with their actor's worker.",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{_labels(**labels)} {_number(value)}" for labels, value in samples]
    return lines


def _traffic_samples(
    traffic: Traffic, nodes: Iterable[str]
) -> tuple[Mapping[str, int], Mapping[str, int]]:
    sent: Counter[str] = Counter({node: 0 for node in nodes})
    received: Counter[str] = Counter({node: 0 for node in nodes})
    for (node_id, _host, _pid), (out, into) in traffic.items():
        node = node_id.hex() if node_id else DRIVER_NODE
        sent[node] += out
        received[node] += into
    return sent, received


def _store_lines(view: ClusterView) -> list[str]:
    """Object store use per node, from its last pulse (``Availability.store_*``)."""
    families = (
        ("used_bytes", "store_used", "Bytes of shared memory the node's object store holds."),
        ("capacity_bytes", "store_capacity", "The node's object_store_memory."),
        ("spilled_bytes", "store_spilled", "Bytes the node's object store spilled to disk."),
    )
    lines: list[str] = []
    for name, field, help_text in families:
        samples = [
            ({"node": n.node.node_id.hex()}, float(getattr(n.availability, field)))
            for n in view.nodes
            if n.availability is not None
        ]
        lines += _family(f"actorgrid_object_store_{name}", "gauge", help_text, samples)
    return lines


def render_metrics(model: DashboardModel, view: ClusterView, traffic: Traffic) -> str:
    """The whole exposition; ``model.snapshot(view)`` must have been taken first."""
    nodes = [n.node.node_id.hex() for n in view.nodes]
    lines: list[str] = []
    sent, received = _traffic_samples(traffic, nodes)
    for name, counts, verb in (("sent", sent, "sent"), ("received", received, "received")):
        lines += _family(
            f"actorgrid_bytes_{name}_total",
            "counter",
            f"Bytes the node's processes {verb} on their links (drivers: node=driver).",
            [({"node": node}, counts[node]) for node in sorted(counts)],
        )
    lines += _store_lines(view)
    for counter, help_text in COUNTERS.items():
        seen = {node for (name, node) in model.counters if name == counter}
        samples = [
            ({"node": node}, model.counters[counter, node]) for node in sorted(set(nodes) | seen)
        ]
        lines += _family(f"actorgrid_{counter}_total", "counter", help_text, samples)
    lines += _family(
        "actorgrid_nodes", "gauge", "Node agents connected to the head.", [({}, len(nodes))]
    )
    pulses = [({"node": n.node.node_id.hex()}, n.last_pulse_s) for n in view.nodes]
    lines += _family(
        "actorgrid_node_last_pulse_seconds", "gauge", "Seconds since the node's last pulse.", pulses
    )
    usage = [(n.node.node_id.hex(), n.availability) for n in view.nodes if n.availability]
    lines += _family(
        "actorgrid_node_cpu_percent",
        "gauge",
        "CPU use of the node's machine at its last pulse.",
        [({"node": node}, a.cpu_percent) for node, a in usage],
    )
    lines += _family(
        "actorgrid_node_memory_percent",
        "gauge",
        "Memory use of the node's machine at its last pulse.",
        [({"node": node}, a.memory_percent) for node, a in usage],
    )
    lines += _family(
        "actorgrid_node_memory_available_bytes",
        "gauge",
        "Memory available on the node's machine at its last pulse.",
        [({"node": node}, a.memory_available) for node, a in usage],
    )
    workers: Counter[str] = Counter()
    running: Counter[str] = Counter()
    queued: Counter[str] = Counter()
    for w in view.workers:
        node = w.worker.node_id.hex()
        workers[node] += 1
        running[node] += max(w.running, 0)
        queued[node] += max(w.queued, 0)
    every = sorted(set(nodes) | set(workers))
    lines += _family(
        "actorgrid_workers",
        "gauge",
        "Live worker processes.",
        [({"node": n}, workers[n]) for n in every],
    )
    lines += _family(
        "actorgrid_tasks_running",
        "gauge",
        "Calls running on the node's workers now.",
        [({"node": n}, running[n]) for n in every],
    )
    lines += _family(
        "actorgrid_tasks_queued",
        "gauge",
        "Sync tasks waiting for a CPU on the node's workers now.",
        [({"node": n}, queued[n]) for n in every],
    )
    actors: Counter[str] = Counter()
    depths = []
    for a in view.actors:
        node = model.node_of(a.worker_id) if a.worker_id else UNKNOWN_NODE
        actors[node] += 1
        labels = {"node": node, "actor": a.actor_id.hex(), "label": a.label, "name": a.name or ""}
        depths.append((labels, float(a.mailbox_depth)))
    lines += _family(
        "actorgrid_actors", "gauge", "Live actors.", [({"node": n}, actors[n]) for n in every]
    )
    lines += _family(
        "actorgrid_actor_mailbox_depth",
        "gauge",
        "Messages waiting for the actor (in its mailbox, or held while it is full).",
        depths,
    )
    return "\n".join(lines) + "\n"
