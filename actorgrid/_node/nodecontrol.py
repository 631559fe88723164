"""The node agent's answers to the head's control requests: close, terminate, restart a
worker; close, terminate or stop the node (a base class of ``NodeAgent``)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._protocol.ids import WorkerId, short
from .._protocol.messages import Ack, ControlNode, ControlWorker, Message
from .._protocol.observe import ReadLogs
from .._runtime.peer import Peer
from .envnode import EnvNode
from .gpuworker import YIELD_GPUS
from .logs import RateLimitedLog, log_errors
from .output import answer_read_logs
from .slots import Slot
from .spawn import send_command, signal_process

log = logging.getLogger("actorgrid.node")

# After a worker's grace period ends, how long to wait for it to exit before SIGKILL.
KILL_MARGIN_S = 1.0
# A closed node agent waits at most this long for its last answer to leave before it stops.
STOP_ACK_TIMEOUT_S = 1.0


class NodeControl:
    """Control requests from the head, applied to the node's worker slots."""

    slots: list[Slot]
    _by_worker: dict[WorkerId, Slot]
    envs: EnvNode
    closed_on_request: bool
    _stopping: bool
    _nursery: trio.Nursery | None
    _errors: RateLimitedLog
    grace_s: float
    log_folder: Any

    async def aclose(self) -> None:
        raise NotImplementedError  # NodeAgent's

    def _handle(self, peer: Peer, message: Message) -> None:
        if isinstance(message, ControlWorker):
            slot = self._by_worker.get(message.worker_id)
            if slot is None:
                peer.send(Ack(message.rid, f"no worker {short(message.worker_id)} on this node"))
                return
            self._control(slot, message.action, message.restart)
            self._ack_when_exited(peer, message.rid, [slot])
        elif self.envs.accepts(message):
            self._background("a runtime_env request", self.envs.handle, peer, message)
        elif isinstance(message, ControlNode):
            self.closed_on_request = True
            live = [s for s in self.slots if s.proc is not None and s.proc.returncode is None]
            if message.action == "stop":  # `actorgrid down`: interrupt, with the grace period
                self._stopping = True
                self._background("stopping this node", self._stop_then_ack, peer, message.rid)
                return
            for slot in live:
                self._control(slot, message.action, False)
            self._ack_when_exited(peer, message.rid, live, then_stop=True)
        elif isinstance(message, ReadLogs):
            self._background("reading logs", answer_read_logs, peer, message, self.log_folder)
        else:
            log.warning("ignoring %s from the head", type(message).__name__)

    def _control(self, slot: Slot, action: str, replace: bool) -> None:
        proc = slot.proc
        if proc is None or proc.returncode is not None:
            return
        slot.intent = action
        slot.replace = replace or action == "restart"
        if action == "terminate":
            signal_process(proc, signal.SIGKILL)
        elif action == "close":
            send_command(proc, "drain")
        elif action == YIELD_GPUS:  # a drain once nothing holds its GPUs (gpuslots.py)
            send_command(proc, YIELD_GPUS)
        else:  # restart: interrupt running work, with the grace period
            signal_process(proc, signal.SIGTERM)
            self._background(
                "killing a worker after its grace period", self._kill_after_grace, proc
            )

    def _ack_when_exited(
        self, peer: Peer, rid: int, slots: list[Slot], *, then_stop: bool = False
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

        self._background("answering a control request", ack)

    def _background(self, what: str, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(log_errors, what, fn, self._errors, *args)

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
            signal_process(proc, signal.SIGKILL)
