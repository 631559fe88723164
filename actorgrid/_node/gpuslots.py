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

A worker share's custom resources (``camera``) are exclusive the same way: a runtime_env's
worker stands beside the base worker whose share it has, and without this both would offer
(and let an actor hold) the one camera. So each share's custom resources are one unit, a
"bundle", of a second ledger with the same rules (an environment's worker first; never
revoked while work holds what the worker offers; the bundle of another share when its own is
held). A worker whose bundle waits starts without custom resources, as one whose GPUs wait
starts without GPUs. Memory stays split between a share's workers, not exclusive.

Everything here runs on the agent's loop; each method is O(GPUs + shares) plus the ledgers'
cost.
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

__all__ = ["GPU_HANDOVER_WAIT_S", "GpuSlots", "custom_of"]

log = logging.getLogger("actorgrid.node")

# How long an environment's worker waits for GPUs that base workers are giving back before it
# starts without them (a base worker's running calls may take long; it gets them later).
GPU_HANDOVER_WAIT_S = 20.0


def custom_of(resources: dict[str, float]) -> dict[str, float]:
    """The custom resources of a worker share (not GPU, not memory)."""
    return {k: v for k, v in resources.items() if k not in ("GPU", "memory", "CPU") and v}


class _Units:
    """One kind of a node's exclusive units: its GPUs, or its shares' custom bundles."""

    def __init__(self, kind: str, ids: list[str], own: Callable[[Slot], tuple[str, ...]]) -> None:
        self.kind = kind
        self.ledger = GpuLedger(ids)
        self.own = own
        self.using: dict[Slot, tuple[str, ...]] = {}  # a live process's units (maybe none)


class GpuSlots:
    def __init__(self, shares: NodeShares, control: Callable[[Slot, str, bool], None]) -> None:
        self._shares = shares
        self._control = control
        bundles = [str(i) for i, (res, _) in enumerate(shares.shares) if custom_of(res)]
        self.gpus = _Units("GPU", list(shares.gpu_ids), self._own_gpus)
        self.bundles = _Units("custom resources", bundles, self._own_bundle)
        self._kinds = tuple(k for k in (self.gpus, self.bundles) if k.ledger.ids)
        self.ledger = self.gpus.ledger
        self._close_when_ready: dict[Slot, str] = {}  # the action once it is ready
        self._released = trio.Event()  # set (and replaced) whenever units come back

    def __repr__(self) -> str:
        return f"<GpuSlots {self.gpus.ledger!r} bundles={self.bundles.ledger!r}>"

    def _share(self, slot: Slot) -> dict[str, float]:
        shares = self._shares.shares
        return shares[slot.share][0] if slot.share < len(shares) else {}

    def _own_gpus(self, slot: Slot) -> tuple[str, ...]:
        shares = self._shares.shares
        return tuple(shares[slot.share][1]) if slot.share < len(shares) else ()

    def _own_bundle(self, slot: Slot) -> tuple[str, ...]:
        return (str(slot.share),) if custom_of(self._share(slot)) else ()

    def _claim(self, units: _Units, slot: Slot, own: tuple[str, ...]) -> None:
        ledger = units.ledger
        if ledger.holds(slot) is None and slot not in ledger.waiting:
            _, revokes = ledger.claim(slot, len(own), yields=slot.env is None, prefer=own)
            self._revoke(units, revokes)

    def busy(self, slot: Slot, busy: bool) -> None:
        """``slot``'s process says (with its pulses) whether work holds what it offers.
        O(1) when nothing changed."""
        for units in self._kinds:
            ledger = units.ledger
            if (slot in ledger.busy) != busy and ledger.holds(slot) is not None:
                self._revoke(units, ledger.set_busy(slot, busy))
                self._released.set()  # before_start looks again
                self._released = trio.Event()

    async def before_start(self, slot: Slot) -> None:
        """Before a process of ``slot`` starts: an environment's worker waits (a while) for
        the units revoked for it, rather than start without them and start again."""
        if slot.env is None:
            return
        waits = []
        for units in self._kinds:
            own = units.own(slot)
            if own:
                self._claim(units, slot, own)
                waits.append(units.ledger)
        with trio.move_on_after(GPU_HANDOVER_WAIT_S):
            # Only for holders on their way out: one whose work holds them may take long.
            while any(
                slot in ledger.waiting and any(h not in ledger.busy for h in ledger.revoked)
                for ledger in waits
            ):
                released = self._released
                await released.wait()

    def config(self, slot: Slot) -> dict[str, Any]:
        """The GPU and custom part of the configuration of ``slot``'s next process (it
        overrides the share's): claimed now, or the grant made while it was between
        processes."""
        resources = dict(self._share(slot))
        config: dict[str, Any] = {}
        own = self.gpus.own(slot)
        if own and self.gpus in self._kinds:
            self._claim(self.gpus, slot, own)
            ids = self.gpus.ledger.holds(slot)
            if ids is None:
                ids = ()
                resources.pop("GPU", None)
                log.warning("%s", self._waiting_why(self.gpus, slot, f"{len(own)} GPU(s)"))
            else:
                resources["GPU"] = float(len(ids))
            self.gpus.using[slot] = ids
            config["gpu_ids"] = list(ids)
        own = self.bundles.own(slot)
        if own and self.bundles in self._kinds:
            self._claim(self.bundles, slot, own)
            mine = custom_of(resources)
            for name in mine:
                del resources[name]
            got = self.bundles.ledger.holds(slot)
            if got is None:
                got = ()
                what = ", ".join(f"{k}={v:g}" for k, v in sorted(mine.items()))
                log.warning("%s", self._waiting_why(self.bundles, slot, what))
            else:
                resources.update(custom_of(self._shares.shares[int(got[0])][0]))
            self.bundles.using[slot] = got
        if not config and slot not in self.bundles.using:
            return {}
        config["resources"] = resources
        return config

    def _waiting_why(self, units: _Units, slot: Slot, what: str) -> str:
        """The warning for ``slot``, about to start without ``what`` (GPUs or its custom
        resources), which it waits for: who holds it, what hands it over, and what the user
        can do. O(holders)."""
        ledger = units.ledger
        asks = "num_gpus" if units is self.gpus else "those resources"
        if slot.env is None:
            holders = sorted({h.env.label for h in ledger.held if isinstance(h, Slot) and h.env})
            return (
                f"base worker slot {slot.index} starts without its {what}: the workers of "
                f"runtime_env {', '.join(holders) or '(starting)'} hold them (an "
                "environment's workers come first, and keep them until it is released, when "
                "the last driver using it ends). Calls without that runtime_env that ask for "
                f"{asks} wait (their pending warning says so) until then; run that work with "
                "the same runtime_env, or give the node more, so that they need not wait"
            )
        blockers = ledger.busy_blockers()
        label = slot.env.label
        if not blockers:
            return (
                f"worker slot {slot.index} of runtime_env {label} starts without its {what}: "
                "another runtime_env's workers hold them; it gets them when that environment "
                "is released (the last driver using it ends). Calls of this runtime_env that "
                f"ask for {asks} wait meanwhile"
            )
        held = "; ".join(
            f"{'GPU ' + ','.join(ids) if units is self.gpus else 'they are held'} by base "
            f"worker slot {h.index}{f' (pid {h.proc.pid})' if h.proc is not None else ''}"
            for h, ids in blockers.items()
            if isinstance(h, Slot)
        )
        return (
            f"worker slot {slot.index} of runtime_env {label} starts without its {what}, and "
            f"waits for them: {held}, where a live actor or a running call holds it (num_gpus=, "
            "resources=, memory=). What work holds is not taken away (that would kill the "
            "work): it is handed over once that actor ends or that call returns, and this "
            f"worker then starts again with it. Calls of runtime_env {label} that ask for "
            f"{asks} wait meanwhile. To hand it over now, end those actors (ag.kill, or "
            "`actorgrid status` to find them), or create them with the runtime_env that "
            "needs it"
        )

    def ready(self, slot: Slot) -> None:
        """``slot``'s process is ready: close it now if a grant or a revoke came meanwhile."""
        action = self._close_when_ready.pop(slot, None)
        if action is not None:
            self._close(slot, action)

    def exited(self, slot: Slot) -> None:
        """``slot``'s process ended: the units it ran with come back. (A claim still waiting,
        or granted while it ran without, stays for its next process.)"""
        self._close_when_ready.pop(slot, None)
        for units in self._kinds:
            if units.using.pop(slot, ()):
                self._grants(units, units.ledger.release(slot))

    def over(self, slot: Slot) -> None:
        """``slot`` will not be started again."""
        self._close_when_ready.pop(slot, None)
        for units in self._kinds:
            units.using.pop(slot, None)
            self._grants(units, units.ledger.release(slot))

    def _grants(self, units: _Units, grants: list[Grant]) -> None:
        self._released.set()
        self._released = trio.Event()
        for grant in grants:
            slot = grant.holder
            assert isinstance(slot, Slot)
            if slot in units.using:  # it runs without: its next process gets them
                self._close(slot)

    def _revoke(self, units: _Units, revokes: list[Revoke]) -> None:
        for revoke in revokes:
            slot = revoke.holder
            assert isinstance(slot, Slot)
            if slot in units.using:  # once nothing holds what it offers (it checks again)
                self._close(slot, YIELD_GPUS)
            else:  # between processes: its next one claims again
                self._grants(units, units.ledger.release(slot))

    def _close(self, slot: Slot, action: str = "close") -> None:
        if slot.intent is not None:
            return  # it is ending already (closed, restarted): its next process, if any, claims
        if slot.ready:
            self._control(slot, action, True)
        else:
            self._close_when_ready[slot] = action
