"""A simulated cluster: a head, nodes of in-process workers, and a driver, in one trio.run.

Each simulated process is the real thing (``Head``, a ``Runtime`` with an ``Executor``, a
driver ``Runtime``) given a ``Seams`` of its own: an endpoint of the shared MemoryNetwork and
an InlinePool. The node agent's part is played here: a worker slot is started, registered with
the head, and after a kill started afresh (a new worker id, a new address), as a node agent
restarts a killed worker process. Every random choice (worker ids, placement samples) is drawn
from the simulation's seeded generator.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs
import trio

from .._node.head import Head
from .._protocol.ids import NodeId, WorkerId
from .._protocol.messages import RegisterWorker, WorkerInfo
from .._runtime import current
from .._runtime.core import Runtime
from .._runtime.executor import Executor
from .._runtime.seams import Seams
from .._transport.memory import MemoryNetwork
from ._faults import DelayLink, DropLink, Fault, KillWorker, PartitionNode, worker_host
from ._inline import InlinePool

__all__ = ["SimCluster"]

DRIVER = "driver"
HEAD = "head"
_FAKE_PID = 40000  # simulated processes report pids from here up (they share one real pid)


@attrs.define(eq=False)
class _Slot:
    node: int
    index: int
    host: str
    rt: Runtime | None = None
    scope: trio.CancelScope | None = None
    incarnation: int = 0
    killed: bool = False
    stopped: trio.Event = attrs.Factory(trio.Event)


class SimCluster:
    """The simulated processes of one run and the faults applied to them."""

    def __init__(
        self,
        rng: random.Random,
        network: MemoryNetwork,
        *,
        nodes: int,
        workers_per_node: int,
        num_cpus: float,
        pulse_interval_s: float,
        grace_s: float,
    ) -> None:
        if nodes < 1 or workers_per_node < 1:
            raise ValueError(
                f"a simulation needs at least one node of one worker, not nodes={nodes}, "
                f"workers_per_node={workers_per_node}"
            )
        self.rng = rng
        self.network = network
        self.secret = rng.randbytes(32)
        self.num_cpus = num_cpus
        self.pulse_interval_s = pulse_interval_s
        self.grace_s = grace_s
        self.node_ids = [NodeId(rng.randbytes(16)) for _ in range(nodes)]
        self.slots = {
            s.host: s
            for s in (
                _Slot(n, i, worker_host(n, i))
                for n in range(nodes)
                for i in range(workers_per_node)
            )
        }
        self.head = Head(
            self.secret, pulse_interval_s=pulse_interval_s, transport=network.endpoint(HEAD)
        )
        self.head_address = ""
        self.kills = 0
        self._nursery: trio.Nursery | None = None

    def runtime(self, host: str) -> Runtime:
        """A new runtime for simulated process ``host``, on the simulated network."""
        seams = Seams(transport=self.network.endpoint(host), make_pool=InlinePool)
        rt = Runtime(
            kind="driver" if host == DRIVER else "worker",
            secret=self.secret,
            head_address=self.head_address,
            host=host,
            pulse_interval_s=self.pulse_interval_s,
            seams=seams,
        )
        rt.placement._rng.seed(self.rng.getrandbits(64))
        rt.observe.flush_interval_s = max(rt.observe.flush_interval_s, self.pulse_interval_s)
        return rt

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the head and every worker slot until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.head_address = await nursery.start(self.head.serve)
            for slot in self.slots.values():
                await nursery.start(self._supervise, slot, 0.0)
            task_status.started()

    async def _supervise(
        self, slot: _Slot, delay_s: float, *, task_status: trio.TaskStatus[None]
    ) -> None:
        task_status.started()
        await trio.sleep(delay_s)
        slot.incarnation += 1
        slot.stopped = trio.Event()
        slot.killed = False
        with trio.CancelScope() as slot.scope:
            try:
                await self._serve_worker(slot)
            except BaseException as exc:
                if not slot.killed:
                    raise  # not split: a group of one Cancelled per agent can be huge
                # A killed process just vanishes; a cancelled runtime unwinds instead, and
                # what fails as it does (on links already reset) dies with it. Only its
                # cancellation goes on (to slot.scope, or to whoever else cancelled).
                cancelled = _cancellation(exc)
                if cancelled is not None:
                    raise cancelled from None
            finally:
                slot.rt = None
                slot.stopped.set()

    async def _serve_worker(self, slot: _Slot) -> None:
        rt = self.runtime(slot.host)
        rt.executor = Executor(rt, self.num_cpus, grace_s=self.grace_s)
        current.set_for_task(rt)  # this task's and its children's: the worker's own tasks
        async with trio.open_nursery() as nursery:
            await nursery.start(rt.serve)
            assert rt.headlink is not None
            rt.on_shutdown = lambda _: nursery.cancel_scope.cancel()
            info = WorkerInfo(
                WorkerId(self.rng.randbytes(16)),
                self.node_ids[slot.node],
                rt.address,
                _FAKE_PID + 100 * slot.node + slot.index,
                slot.host,
                self.num_cpus,
            )
            rt.observe.worker_id, rt.observe.node_id = info.worker_id, info.node_id
            rt.observe.hostname = slot.host
            await rt.headlink.request(lambda rid: RegisterWorker(rid, info))
            slot.rt = rt

    # --- faults -------------------------------------------------------------------------------

    def live_workers(self) -> list[str]:
        return [host for host, slot in self.slots.items() if slot.rt is not None]

    def kill_worker(self, host: str | None = None, *, restart_after_s: float | None = 0.0) -> str:
        """Kill worker ``host`` (None: one drawn from the seed) as ``kill -9`` would; its node
        starts a fresh one ``restart_after_s`` later (None: never). Returns the host killed."""
        if host is None:
            live = self.live_workers()
            if not live:
                raise RuntimeError("no live worker to kill in this simulation")
            host = self.rng.choice(live)
        slot = self.slots.get(host)
        if slot is None:
            raise ValueError(
                f"no simulated worker {host!r}; the workers are {', '.join(self.slots)}"
            )
        self.kills += 1
        slot.killed = True
        self.network.crash(host, "the simulation killed this worker")
        if slot.scope is not None:
            slot.scope.cancel()
        if restart_after_s is not None:
            assert self._nursery is not None
            self._nursery.start_soon(self._restart, slot, restart_after_s)
        return host

    async def _restart(self, slot: _Slot, delay_s: float) -> None:
        await slot.stopped.wait()
        assert self._nursery is not None
        await self._nursery.start(self._supervise, slot, delay_s)

    def _node_links(self, node: int) -> list[tuple[str, str]]:
        inside = [h for h, s in self.slots.items() if s.node == node]
        outside = [h for h, s in self.slots.items() if s.node != node] + [HEAD, DRIVER]
        return [(a, b) for a in inside for b in outside]

    def apply(self, fault: Fault, starting: bool) -> None:
        """Start (or end) ``fault`` now."""
        net = self.network
        if isinstance(fault, KillWorker):
            if starting:
                self.kill_worker(fault.worker, restart_after_s=fault.restart_after_s)
        elif isinstance(fault, DropLink):
            (net.drop if starting else net.heal)(fault.a, fault.b)
        elif isinstance(fault, DelayLink):
            if starting:
                net.delay(fault.a, fault.b, fault.by_s)
            else:
                net.heal(fault.a, fault.b)
        elif isinstance(fault, PartitionNode):
            act: Callable[[str, str], None] = net.drop if starting else net.heal
            for a, b in self._node_links(fault.node):
                act(a, b)


def _cancellation(exc: BaseException) -> BaseException | None:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[0]
    return exc if isinstance(exc, trio.Cancelled) else None
