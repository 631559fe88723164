"""The node agent's shell around its GPU ledger (``_scheduler/gpus.py``): which worker process
owns which of the node's GPUs.

A worker slot whose share of the node has GPUs claims them when its process is started
(``config``), base workers and every runtime environment's workers from the one ledger. The
process gets what was granted (``CUDA_VISIBLE_DEVICES``, ``ag.get_gpu_ids()``, the GPU it
offers to calls); a slot whose claim waits starts without any (it offers none, so calls that
need one wait for a worker that has one, with the caller's pending warning, and this node
logs which slot waits). What a process held comes back when it ends (``exited``).

- An environment's slot whose GPUs are on their way back (base workers revoked for it, ending
  once their calls are done) waits for them before its process starts (``before_start``, at
  most ``GPU_HANDOVER_WAIT_S``): so its environment is ready once its workers have their GPUs,
  and the first calls see all of them.
- A revoke (an environment's worker claims the GPUs a base worker holds) is made only of a
  base worker whose GPUs nothing uses: its pulses say whether a live actor or a running call
  holds one (``busy``, ``gpuworker.py``). Its process is then closed once nothing holds its
  GPUs and its calls are done (``yield_gpus``: it checks again, for an actor that came since)
  and started again without a GPU. While work holds them, the environment's claim waits, with
  a warning that names the worker and what frees it, and is granted once that work ends.
- A grant to a slot whose process runs without GPUs closes that process once its running
  calls are done (``drain``; the actors it hosts end, and are restarted elsewhere if they
  may) and starts it again with what it was granted. A process that is not ready yet is
  closed once it is (``ready``).
- A slot that will not be started again (its environment was released, the node stops)
  gives back what it held or waited for (``over``).

Everything here runs on the agent's loop; each method is O(GPUs) plus the ledger's cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from .._scheduler.gpus import GpuLedger, Grant, Revoke
from .gpuworker import YIELD_GPUS
from .shares import NodeShares
from .slots import Slot

__all__ = ["GPU_HANDOVER_WAIT_S", "GpuSlots"]

log = logging.getLogger("actorgrid.node")

# How long an environment's worker waits for GPUs that base workers are giving back before it
# starts without them (a base worker's running calls may take long; it gets them later).
GPU_HANDOVER_WAIT_S = 20.0


class GpuSlots:
    def __init__(self, shares: NodeShares, control: Callable[[Slot, str, bool], None]) -> None:
        self._shares = shares
        self._control = control
        self.ledger = GpuLedger(shares.gpu_ids)
        self._using: dict[Slot, tuple[str, ...]] = {}  # a live process's GPUs (maybe none)
        self._close_when_ready: dict[Slot, str] = {}  # the action once it is ready
        self._released = trio.Event()  # set (and replaced) whenever GPUs come back

    def __repr__(self) -> str:
        return f"<GpuSlots {self.ledger!r}>"

    def _own(self, slot: Slot) -> tuple[str, ...]:
        shares = self._shares.shares
        return tuple(shares[slot.share][1]) if slot.share < len(shares) else ()

    def _claim(self, slot: Slot, own: tuple[str, ...]) -> None:
        if self.ledger.holds(slot) is None and slot not in self.ledger.waiting:
            _, revokes = self.ledger.claim(slot, len(own), yields=slot.env is None, prefer=own)
            self._revoke(revokes)

    def busy(self, slot: Slot, busy: bool) -> None:
        """``slot``'s process says (with its pulses) whether work holds its GPUs. O(1) when
        nothing changed."""
        if (slot in self.ledger.busy) != busy and self.ledger.holds(slot) is not None:
            self._revoke(self.ledger.set_busy(slot, busy))

    async def before_start(self, slot: Slot) -> None:
        """Before a process of ``slot`` starts: an environment's worker waits (a while) for
        the GPUs revoked for it, rather than start without them and start again."""
        own = self._own(slot)
        if not own or slot.env is None:
            return
        self._claim(slot, own)
        with trio.move_on_after(GPU_HANDOVER_WAIT_S):
            while slot in self.ledger.waiting and self.ledger.revoked:
                released = self._released
                await released.wait()

    def config(self, slot: Slot) -> dict[str, Any]:
        """The GPU part of the configuration of ``slot``'s next process (it overrides the
        share's): claimed now, or the grant made while it was between processes."""
        shares = self._shares.shares
        base = shares[slot.share][0] if slot.share < len(shares) else {}
        own = self._own(slot)
        if not own:
            return {}
        self._claim(slot, own)
        ids = self.ledger.holds(slot)
        resources = dict(base)
        if ids is None:
            ids = ()
            resources.pop("GPU", None)
            log.warning("%s", self._waiting_why(slot, len(own)))
        else:
            resources["GPU"] = float(len(ids))
        self._using[slot] = ids
        return {"resources": resources, "gpu_ids": list(ids)}

    def _waiting_why(self, slot: Slot, count: int) -> str:
        """The warning for ``slot``, about to start without the GPUs it waits for: who holds
        them, what hands them over, and what the user can do. O(holders)."""
        if slot.env is None:
            holders = sorted(
                {h.env.label for h in self.ledger.held if isinstance(h, Slot) and h.env}
            )
            return (
                f"base worker slot {slot.index} starts without its {count} GPU(s): the workers "
                f"of runtime_env {', '.join(holders) or '(starting)'} hold this node's GPUs (an "
                "environment's workers come first, and keep them until it is released, when the "
                "last driver using it ends). Calls without that runtime_env that ask for "
                "num_gpus wait (their pending warning says so) until then; run the GPU work with the "
                "same runtime_env, or give the node more GPUs, so that they need not wait"
            )
        blockers = self.ledger.busy_blockers()
        label = slot.env.label
        if not blockers:
            return (
                f"worker slot {slot.index} of runtime_env {label} starts without its {count} "
                "GPU(s): every GPU of this node is held by another runtime_env's workers; it "
                "gets one when that environment is released (the last driver using it ends). Calls of this runtime_env that "
                "ask for num_gpus wait meanwhile"
            )
        held = "; ".join(
            f"GPU {','.join(ids)} by base worker slot {h.index}"
            f"{f' (pid {h.proc.pid})' if h.proc is not None else ''}"
            for h, ids in blockers.items()
            if isinstance(h, Slot)
        )
        return (
            f"worker slot {slot.index} of runtime_env {label} starts without its {count} "
            f"GPU(s), and waits for them: {held}, where a live actor or a running call holds "
            "it (num_gpus=). A GPU in use is not taken away (that would kill the work): it "
            "is handed over once that actor ends or that call returns, and this worker then "
            f"starts again with it. Calls of runtime_env {label} that ask for num_gpus wait "
            "meanwhile. To hand it over now, end those actors (ag.kill, or `actorgrid status` "
            "to find them), or create GPU actors with the runtime_env that needs the GPUs"
        )

    def ready(self, slot: Slot) -> None:
        """``slot``'s process is ready: close it now if a grant or a revoke came meanwhile."""
        action = self._close_when_ready.pop(slot, None)
        if action is not None:
            self._close(slot, action)

    def exited(self, slot: Slot) -> None:
        """``slot``'s process ended: the GPUs it ran with come back. (A claim still waiting,
        or granted while it ran without, stays for its next process.)"""
        self._close_when_ready.pop(slot, None)
        if self._using.pop(slot, ()):
            self._grants(self.ledger.release(slot))

    def over(self, slot: Slot) -> None:
        """``slot`` will not be started again."""
        self._using.pop(slot, None)
        self._close_when_ready.pop(slot, None)
        self._grants(self.ledger.release(slot))

    def _grants(self, grants: list[Grant]) -> None:
        self._released.set()
        self._released = trio.Event()
        for grant in grants:
            slot = grant.holder
            assert isinstance(slot, Slot)
            if slot in self._using:  # it runs without: its next process gets them
                self._close(slot)

    def _revoke(self, revokes: list[Revoke]) -> None:
        for revoke in revokes:
            slot = revoke.holder
            assert isinstance(slot, Slot)
            if slot in self._using:  # once nothing holds its GPUs (its worker checks again)
                self._close(slot, YIELD_GPUS)
            else:  # between processes: its next one claims again
                self._grants(self.ledger.release(slot))

    def _close(self, slot: Slot, action: str = "close") -> None:
        if slot.intent is not None:
            return  # it is ending already (closed, restarted): its next process, if any, claims
        if slot.ready:
            self._control(slot, action, True)
        else:
            self._close_when_ready[slot] = action
