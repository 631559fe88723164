"""What a node has left: a psutil sample carried by every node pulse."""

from __future__ import annotations

import os

import psutil

from .._protocol.messages import Availability

__all__ = ["sample_availability"]


def sample_availability(path: str = ".") -> Availability:
    """CPU (since the previous sample), memory, disk (of ``path``) and swap, right now."""
    memory = psutil.virtual_memory()
    try:
        disk = psutil.disk_usage(path)
        disk_free, disk_percent = int(disk.free), float(disk.percent)
    except OSError:
        disk_free, disk_percent = 0, 0.0
    try:
        swap_percent = float(psutil.swap_memory().percent)
    except (OSError, RuntimeError):
        swap_percent = 0.0
    return Availability(
        cpu_percent=float(psutil.cpu_percent(interval=None)),
        memory_available=int(memory.available),
        memory_percent=float(memory.percent),
        disk_available=disk_free,
        disk_percent=disk_percent,
        swap_percent=swap_percent,
        num_cpus=os.cpu_count() or 1,
    )
