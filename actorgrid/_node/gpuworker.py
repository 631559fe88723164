"""The worker's side of the node's GPU ledger (``gpuslots.py``): telling its node agent whether
its GPUs are in use, and giving them back only once they are not.

- A worker that owns GPUs writes, after each pulse byte, ``GPU_BUSY_BYTE`` while a live actor
  or a running call holds one of them (what its own ledger says: ``num_gpus=`` of an actor
  from before its constructor until it ends, of a task while it runs), else ``GPU_FREE_BYTE``.
  Every pulse says it again, so a byte lost to a full pipe is not a state lost.
- ``YIELD_GPUS`` on stdin (the node revokes its GPUs for a runtime_env's worker): wait until
  nothing holds them, then finish the calls already here and exit, as ``drain`` does; the
  node starts the slot again without a GPU. The node revokes only a worker it last heard was
  free; this wait covers an actor that arrived since.
"""

from __future__ import annotations

import trio

from .._runtime.holdings import Holdings

__all__ = ["GPU_BUSY_BYTE", "GPU_FREE_BYTE", "YIELD_GPUS", "gpus_busy", "wait_gpus_free"]

GPU_BUSY_BYTE = b"G"
GPU_FREE_BYTE = b"g"
YIELD_GPUS = "yield_gpus"


def gpus_busy(holdings: Holdings | None) -> bool:
    """A live actor or a running call of this worker holds one of its GPUs."""
    return holdings is not None and holdings.ledger.used.get("GPU", 0.0) > 0.0


async def wait_gpus_free(holdings: Holdings | None, poll_s: float) -> None:
    """Return once nothing here holds a GPU (looked at every ``poll_s``: the holders are
    actors, which live for long, so a pulse's delay does not matter)."""
    while gpus_busy(holdings):
        await trio.sleep(poll_s)
