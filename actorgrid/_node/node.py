"""The node agent: starts this machine's worker processes, supervises them, stops them always.

Supervision is a nursery with one task per worker slot. A slot's task starts a worker, waits
for it to exit, reports the exit, and asks its :class:`RestartTracker` whether to start
another (Erlang-style intensity: at most N restarts in T seconds, with backoff); past that it
gives up on the slot and reports the escalation to the head.

Liveness: each worker writes a byte on a private pipe every pulse interval. A worker silent
for 5 intervals after its first pulse is a zombie (hung or stopped): it is killed (SIGKILL
works on a stopped process too) and replaced under a new worker id, so it can never deliver a
stale result or run a call twice. The node itself pulses the head with its availability.

Workers get the cluster secret on stdin, never on the command line or in the environment, and
keep that pipe open: when the agent's process dies, however it dies, each worker reads EOF
and exits, so no worker outlives its node. Commands to a worker (drain) go down the same pipe.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import trio

from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES
from .._protocol.ids import NodeId, WorkerId, new_node_id, new_worker_id, short
from .._protocol.messages import (
    Ack,
    ControlNode,
    ControlWorker,
    Event,
    Hello,
    Message,
    NodeInfo,
    NodeStatus,
    RegisterNode,
)
from .._runtime.peer import Peer
from .._runtime.pulse import DEFAULT_PULSE_INTERVAL_S, PulseMonitor
from .._scheduler.liveness import FailureDetector
from .._scheduler.restart import GiveUp, RestartPolicy, RestartTracker
from .._transport.addresses import local_address_towards
from .._transport.tcp import open_tcp_frame_stream
from .._transport.tls import TLSConfig
from .resources import sample_availability

__all__ = ["DEFAULT_GRACE_S", "NodeAgent", "WorkerStartError"]

log = logging.getLogger("actorgrid.node")

DEFAULT_GRACE_S = 5.0
# After a worker's grace period ends, how long to wait for it to exit before SIGKILL.
KILL_MARGIN_S = 1.0
# A closed node agent waits at most this long for its last answer to leave before it stops.
STOP_ACK_TIMEOUT_S = 1.0


class WorkerStartError(RuntimeError):
    """A worker process could not be started, or kept exiting before it joined the cluster."""


class _Slot:
    """One worker position on this node; its process changes across restarts."""

    def __init__(self, index: int, policy: RestartPolicy) -> None:
        self.index = index
        self.tracker = RestartTracker(policy)
        self.worker_id: WorkerId = new_worker_id()
        self.proc: trio.Process | None = None
        self.intent: str | None = None  # "close", "terminate", "restart" once requested
        self.replace = False  # start a replacement after a requested close
        self.zombie = False
        self.exited = trio.Event()
        self.over = False  # the slot will not be refilled

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"<slot {self.index} worker {short(self.worker_id)} pid={pid}>"


class NodeAgent:
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
    ) -> None:
        self.head_address = head_address
        self.tls = tls
        # Where this node's workers listen: reachable from the rest of the cluster.
        self.host = host or local_address_towards(head_address)
        self.resources = dict(resources or {})
        self.closed_on_request = False  # by Cluster.close_node or `actorgrid down`
        self.node_id: NodeId = new_node_id()
        self._secret = secret
        self.num_workers = num_workers
        self._num_cpus = num_cpus_per_worker
        self._max = max_message_bytes
        self.pulse_interval_s = pulse_interval_s
        self.grace_s = grace_s
        self._policy = restart_policy or RestartPolicy()
        self.slots = [_Slot(i, self._policy) for i in range(num_workers)]
        self._by_worker: dict[WorkerId, _Slot] = {}
        self._pulses: FailureDetector[_Slot] = FailureDetector(pulse_interval_s)
        self._monitor = PulseMonitor(pulse_interval_s)
        self.head: Peer | None = None
        self.failure: str | None = None
        self.failed = trio.Event()
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        self._hostname = socket.gethostname()

    def __repr__(self) -> str:
        return (
            f"<NodeAgent {short(self.node_id)} workers={len(self.pids())}/{self.num_workers} "
            f"head={self.head_address}>"
        )

    def pids(self) -> list[int]:
        """The pids of the worker processes running now."""
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.returncode is None]

    # --- running ---------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join the head, start every worker slot, supervise until cancelled or closed."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._connect_head(nursery)
            await nursery.start(self._monitor.serve)
            nursery.start_soon(self._pulse_head)
            nursery.start_soon(self._watch_worker_pulses)
            async with trio.open_nursery() as slots:
                for slot in self.slots:
                    await slots.start(self._supervise, slot)
                task_status.started()
            # Every slot is over (closed or given up). The agent stays, reporting its pulses,
            # until it is closed or cancelled: an operator can see it and decide.
            await trio.sleep_forever()

    async def _connect_head(self, nursery: trio.Nursery) -> None:
        stream = await open_tcp_frame_stream(
            self.head_address, self._secret, max_message_bytes=self._max, tls=self.tls
        )
        hello = Hello("node", "", os.getpid())
        head = Peer(self.head_address, self._handle, local_hello=hello, monitor=self._monitor)
        self.head = head
        head.on_closed.append(self._head_lost)
        nursery.start_soon(head.run, stream)
        info = NodeInfo(
            self.node_id,
            self._hostname,
            os.getpid(),
            self.num_workers,
            tuple(sorted(self.resources.items())),
        )
        await head.request(lambda rid: RegisterNode(rid, info))

    def _head_lost(self, peer: Peer) -> None:
        if not self._stopping and self._nursery is not None:
            log.warning(
                "lost the head at %s (%s); stopping this node", peer.address, peer.close_reason
            )
            self._nursery.cancel_scope.cancel()

    async def _pulse_head(self) -> None:
        sample_availability()  # primes psutil's CPU counter
        while True:
            await trio.sleep(self.pulse_interval_s)
            if self.head is not None:
                self.head.send(NodeStatus(sample_availability()))

    def emit(self, kind: str, slot: _Slot | None = None, **fields: Any) -> None:
        if slot is not None:
            fields.setdefault("worker_id", slot.worker_id)
            if slot.proc is not None:
                fields.setdefault("pid", slot.proc.pid)
        event = Event(kind, time.time(), node_id=self.node_id, hostname=self._hostname, **fields)
        if self.head is not None:
            self.head.send(event)

    # --- one slot --------------------------------------------------------------------------

    async def _supervise(
        self, slot: _Slot, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        status: trio.TaskStatus[None] | None = task_status
        try:
            while not self._stopping:
                await self._run_one(slot, status)
                status = None
                if self._stopping:
                    return
                intent, slot.intent = slot.intent, None
                if intent in ("close", "terminate") and not slot.replace:
                    self.emit("worker_closed", slot, detail=f"closed on request ({intent})")
                    return
                if intent is None:
                    decision = slot.tracker.on_exit(trio.current_time())
                    if isinstance(decision, GiveUp):
                        self.failure = f"worker slot {slot.index} gave up: {decision.reason}"
                        log.error("%s", self.failure)
                        self.emit("worker_gave_up", slot, detail=decision.reason)
                        self.failed.set()
                        return
                    await trio.sleep(decision.delay_s)
                slot.replace = False
                slot.worker_id = new_worker_id()
        finally:
            slot.over = True

    async def _run_one(self, slot: _Slot, task_status: trio.TaskStatus[None] | None) -> None:
        """Start one incarnation of ``slot`` and wait until it has exited."""
        read_fd, write_fd = os.pipe()
        try:
            proc = await self._spawn(slot, write_fd)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        try:
            await self._watch_one(slot, proc, read_fd, task_status)
        finally:
            if proc.returncode is None:
                # Cancelled (the node is stopping) while this incarnation runs, perhaps one
                # spawned after aclose() looked: it must not outlive the agent, nor go unreaped.
                with trio.CancelScope(shield=True):
                    _signal(proc, signal.SIGKILL)
                    await proc.wait()

    async def _watch_one(
        self,
        slot: _Slot,
        proc: trio.Process,
        read_fd: int,
        task_status: trio.TaskStatus[None] | None,
    ) -> None:
        slot.proc = proc
        slot.zombie = False
        slot.exited = trio.Event()
        self._by_worker[slot.worker_id] = slot
        self.emit("worker_started" if task_status is not None else "worker_restarted", slot)
        if task_status is not None:
            task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_pulses, slot, read_fd)
                code = await proc.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._pulses.remove(slot)
            self._by_worker.pop(slot.worker_id, None)
            slot.exited.set()
        detail = "stopped pulsing and was killed (zombie)" if slot.zombie else ""
        self.emit("worker_died", slot, exit_code=code, detail=detail or _describe_exit(code))
        if not self._stopping and slot.intent is None:
            log.warning("worker pid %d %s", proc.pid, detail or _describe_exit(code))

    async def _spawn(self, slot: _Slot, pulse_fd: int) -> trio.Process:
        config = {
            "head": self.head_address,
            "secret": self._secret.hex(),
            "worker_id": slot.worker_id.hex(),
            "node_id": self.node_id.hex(),
            "num_cpus": self._num_cpus,
            "max_message_bytes": self._max,
            "pulse_fd": pulse_fd,
            "pulse_interval_s": self.pulse_interval_s,
            "grace_s": self.grace_s,
            "host": self.host,
            "tls": None if self.tls is None else self.tls.to_dict(),
        }
        try:
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "actorgrid._node.worker"],
                stdin=subprocess.PIPE,
                pass_fds=(pulse_fd,),
                # Own session: a Ctrl-C in the terminal reaches the driver, which decides.
                start_new_session=True,
            )
        except OSError as exc:
            raise WorkerStartError(f"could not start a worker process: {exc}") from exc
        assert proc.stdin is not None
        try:
            await proc.stdin.send_all(json.dumps(config).encode() + b"\n")
        except BaseException:
            with trio.CancelScope(shield=True):
                _signal(proc, signal.SIGKILL)
                await proc.wait()
            raise
        return proc

    async def _read_pulses(self, slot: _Slot, read_fd: int) -> None:
        stream = trio.lowlevel.FdStream(read_fd)
        try:
            first = True
            while await stream.receive_some(256):
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
            await stream.aclose()

    async def _watch_worker_pulses(self) -> None:
        while True:
            await trio.sleep(self.pulse_interval_s)
            for slot in self._pulses.check(trio.current_time()):
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
                _signal(proc, signal.SIGKILL)

    # --- control ---------------------------------------------------------------------------

    def _handle(self, peer: Peer, message: Message) -> None:
        if isinstance(message, ControlWorker):
            slot = self._by_worker.get(message.worker_id)
            if slot is None:
                peer.send(Ack(message.rid, f"no worker {short(message.worker_id)} on this node"))
                return
            self._control(slot, message.action, message.restart)
            self._ack_when_exited(peer, message.rid, [slot])
        elif isinstance(message, ControlNode):
            self.closed_on_request = True
            live = [s for s in self.slots if s.proc is not None and s.proc.returncode is None]
            if message.action == "stop":  # `actorgrid down`: interrupt, with the grace period
                self._stopping = True
                assert self._nursery is not None
                self._nursery.start_soon(self._stop_then_ack, peer, message.rid)
                return
            for slot in live:
                self._control(slot, message.action, False)
            self._ack_when_exited(peer, message.rid, live, then_stop=True)
        else:
            log.warning("ignoring %s from the head", type(message).__name__)

    def _control(self, slot: _Slot, action: str, replace: bool) -> None:
        proc = slot.proc
        if proc is None or proc.returncode is not None:
            return
        slot.intent = action
        slot.replace = replace or action == "restart"
        if action == "terminate":
            _signal(proc, signal.SIGKILL)
        elif action == "close":
            _send_command(proc, "drain")
        else:  # restart: interrupt running work, with the grace period
            _signal(proc, signal.SIGTERM)
            assert self._nursery is not None
            self._nursery.start_soon(self._kill_after_grace, proc)

    def _ack_when_exited(
        self, peer: Peer, rid: int, slots: list[_Slot], *, then_stop: bool = False
    ) -> None:
        events = [s.exited for s in slots]

        async def ack() -> None:
            for event in events:
                await event.wait()
            if then_stop:
                self._stopping = True
            peer.send(Ack(rid))
            if then_stop and self._nursery is not None:
                await peer.wait_sent(STOP_ACK_TIMEOUT_S)  # the Ack leaves before the link
                self._nursery.cancel_scope.cancel()

        assert self._nursery is not None
        self._nursery.start_soon(ack)

    async def _stop_then_ack(self, peer: Peer, rid: int) -> None:
        await self.aclose()
        peer.send(Ack(rid))
        await peer.wait_sent(STOP_ACK_TIMEOUT_S)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    async def _kill_after_grace(self, proc: trio.Process) -> None:
        with trio.move_on_after(self.grace_s + KILL_MARGIN_S):
            await proc.wait()
        if proc.returncode is None:
            _signal(proc, signal.SIGKILL)

    # --- stopping --------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop every worker: SIGTERM (each has ``grace_s`` to let user code clean up), then
        SIGKILL. Idempotent; returns when every worker process has exited."""
        self._stopping = True
        with trio.CancelScope(shield=True):
            procs = [s.proc for s in self.slots if s.proc is not None]
            for proc in procs:
                if proc.returncode is None:
                    _signal(proc, signal.SIGTERM)
            with trio.move_on_after(self.grace_s + KILL_MARGIN_S):
                for proc in procs:
                    await proc.wait()
            for proc in procs:
                if proc.returncode is None:
                    _signal(proc, signal.SIGKILL)
                    await proc.wait()
            for proc in procs:
                if proc.stdin is not None:
                    await proc.stdin.aclose()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _send_command(proc: trio.Process, command: str) -> None:
    # The stdin pipe is ours alone and a command is a few bytes: it never blocks.
    if isinstance(proc.stdin, trio.lowlevel.FdStream):
        try:
            os.write(proc.stdin.fileno(), command.encode() + b"\n")
        except OSError:
            pass


def _signal(proc: trio.Process, sig: int) -> None:
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
