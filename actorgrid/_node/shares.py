"""What a node offers (CPUs, memory, GPUs, custom resources, labels) and each worker's share.

- CPUs and memory come from psutil; GPUs from ``CUDA_VISIBLE_DEVICES`` when the node's own
  environment sets it, else from ``nvidia-smi -L``; ``--resources '{"GPU": 2}'`` (or
  ``ag.init(resources=...)``) overrides any of them and adds custom ones (``camera``).
- Each unit of a resource belongs to one worker: GPU i to worker slot i (with
  ``CUDA_VISIBLE_DEVICES`` set to its GPUs alone; slot i also gets GPU i + n, ... when there
  are more GPUs than its node's n workers), other whole units dealt round-robin over the
  slots, a fractional rest to the first slot; memory is split evenly. A call holding a resource
  therefore holds it on one worker, whose own ledger (``_scheduler/ledger.py``) is the only
  bookkeeping needed: no two callers can over-commit it. Which GPUs a worker process gets in
  the end is the node's GPU ledger's say (``gpuslots.py``): one worker at a time each, base
  and runtime_env workers alike.
- Automatic labels: hostname, platform, python_version, num_cpus, memory_gb, num_gpus (user
  labels of the same name win).
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping

__all__ = [
    "NodeShares",
    "WorkerShare",
    "automatic_labels",
    "detect_gpus",
    "parse_labels",
    "worker_shares",
]

NVIDIA_SMI_TIMEOUT_S = 10.0


def detect_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The ids of this machine's GPUs: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L``
    (none when it is missing or fails)."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


def parse_labels(text: str) -> dict[str, str]:
    """``zone=a,rack=3`` as a dict; ValueError showing the form for anything else."""
    labels: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"labels are name=value pairs separated by commas, not {part!r}")
        labels[key.strip()] = value.strip()
    return labels


def check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k for k, v in labels.items()
    ):
        raise TypeError(f'labels must be a dict of strings such as {{"zone": "a"}}, not {labels!r}')
    return dict(labels)


def automatic_labels(num_cpus: float, memory: float, num_gpus: float) -> dict[str, str]:
    return {
        "hostname": socket.gethostname(),
        "platform": sys.platform,
        "python_version": platform.python_version(),
        "num_cpus": f"{num_cpus:g}",
        "memory_gb": f"{memory / 2**30:.0f}",
        "num_gpus": f"{num_gpus:g}",
    }


class NodeShares:
    """A node's resources and labels, and what each of its worker slots gets."""

    def __init__(
        self,
        num_workers: int,
        num_cpus_per_worker: float,
        resources: Mapping[str, float] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        declared = {k: float(v) for k, v in (resources or {}).items()}
        gpus = detect_gpus()
        if "GPU" in declared:
            count = int(declared["GPU"])
            ids = gpus[:count] if len(gpus) >= count else [str(i) for i in range(count)]
            if declared["GPU"] != count:
                raise ValueError(f"GPU must be a whole number, not {declared['GPU']:g}")
        else:
            ids = gpus
        self.gpu_ids = ids
        total: dict[str, float] = {"CPU": num_workers * num_cpus_per_worker}
        import psutil  # here, not at the top: a worker imports this module and needs it not

        total["memory"] = float(psutil.virtual_memory().total)
        if ids:
            total["GPU"] = float(len(ids))
        total.update(declared)
        if ids:
            total["GPU"] = float(len(ids))
        else:
            total.pop("GPU", None)
        self.total = {k: v for k, v in total.items() if v > 0}
        self.labels = automatic_labels(total["CPU"], total.get("memory", 0.0), len(ids))
        self.labels.update(check_labels(labels))
        self.shares = worker_shares(num_workers, self.total, ids)

    def config(self, slot: int) -> dict[str, object]:
        """The part of a worker's configuration that says what it owns."""
        resources, gpu_ids = self.shares[slot] if slot < len(self.shares) else ({}, [])
        return {
            "resources": resources,
            "gpu_ids": gpu_ids,
            "labels": self.labels,
            "hide_gpus": bool(self.gpu_ids),  # a worker without a GPU on a node with some
        }


def worker_shares(
    num_workers: int, total: Mapping[str, float], gpu_ids: list[str]
) -> list[tuple[dict[str, float], list[str]]]:
    """Each slot's resources (without CPU) and GPU ids. GPUs are dealt round-robin (GPU i to
    slot i: one per worker when there are as many workers; a worker owns several when there
    are more GPUs than workers); memory is split evenly; other whole units are dealt
    round-robin too, a fractional rest to slot 0."""
    shares: list[tuple[dict[str, float], list[str]]] = [({}, []) for _ in range(num_workers)]
    if num_workers <= 0:
        return shares
    for i, gpu in enumerate(gpu_ids):
        res, ids = shares[i % num_workers]
        res["GPU"] = res.get("GPU", 0.0) + 1.0
        ids.append(gpu)
    for name, amount in total.items():
        if name in ("CPU", "GPU"):
            continue
        if name == "memory":
            for res, _ in shares:
                res[name] = amount / num_workers
            continue
        whole = int(amount)
        for unit in range(whole):
            res = shares[unit % num_workers][0]
            res[name] = res.get(name, 0.0) + 1.0
        if amount > whole:
            res = shares[0][0]
            res[name] = res.get(name, 0.0) + (amount - whole)
    return shares


class WorkerShare:
    """What one worker owns, read from its configuration (``NodeShares.config``)."""

    def __init__(self, config: Mapping[str, object]) -> None:
        resources = config.get("resources") or {}
        labels = config.get("labels") or {}
        gpu_ids = config.get("gpu_ids") or []
        assert isinstance(resources, dict) and isinstance(labels, dict)
        assert isinstance(gpu_ids, list)
        self.resources = tuple(sorted((str(k), float(v)) for k, v in resources.items()))
        self.labels = tuple(sorted((str(k), str(v)) for k, v in labels.items()))
        self.gpu_ids = tuple(str(g) for g in gpu_ids)
        self.hide_gpus = bool(config.get("hide_gpus"))

    def adopt(self) -> None:
        """In the worker, before any user code runs: only its own GPUs are visible (none for a
        worker without one, so CUDA code cannot take another worker's)."""
        if self.gpu_ids or self.hide_gpus or "CUDA_VISIBLE_DEVICES" in os.environ:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_ids)
