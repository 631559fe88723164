"""The worker's side of the node's ledgers of exclusive units (``gpuslots.py``: GPUs, and
custom resources such as ``camera``): telling its node agent whether they are in use, and
giving them back only once they are not.

- A worker that offers GPUs or custom resources writes, after each pulse byte,
  ``GPU_BUSY_BYTE`` while a live actor or a running call holds any of its resources (what its
  own ledger says: an actor's ``num_gpus=``/``resources=``/``memory=`` from before its
  constructor until it ends, a task's while it runs), else ``GPU_FREE_BYTE``. Any hold
  counts, not only the units asked for: the worker is closed to give them back, and whatever
  it hosts would end with it. Every pulse says it again, so a byte lost to a full pipe is not
  a state lost.
- ``YIELD_GPUS`` on stdin (the node revokes its units for a runtime_env's worker): wait until
  nothing holds anything here, then finish the calls already here and exit, as ``drain``
  does; the node starts the slot again without them. The node revokes only a worker it last
  heard was free; this wait covers an actor that arrived since.
"""

from __future__ import annotations

import trio

from .._runtime.holdings import Holdings

__all__ = [
    "GPU_BUSY_BYTE",
    "GPU_FREE_BYTE",
    "YIELD_GPUS",
    "gpus_busy",
    "offers_units",
    "wait_gpus_free",
]

GPU_BUSY_BYTE = b"G"
GPU_FREE_BYTE = b"g"
YIELD_GPUS = "yield_gpus"


def offers_units(resources: tuple[tuple[str, float], ...]) -> bool:
    """A worker with this share offers units of the node's ledgers (GPUs, custom ones)."""
    return any(amount and name not in ("memory", "CPU") for name, amount in resources)


def gpus_busy(holdings: Holdings | None) -> bool:
    """A live actor or a running call of this worker holds any of its resources."""
    return holdings is not None and any(v > 0.0 for v in holdings.ledger.used.values())


async def wait_gpus_free(holdings: Holdings | None, poll_s: float) -> None:
    """Return once nothing here holds a resource (looked at every ``poll_s``: the holders are
    actors, which live for long, so a pulse's delay does not matter)."""
    while gpus_busy(holdings):
        await trio.sleep(poll_s)
