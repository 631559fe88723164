"""The worker side of coroutine agents: running one (its code, its restarts, its end) and
same-worker sends into its mailbox. Executor (``executor.py``) hosts them; see there.

An idle agent is kept small here, since a worker hosts 100,000: one coroutine frame (its
code's restart loop is inline, not a second coroutine), one cancel scope (the task's, which is
the slot's too), no Event (a KillActor makes the slot's ``done``, which also marks it killed),
no string made until it ends, not its SubmitTask, and its ActorInfo's strings shared with the
other agents of its kind (``_shared_parts``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._exceptions import ActorDiedError, TaskCancelledError
from .._protocol.messages import (
    ActorInfo,
    Event,
    Payload,
    SubmitTask,
    TaskResult,
    TasksCancelled,
)
from .._scheduler.names import DEFAULT_NAMESPACE
from .._scheduler.restart import Restart, RestartTracker
from .context import Context
from .lanes import _cancelled, _describe, _Slot, _Task, log
from .restarts import ACTOR_RESTART_POLICY, RestartLog
from .running import ExecutorTasks
from .serialization import box_error, system_error

if TYPE_CHECKING:
    from .._protocol.ids import ActorId, ObjectId
    from .peer import Peer

__all__ = ["AgentHost"]

# Ids in one TasksCancelled: a stop that ends 100,000 agents in a turn sends a few frames of
# ~70 KB, not one of 1.7 MB.
_CANCELLED_PER_MESSAGE = 4096

# Why the agents of a stopping worker ended (each has it as its tombstone, shared).
_STOPPED = "the actor was cancelled: its worker stopped"


def _shared_parts(info: ActorInfo) -> ActorInfo:
    """``info`` with its strings interned: the agents of one kind on a worker share one copy of
    their label, kind, address and namespace (each decoded message has its own: ~200 bytes an
    agent)."""
    namespace = info.namespace
    return attrs.evolve(
        info,
        address=sys.intern(info.address),
        kind=sys.intern(info.kind),
        label=sys.intern(info.label),
        namespace=None if namespace is None else sys.intern(namespace),
    )


class _Restarting:
    """A coroutine actor's restarts: its backoff and its quiet log (made at its first)."""

    __slots__ = ("quiet", "tracker")

    def __init__(self) -> None:
        self.tracker = RestartTracker(ACTOR_RESTART_POLICY)
        self.quiet = RestartLog()

    def next_delay(self, reason: str, restarts_left: int) -> float:
        decision = self.tracker.on_exit(trio.current_time())
        assert isinstance(decision, Restart)  # the policy never gives up
        line = self.quiet.line(trio.current_time(), reason, restarts_left, decision.delay_s)
        if line is not None:
            log.warning("%s", line)
        return decision.delay_s


class AgentHost(ExecutorTasks):
    """Runs coroutine agents and puts same-worker sends into their mailboxes."""

    # Defined by Executor (executor.py), which ends actors.
    _end_nowait: Callable[[_Slot, str], bool]
    _free_name: Callable[[ActorInfo, str], Any]
    # Set when this worker stops (worker.py): its agents end without freeing their names one
    # by one at the head, which frees them all when the worker leaves (100,000 requests at
    # once would outlast the stop).
    stopping = False
    _stop_payload: Payload | None = None  # _cancelled_agent's, made once
    # Agents cancelled at the stop in this loop turn, by owner (_batch_cancelled).
    _cancelled_batch: dict[Peer, list[ObjectId]] | None = None

    def deliver_nowait(self, actor_id: ActorId, payload: Payload) -> bool:
        """A send from this process to a coroutine actor hosted here, straight into its
        mailbox when it has room and nothing waits ahead (names.py's fast path); False: send
        it through the loopback peer, under flow control (so that a full mailbox holds its
        local senders back by the same credit window as remote ones: waiting here at once
        could deadlock two agents that send to each other)."""
        slot = self.actors.get(actor_id)
        return slot is not None and self.local_payload(payload) and self.put_here(slot, payload)

    def agent_here(self, name: str, namespace: str | None) -> _Slot | None:
        """The slot of the coroutine agent named so, if it is hosted here and this process
        has its name cached (Context.send's fast path: no lookup, no loopback, no credit)."""
        info = self.runtime.names.get((namespace or DEFAULT_NAMESPACE, name))
        if info is None or info.address != self.runtime.address:
            return None
        slot = self.actors.get(info.actor_id)
        if slot is None or slot.info is None or slot.info.kind != "coroutine":
            return None
        return slot

    def put_here(self, slot: _Slot, payload: Payload) -> bool:
        """Put a send from this process in a local agent's mailbox, if it has room and no
        message waits ahead of this one (parked beside the mailbox, or on the loopback link):
        the payload itself goes in, no letter made (``Mailbox._opened``; refused at the end
        as ``_end_nowait`` says). False: take the flow-controlled path. The caller checked the
        payload (``local_payload``)."""
        if slot.overflow:
            return False
        info = slot.info
        if info is None or info.kind != "coroutine":
            return False
        runtime = self.runtime
        loopback = runtime.peers.get(runtime.address)
        if loopback is not None and loopback.queued:
            return False
        try:
            slot.send.send_nowait(payload)
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        return True

    def local_payload(self, payload: Payload) -> bool:
        """Whether a payload may go straight into a mailbox here (``put_here``): no
        out-of-band buffers (the loopback copies them, so agents share no memory), and not
        over the message cap (the flow-controlled path says why)."""
        return not payload.buffers and len(payload.data) <= self.runtime.max_message_bytes

    async def _run_coroutine_actor(
        self, task: _Task, slot: _Slot, fn: Callable[..., Any], msg: SubmitTask
    ) -> None:
        """A remote coroutine actor: a Trio task in this nursery, in the slot that on_submit
        claimed for it.

        What an idle agent holds here is kept small (a worker hosts 100,000): one coroutine
        (its code's loop is inline, not a second one), one cancel scope (the task's, which is
        the slot's too: a KillActor cancels it, and marks the slot killed by making its
        ``done``), no Event, no strings made until it ends, and not the SubmitTask.

        Code that raises is run again, on the same mailbox (messages queued for it are kept),
        while the actor has restarts left (``max_restarts``). A crash loop backs off (the
        restart policy's delays, up to ACTOR_RESTART_POLICY.backoff_max_s) and logs at most one
        line per ACTOR_RESTART_LOG_INTERVAL_S, so code that fails at once can neither starve
        this worker's loop (its pulses, its other actors) nor flood the log.
        """
        info = slot.info
        assert info is not None
        task_id, payload, restarts = msg.task_id, msg.args, info.max_restarts
        del msg
        result: tuple[bool, Payload] | None = None
        reason = ""  # why it ended; "" while it runs (made then: no string per idle agent)
        ctx = Context._make(self.runtime, info, slot.receive)
        slot.mailbox = ctx.mailbox
        # A KillActor handled before this task started has cancelled the slot's first scope:
        # then no user code runs at all.
        killed_early = slot.scope.cancel_called
        slot.scope = task.scope
        task.label = info.label  # the shared copy (_shared_parts)
        with task.scope:
            try:
                if not killed_early:
                    try:
                        await self.holdings.hold(info.actor_id, info.resources)
                        args, kwargs = await self._load_args(payload)
                    except Exception as exc:
                        result = (False, system_error(exc))
                        reason = f"actor {_describe(info)} could not be started: {exc}"
                    del payload
                    restarting: _Restarting | None = None  # made at its first restart
                    while result is None:
                        try:
                            code = fn(ctx, *args, **kwargs)
                            if restarts == 0:  # never run again: its frame holds what it needs
                                del args, kwargs
                            value = await code
                        except Exception as exc:
                            label = _describe(info)
                            reason = f"actor {label} raised {type(exc).__name__}: {exc}"
                            if restarts == 0:
                                result = (False, box_error(exc, self._where(f"actor {label}")))
                                break
                            restarts -= 1 if restarts > 0 else 0
                            if restarting is None:
                                restarting = _Restarting()
                            ctx._fail_open(exc, self._where(f"actor {label}"))
                            delay_s = restarting.next_delay(reason, restarts)
                            self.runtime.publish(
                                Event(
                                    "actor_restarted", time.time(), pid=os.getpid(), detail=reason
                                )
                            )
                            reason = ""
                            # Always a checkpoint, even with no delay: a call that fails before
                            # its first await must not hold the loop.
                            await trio.sleep(delay_s)
                        else:
                            label = _describe(info)
                            result = self.result_of(value, f"actor {label}")
                            reason = f"actor {label} has ended"
            finally:
                killed = slot.done is not None and (result is None or task.scope.cancelled_caught)
                if killed or not reason:
                    # One shared string for the agents a stopping worker ends (100,000 at once).
                    reason = _STOPPED if self.stopping else f"actor {_describe(info)} was killed"
                ctx._close(reason)
                if self._end_nowait(slot, reason):
                    with trio.CancelScope(shield=True):
                        await self._free_name(info, reason)
                if slot.done is not None:
                    slot.done.set()
        self._ended(task_id)
        if killed:
            result = (False, system_error(ActorDiedError(reason)))
        elif task.scope.cancel_called or result is None:
            if self.stopping and self._batch_cancelled(task.peer, task_id):
                return
            result = (False, self._cancelled_agent(info))
        task.peer.send(TaskResult(task_id, *result))

    def _batch_cancelled(self, peer: Peer, task_id: ObjectId) -> bool:
        """A stopping worker's cancelled agent: told to its owner with the others that end in
        this loop turn, in one TasksCancelled (``_send_cancelled``); False: send its own
        TaskResult (an owner that is no runtime, or no nursery left to send from)."""
        hello = peer.remote_hello
        if hello is None or hello.kind not in ("driver", "worker"):
            return False
        batch = self._cancelled_batch
        if batch is None:
            try:
                self.nursery.start_soon(self._send_cancelled)  # after this turn's agents
            except RuntimeError:
                return False
            batch = self._cancelled_batch = {}
        ids = batch.get(peer)
        if ids is None:
            batch[peer] = [task_id]
        else:
            ids.append(task_id)
        return True

    async def _send_cancelled(self) -> None:
        # No checkpoint: it runs through even once the worker's nursery is cancelled.
        batch, self._cancelled_batch = self._cancelled_batch, None
        value = self._stopped_payload()
        for peer, ids in (batch or {}).items():
            for i in range(0, len(ids), _CANCELLED_PER_MESSAGE):
                peer.send(TasksCancelled(tuple(ids[i : i + _CANCELLED_PER_MESSAGE]), value))

    def _cancelled_agent(self, info: ActorInfo) -> Payload:
        """The answer of an agent cancelled: at a worker's stop, one payload pickled once for
        all of them (100,000 agents end at once there)."""
        if not self.stopping:
            return _cancelled(f"actor {_describe(info)}")
        return self._stopped_payload()

    def _stopped_payload(self) -> Payload:
        if self._stop_payload is None:
            self._stop_payload = system_error(
                TaskCancelledError(
                    f"the actor was cancelled: its worker {self.runtime.address} stopped "
                    "(the cluster shut down, its node stopped, or the worker was told to stop)"
                )
            )
        return self._stop_payload
