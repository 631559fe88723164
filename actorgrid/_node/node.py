"""The node agent: starts this machine's worker processes, supervises them, stops them always.

Supervision is a nursery with one task per worker slot. A slot's task starts a worker, waits
for it to exit, reports the exit, and asks its :class:`RestartTracker` when to start another.
A slot is never abandoned (unless an explicit ``max_restarts`` limit says so):

- a worker that had become *ready* (registered with the head; it says so with ``!`` on its
  pulse pipe) and then exited was stopped from outside, or by a task that crashed it: it is
  replaced after a short backoff (at most a few seconds);
- a worker that exited before it was ready (an import error, a failing setup, a process that
  could not be spawned) is a *crash loop*: the slot backs off up to about a minute and keeps
  trying, and each failure is reported as a ``worker_crash_loop`` event carrying the last
  lines of the worker's error output. When every slot of the node is in a crash loop (has
  failed at least twice in a row) the node is *unhealthy*: a ``node_unhealthy`` event,
  ``Cluster.status()`` shows the node's state as "unhealthy", and ``NodeAgent.unhealthy``
  says why; the first worker to become ready again ends it (``node_healthy``).

Workers' error output goes through the agent (which copies it to its own stderr) so that it
can keep the last lines of each worker for those reports. Every background task of the agent
is supervised too: an exception in a pulse, a psutil sample or a spawn is logged
(rate-limited) and that part starts again; it never ends the agent.

Liveness: each worker writes a byte on a private pipe every pulse interval. A worker silent
for 5 intervals after its first pulse is a zombie (hung or stopped): it is killed (SIGKILL
works on a stopped process too) and replaced under a new worker id, so it can never deliver a
stale result or run a call twice. The node itself pulses the head with its availability;
a node that loses its head keeps its workers while it rejoins (``rejoin.py``).

Workers get the cluster secret on stdin, never on the command line or in the environment (the
agent's own ``ACTORGRID_SECRET`` is removed from theirs), and keep that pipe open: when the
agent's process dies, however it dies, each worker reads EOF and exits, so no worker outlives
its node. Commands to a worker (drain) go down the same pipe.

A stall of the agent itself (its loop blocked, its process stopped) is not held against its
workers: their pulses wait unread in the pipes, so after a late check each gets a fresh window.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from typing import Any

import attrs
import trio

from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES
from .._protocol.ids import NodeId, WorkerId, new_node_id, new_worker_id, short
from .._protocol.messages import (
    Ack,
    Event,
    Hello,
    Message,
    NodeInfo,
    NodeStatus,
    RegisterNode,
    RejoinNode,
)
from .._runtime.peer import Peer
from .._runtime.pulse import DEFAULT_PULSE_INTERVAL_S, STALLED_AFTER_INTERVALS, PulseMonitor
from .._scheduler.liveness import FailureDetector
from .._scheduler.restart import GiveUp, RestartPolicy
from .._transport.addresses import local_address_towards
from .._transport.tcp import ListenLimits, open_tcp_frame_stream
from .._transport.tls import TLSConfig
from . import spawn
from .envnode import EnvLaunch, EnvNode
from .gpuslots import GpuSlots
from .gpuworker import GPU_BUSY_BYTE, GPU_FREE_BYTE
from .logs import RateLimitedLog, keep_running
from .nodecontrol import KILL_MARGIN_S, NodeControl
from .objectstore import NodeStore
from .output import OutputSink, WorkerPumps, log_folder, start_pumps
from .rejoin import REJOIN_INTERVAL_S, rejoin_head
from .resources import sample_availability
from .shares import NodeShares
from .slots import Slot, tail_of
from .spawn import (
    READY_BYTE,
    WorkerStartError,
    describe_exit,
    signal_process,
)

__all__ = ["DEFAULT_GRACE_S", "REJOIN_INTERVAL_S", "NodeAgent", "WorkerStartError"]

log = logging.getLogger("actorgrid.node")

DEFAULT_GRACE_S = 5.0
# After a worker exits, how long its error output may take to reach EOF (a grandchild process
# can hold the pipe open) before the agent stops reading it.
STDERR_DRAIN_S = 1.0
# A node is unhealthy once every slot has failed this many times in a row before ready: one
# failure may be bad luck (a worker killed while it imports), two in a row is a loop.
UNHEALTHY_AFTER_FAILURES = 2


class NodeAgent(NodeControl):
    def __init__(
        self,
        head_address: str,
        secret: bytes,
        *,
        num_workers: int,
        num_cpus_per_worker: float = 1.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        pulse_interval_s: float = DEFAULT_PULSE_INTERVAL_S,
        grace_s: float = DEFAULT_GRACE_S,
        restart_policy: RestartPolicy | None = None,
        resources: dict[str, float] | None = None,
        host: str | None = None,
        tls: TLSConfig | None = None,
        listen_limits: ListenLimits | None = None,
        labels: dict[str, str] | None = None,
        object_store_memory: int | None = None,
    ) -> None:
        self.head_address = head_address
        self.tls = tls
        self.listen_limits = listen_limits  # for its workers' listeners
        # Where this node's workers listen: reachable from the rest of the cluster.
        self.host = host or local_address_towards(head_address)
        # What this node offers and each worker's share of it (GPUs, memory, custom ones).
        self.shares = NodeShares(num_workers, num_cpus_per_worker, resources, labels)
        self.resources = dict(self.shares.total)
        self.gpus = GpuSlots(self.shares, self._control)  # each GPU to one worker at a time
        self.closed_on_request = False  # by Cluster.close_node or `actorgrid down`
        self.fenced = False  # stopped by the head that declared it dead: join again at once
        self.node_id: NodeId = new_node_id()
        self.store = NodeStore(self.node_id, object_store_memory)  # its shared-memory objects
        self._secret = secret
        self.num_workers = num_workers
        self._num_cpus = num_cpus_per_worker
        self._max = max_message_bytes
        self.pulse_interval_s = pulse_interval_s
        self.grace_s = grace_s
        self._policy = restart_policy or RestartPolicy()
        self.slots = [Slot(i, self._policy) for i in range(num_workers)]
        self._by_worker: dict[WorkerId, Slot] = {}
        self._pulses: FailureDetector[Slot] = FailureDetector(pulse_interval_s)
        self._monitor: PulseMonitor[Peer] = PulseMonitor(pulse_interval_s)
        self.head: Peer | None = None
        # Set when a slot gives up or every slot is in a crash loop (``ag.init`` waits on it).
        self.failure: str | None = None
        self.failed = trio.Event()
        # Why the node is unhealthy (every slot in a crash loop), or None.
        self.unhealthy: str | None = None
        self._errors = RateLimitedLog(log)
        self._availability: Any = None
        # Pids of the worker processes running now; read from other threads by pids().
        self._live_pids: dict[int, None] = {}
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        self._hostname = socket.gethostname()
        self.envs = EnvNode(self, self._hostname)
        # Workers' output: tagged lines for the drivers, and a log file per worker.
        self.output = OutputSink(self.node_id, self._hostname)
        self.log_folder = log_folder(self.node_id)

    def __repr__(self) -> str:
        return (
            f"<NodeAgent {short(self.node_id)} workers={len(self.pids())}/{self.num_workers} "
            f"head={self.head_address}>"
        )

    def pids(self) -> list[int]:
        """The pids of the worker processes running now. Safe from any thread: it reads a
        dict the agent's loop keeps, never a process object (whose ``returncode`` needs the
        loop)."""
        return list(self._live_pids)

    # --- running ---------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join the head, start every worker slot, supervise until cancelled or closed."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.store.serve)
            await self._connect_head(nursery)
            await nursery.start(self._monitor.serve)
            errors = self._errors
            nursery.start_soon(keep_running, "the pulse to the head", self._pulse_head, errors)
            nursery.start_soon(
                keep_running, "the watch on worker pulses", self._watch_worker_pulses, errors
            )
            nursery.start_soon(self.output.serve, self._send_head)
            async with trio.open_nursery() as slots:
                for slot in self.slots:
                    await slots.start(self._supervise, slot)
                task_status.started()
            # Every slot is over (closed or given up). The agent stays, reporting its pulses,
            # until it is closed or cancelled: an operator can see it and decide.
            await trio.sleep_forever()

    async def _connect_head(self, nursery: trio.Nursery, *, rejoin: bool = False) -> str | None:
        """Join the head (``rejoin``: again, under this node's identity, keeping its
        workers); None once joined, or why the head refused this node back."""
        stream = await open_tcp_frame_stream(
            self.head_address, self._secret, max_message_bytes=self._max, tls=self.tls
        )
        hello = Hello("node", "", os.getpid())
        head = Peer(self.head_address, self._handle, local_hello=hello, monitor=self._monitor)
        nursery.start_soon(head.run, stream)
        info = NodeInfo(
            self.node_id,
            self._hostname,
            os.getpid(),
            self.num_workers,
            tuple(sorted(self.resources.items())),
            tuple(sorted(self.shares.labels.items())),
        )
        kept = tuple(s.worker_id for s in self.slots if s.proc is not None and s.ready)
        try:
            if rejoin:
                reply = await head.request(lambda rid: RejoinNode(rid, info, kept))
            else:
                reply = await head.request(lambda rid: RegisterNode(rid, info))
        except BaseException:
            head.abort("the node could not join the head")
            raise
        assert isinstance(reply, Ack)
        if reply.error is not None:
            head.abort("the head refused this node back")
            return reply.error
        self.head = head
        head.on_closed.append(self._head_lost)
        return None

    def _send_head(self, message: Message) -> None:
        if self.head is not None:
            self.head.send(message)

    def _head_lost(self, peer: Peer) -> None:
        if self._stopping or self._nursery is None or peer is not self.head:
            return
        log.warning(
            "lost the head at %s (%s); reconnecting, keeping this node's workers",
            peer.address,
            peer.close_reason,
        )
        self._background("rejoining the head", self._rejoin)

    async def _rejoin(self) -> None:
        """Rejoin the head under this node's identity; if it refuses, or does not answer for
        too long, stop (fencing this node's workers) for ``serve_node`` to join it again as
        a new node. See rejoin.py."""
        assert self._nursery is not None
        nursery = self._nursery
        outcome = await rejoin_head(
            lambda: self._connect_head(nursery, rejoin=True),
            self.head_address,
            self.pulse_interval_s,
            self._errors,
        )
        if outcome.refused is None and self.head is not None:
            self.head.send(self.envs.held())  # a restarted head learns them again
        if self._stopping or outcome.refused is None:
            return
        log.warning("%s: stopping this node's workers; joining as a new node", outcome.refused)
        self.fenced = outcome.answered
        nursery.cancel_scope.cancel()

    async def _pulse_head(self) -> None:
        self._sample()  # primes psutil's CPU counter
        while True:
            await trio.sleep(self.pulse_interval_s)
            availability = self._sample()
            if self.head is not None and availability is not None:
                self.head.send(NodeStatus(availability))

    def _sample(self) -> Any:
        """This machine's availability now, or the last one sampled if psutil fails (out of
        file descriptors, /proc unreadable): a failed sample never costs a pulse."""
        try:
            self._availability = attrs.evolve(
                sample_availability(), **self.store.statistics().availability_fields()
            )
        except Exception:
            self._errors.exception(
                "psutil", "could not sample this machine's resources; the pulse repeats the last"
            )
        return self._availability

    def emit(self, kind: str, slot: Slot | None = None, **fields: Any) -> None:
        if slot is not None:
            fields.setdefault("worker_id", slot.worker_id)
            if slot.proc is not None:
                fields.setdefault("pid", slot.proc.pid)
        event = Event(kind, time.time(), node_id=self.node_id, hostname=self._hostname, **fields)
        if self.head is not None:
            self.head.send(event)

    # --- one slot --------------------------------------------------------------------------

    async def _supervise(
        self, slot: Slot, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        try:
            while not self._stopping:
                try:
                    await self._run_one(slot)
                except Exception:
                    # A fault of this supervision, not of the worker: the slot goes on.
                    slot.ready = False
                    slot.last_exit = "could not be supervised (see the error logged above)"
                    self._errors.exception(
                        "supervise", "supervising worker slot %d failed", slot.index
                    )
                if self._stopping:
                    return
                intent, slot.intent = slot.intent, None
                if intent in ("close", "terminate") and not slot.replace:
                    self.emit("worker_closed", slot, detail=f"closed on request ({intent})")
                    return
                if slot.env is not None and (slot.released or not slot.ready):
                    return  # its env is gone, or its setup failed: envnode reports that
                if intent is None:
                    decision = slot.tracker.on_exit(trio.current_time(), ready=slot.ready)
                    if isinstance(decision, GiveUp):
                        self.failure = f"worker slot {slot.index} gave up: {decision.reason}"
                        log.error("%s", self.failure)
                        self.emit("worker_gave_up", slot, detail=decision.reason)
                        self.failed.set()
                        return
                    if decision.crash_loop:
                        self._report_crash_loop(slot, decision.crash_loop, decision.delay_s)
                    await trio.sleep(decision.delay_s)
                slot.replace = False
                slot.worker_id = new_worker_id()
        finally:
            slot.over = True
            self.gpus.over(slot)

    def _report_crash_loop(self, slot: Slot, times: int, delay_s: float) -> None:
        tail = tail_of(slot)
        detail = (
            f"worker slot {slot.index} {slot.last_exit} before it was ready, {times} "
            f"time{'s' if times > 1 else ''} in a row; trying again in {delay_s:g} s. The last "
            f"lines of its error output:\n{tail}"
        )
        log.warning("%s", detail)
        self.emit("worker_crash_loop", slot, detail=detail)
        looping = all(
            s.tracker.crash_loop >= UNHEALTHY_AFTER_FAILURES for s in self.slots if not s.over
        )
        if looping and self.unhealthy is None:
            self.unhealthy = (
                f"all workers of node {short(self.node_id)} ({self._hostname}) are in a crash "
                f"loop: {tail}"
            )
            log.error("%s", self.unhealthy)
            self.emit("node_unhealthy", detail=self.unhealthy)
            self.failure = self.unhealthy
            self.failed.set()

    def _on_ready(self, slot: Slot) -> None:
        slot.ready = True
        self.gpus.ready(slot)
        slot.tracker.on_ready()
        if self.unhealthy is not None:
            self.unhealthy = None
            detail = f"worker slot {slot.index} is ready again: the crash loop is over"
            log.warning("%s", detail)
            self.emit("node_healthy", slot, detail=detail)

    async def _run_one(self, slot: Slot) -> None:
        """Start one incarnation of ``slot`` and wait until it has exited (or could not
        start: that is an exit before ready too)."""
        slot.ready = False
        slot.stderr_tail.clear()
        slot.incarnations += 1
        try:
            await self.gpus.before_start(slot)
            proc, read_fd = await self._spawn(slot)
        except WorkerStartError as exc:
            slot.last_exit = f"could not be started ({exc})"
            slot.stderr_tail.append(str(exc))
            self._errors.warning("spawn", "worker slot %d: %s", slot.index, exc)
            self.emit("worker_died", slot, detail=slot.last_exit)
            return
        self._live_pids[proc.pid] = None
        try:
            await self._watch_one(slot, proc, read_fd)
        finally:
            if proc.returncode is None:
                # Cancelled (the node is stopping) while this incarnation runs, perhaps one
                # spawned after aclose() looked: it must not outlive the agent, nor go unreaped.
                with trio.CancelScope(shield=True):
                    signal_process(proc, signal.SIGKILL)
                    await proc.wait()
            self._live_pids.pop(proc.pid, None)
            self.store.owner_gone(proc.pid)  # what it owned in the store goes with it

    async def _watch_one(self, slot: Slot, proc: spawn.WorkerProcess, read_fd: int) -> None:
        slot.proc = proc
        slot.zombie = False
        slot.exited = trio.Event()
        self._by_worker[slot.worker_id] = slot
        self.emit("worker_started" if slot.incarnations == 1 else "worker_restarted", slot)
        pulses_done = trio.Event()
        pumps: WorkerPumps | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_pulses, slot, read_fd, pulses_done)
                pumps = start_pumps(
                    nursery, proc, slot.worker_id, self.log_folder, self.output, slot.stderr_tail
                )
                code = await proc.wait()
                # What it wrote before it died is still in the pipes: read it (a READY_BYTE
                # there decides how its exit counts) up to EOF, or for at most a moment.
                with trio.move_on_after(STDERR_DRAIN_S):
                    await pulses_done.wait()
                    await pumps.wait()
                nursery.cancel_scope.cancel()
        finally:
            if pumps is not None:
                pumps.close()
            self._pulses.remove(slot)
            self._by_worker.pop(slot.worker_id, None)
            self.gpus.exited(slot)
            slot.exited.set()
        slot.last_exit = describe_exit(code)
        detail = "stopped pulsing and was killed (zombie)" if slot.zombie else slot.last_exit
        self.emit("worker_died", slot, exit_code=code, detail=detail)
        if not self._stopping and slot.intent is None:
            log.warning("worker pid %d %s", proc.pid, detail)

    async def _spawn(self, slot: Slot) -> tuple[spawn.WorkerProcess, int]:
        """A new worker process for ``slot`` with its configuration sent, and the read end of
        its pulse pipe. A worker that dies while it is being configured is returned all the
        same: it is an exit before ready, which the caller sees when it reaps it."""
        try:
            read_fd, write_fd = os.pipe()
        except OSError as exc:
            raise WorkerStartError(f"could not make a pulse pipe for a worker: {exc}") from exc
        limits = self.listen_limits
        config = {
            "head": self.head_address,
            "secret": self._secret.hex(),
            "worker_id": slot.worker_id.hex(),
            "node_id": self.node_id.hex(),
            "num_cpus": self._num_cpus,
            "max_message_bytes": self._max,
            "pulse_fd": write_fd,
            "pulse_interval_s": self.pulse_interval_s,
            "grace_s": self.grace_s,
            "host": self.host,
            "tls": None if self.tls is None else self.tls.to_dict(),
            "listen_limits": None if limits is None else attrs.asdict(limits),
            **self.shares.config(slot.share),
            **self.gpus.config(slot),
            "env": None if slot.env is None else slot.env.worker_config(),
            "store": self.store.config(),
        }
        try:
            if slot.env is None:
                proc = await spawn.open_worker_process(write_fd)
            else:
                proc = await spawn.open_env_worker_process(write_fd, slot.env.environ, slot.env.cwd)
        except OSError as exc:
            os.close(read_fd)
            raise WorkerStartError(f"could not start a worker process: {exc}") from exc
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        assert proc.stdin is not None
        try:
            await proc.stdin.send_all(json.dumps(config).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            # It died (or was killed) before it read its configuration.
            log.warning("worker pid %d exited while it was being started: %s", proc.pid, exc)
        except BaseException:
            with trio.CancelScope(shield=True):
                signal_process(proc, signal.SIGKILL)
                await proc.wait()
            os.close(read_fd)
            raise
        return proc, read_fd

    async def _read_pulses(self, slot: Slot, read_fd: int, done: trio.Event) -> None:
        stream = trio.lowlevel.FdStream(read_fd)
        try:
            first = True
            while data := await stream.receive_some(256):
                if READY_BYTE in data and not slot.ready:
                    self._on_ready(slot)
                if GPU_BUSY_BYTE in data or GPU_FREE_BYTE in data:  # a worker with GPUs
                    self.gpus.busy(slot, data.rfind(GPU_BUSY_BYTE) > data.rfind(GPU_FREE_BYTE))
                now = trio.current_time()
                if first:
                    # Watched only from the first pulse on: start-up has its own time limit.
                    self._pulses.add(slot, now)
                    first = False
                else:
                    self._pulses.heard(slot, now)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            done.set()
            await stream.aclose()

    async def _watch_worker_pulses(self) -> None:
        last = trio.current_time()
        while True:
            await trio.sleep(self.pulse_interval_s)
            now = trio.current_time()
            if now - last > STALLED_AFTER_INTERVALS * self.pulse_interval_s:
                # This agent was stalled, not its workers: their pulses wait unread in the
                # pipes. Each gets a fresh window (PulseMonitor does the same for links).
                for slot in self._by_worker.values():
                    self._pulses.heard(slot, now)
            last = now
            if self._stopping:
                # aclose() bounds each worker by its grace period, then SIGKILL: a worker busy
                # ending 50,000 agents (or this agent, busy with their results) is no zombie.
                continue
            for slot in list(self._pulses.check(now)):
                proc = slot.proc
                if proc is None or proc.returncode is not None:
                    continue
                slot.zombie = True
                log.warning(
                    "worker pid %d sent no pulse for %g s: killing it as a zombie",
                    proc.pid,
                    self._pulses.timeout_s,
                )
                self.emit("worker_zombie", slot)
                signal_process(proc, signal.SIGKILL)

    # --- runtime environments (envnode.py decides; these start and stop their slots) -------

    async def start_env_slots(self, launch: EnvLaunch, count: int) -> list[Slot]:
        assert self._nursery is not None
        self.slots = [s for s in self.slots if not (s.over and s.env is not None)]
        started = []
        for share in range(count):
            slot = Slot(len(self.slots), self._policy, share)
            slot.env = launch
            self.slots.append(slot)
            started.append(slot)
            await self._nursery.start(self._supervise, slot)
        return started

    def close_env_slots(self, key: str) -> None:
        for slot in self.slots:
            if slot.env is not None and slot.env.key == key:
                slot.released = True
                self._control(slot, "close", False)

    # --- stopping --------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop every worker: SIGTERM (each has ``grace_s`` to let user code clean up), then
        SIGKILL. Idempotent; returns when every worker process has exited."""
        self._stopping = True
        with trio.CancelScope(shield=True):
            procs = [s.proc for s in self.slots if s.proc is not None]
            for proc in procs:
                if proc.returncode is None:
                    signal_process(proc, signal.SIGTERM)
            with trio.move_on_after(self.grace_s + KILL_MARGIN_S):
                for proc in procs:
                    await proc.wait()
            for proc in procs:
                if proc.returncode is None:
                    signal_process(proc, signal.SIGKILL)
                    await proc.wait()
            for proc in procs:
                if proc.stdin is not None:
                    await proc.stdin.aclose()
            await self.envs.aclose()
            self.store.aclose_nowait()  # after every worker exited: no writer is left
