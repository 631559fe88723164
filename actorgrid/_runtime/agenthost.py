"""The worker side of coroutine agents: running one (its code, its restarts, its end) and
same-worker sends into its mailbox. Executor (``executor.py``) hosts them; see there.

An idle agent is kept small here, since a worker hosts 100,000: it parks (parking.py: no Trio
task, no cancel scope, no frame of ours, only its suspended coroutine, its AgentRun, Context,
Mailbox and inbox) whenever it waits on an empty mailbox, from its first wait on: it never
had a Trio task of its own (its start is stepped in a stepper, agentpools.py), whose memory,
once freed, would stay in the worker's RSS among the agents' own. On a worker below PARK_FROM
actors, a parked agent woken BUSY_WAKES times gets a Trio task of its own (``_wake_own``),
which it keeps while it is busy: parked, a message costs a resumer's step, more than a task's
wake (and a message a link's reader puts in its mailbox runs it in the reader's turn:
stepping.py); it parks again once it has taken no message for PARK_IDLE_S (``_park_idle``). While it
has a Trio task: one coroutine frame (its code's restart loop is inline, not a second
coroutine), parking's trampoline, and one cancel scope (the task's, which is the slot's too).
No Event (a KillActor makes the slot's ``done``, which also
marks it killed), no string made until it ends, not its SubmitTask, and its ActorInfo's
strings shared with the other agents of its kind (``_shared_parts``), and so are its start
arguments' short strings (``_shared_args``). The Trio tasks that start and resume parking
agents (steppers, resumers) are ``agentpools.py``'s.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import trio

from .._exceptions import ActorDiedError
from .._protocol.messages import (
    ActorInfo,
    Event,
    Payload,
    SubmitTask,
    TaskResult,
)
from .._scheduler.names import DEFAULT_NAMESPACE
from .agentpools import AgentPools
from .agentruns import (
    _PARKED_SCOPE,
    PARK_FROM,
    PARK_IDLE_S,
    AgentRun,
    _Restarting,
    _shared_args,
    _Stopped,
)
from .agentstops import STOPPED
from .context import Context
from .lanes import _describe, _Slot
from .parking import PARKED, REPARK, drive
from .serialization import box_error, system_error
from .starting import START_BATCH

if TYPE_CHECKING:
    from .._protocol.ids import ActorId
    from .peer import Peer

__all__ = ["AgentHost"]


class AgentHost(AgentPools):
    """Runs coroutine agents and puts same-worker sends into their mailboxes."""

    # Defined by Executor (executor.py), which ends actors.
    _free_name: Callable[[ActorInfo, str], Any]
    # Agents given a Trio task of their own (_wake_own), until they end or park (_park_idle);
    # whether a _park_idle task runs (while agents have a task of their own or are woken), and
    # its checks.
    _tasked: dict[AgentRun, None] | None = None
    _sweeping = False
    idle_checks = 0

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
        held = self.runtime.names.held(namespace or DEFAULT_NAMESPACE, name)
        if held is None or held.address != self.runtime.address:
            return None
        slot = self.actors.get(held.actor_id)
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

    def _start_agent(
        self, peer: Peer, slot: _Slot, fn: Callable[..., Any], msg: SubmitTask
    ) -> None:
        """Start a coroutine agent in the slot that on_submit claimed for it."""
        info = slot.info
        assert info is not None
        run = AgentRun(self, peer, slot, msg.task_id, info.max_restarts)
        self.tasks[msg.task_id] = run
        starts = self._starts
        if starts is None:
            starts = self._starts = deque()
        starts.append((run, fn, msg))
        if self._free_steppers == 0:
            self._stepper_or_watch(starts)

    def _watch_idle(self) -> None:
        """Start the idle checks (``_park_idle``): one task a worker, while agents have a task of
        their own or are woken. A new window of wakes begins (``AgentRun.wake``)."""
        if self._tasked is None:
            self._tasked = {}
        self._sweeping = True
        self.idle_checks += 1
        try:
            self.nursery.start_soon(self._park_idle, self._tasked)
        except RuntimeError:  # the nursery is closing: nothing parks any more
            self._sweeping = False

    def _wake_own(self, run: AgentRun) -> bool:
        """A parked agent woken BUSY_WAKES times (``AgentRun.wake``), on a worker below
        PARK_FROM actors: resumed in a Trio task of its own, which it keeps at its waits until
        it idles; False: resumed by a resumer (at scale, or the nursery is closing)."""
        if len(self.actors) >= PARK_FROM:
            return False
        scope = trio.CancelScope()
        try:
            self.nursery.start_soon(self._live, run)
        except RuntimeError:
            return False
        run.scope = scope
        run.own = True
        if self._tasked is None or not self._sweeping:
            self._watch_idle()
        assert self._tasked is not None
        self._tasked[run] = None
        return True

    async def _park_idle(self, tasked: dict[AgentRun, None]) -> None:
        """Parks the agents that idle in a Trio task of their own (``_wake_own``): every
        PARK_IDLE_S / 2, one waiting on its mailbox that has taken no message since the check
        before is woken with REPARK (parking.py), and parks (if ``may_park`` lets it: one that
        holds a cancel scope or a nursery keeps its task, and is not checked again). Its cost
        is a look at each agent with a task of its own, per check (START_BATCH per loop turn),
        and nothing per message (its mailbox counts what it takes anyway). It ends once a check
        finds no agent with a task of its own and no wake since the check before (a worker
        whose agents are all parked and quiet wakes for nothing: a simulation's virtual day
        would be 172,800 checks); the next wake starts it again."""
        woken = -1
        try:
            while True:
                await trio.sleep(PARK_IDLE_S / 2)
                self.idle_checks += 1
                if not tasked:
                    if self._woken == woken:
                        return
                    woken = self._woken
                    continue
                runs = list(tasked)
                for n, run in enumerate(runs, 1):
                    ctx = run.ctx
                    task = run.driver
                    if task is not None and ctx is not None and run in tasked:
                        received = ctx.mailbox._received
                        if received != run.seen:
                            run.seen = received
                        elif run.slot.receive._getter is task:  # waits on an empty mailbox
                            run.own = False
                            if run.slot.receive.wake_first(task, REPARK):
                                del tasked[run]
                            else:
                                run.own = True
                    if n % START_BATCH == 0:
                        await trio.lowlevel.checkpoint()
                del runs
        finally:
            self._sweeping = False

    async def _run_coroutine_actor(
        self,
        run: AgentRun,
        fn: Callable[..., Any],
        msg: SubmitTask,
        borrowed: trio.CancelScope | None = None,
    ) -> None:
        """A remote coroutine actor's first run: in a Trio task of its own (Starter), or
        stepped in ``_start_inline``'s task under its cancel scope (``borrowed``)."""
        slot = run.slot
        info = slot.info
        assert info is not None
        payload = msg.args
        del msg
        run.ctx = ctx = Context._make(self.runtime, info, slot.receive)
        ctx._run = run
        slot.mailbox = ctx.mailbox
        # A KillActor handled before this task started has cancelled the slot's first scope:
        # then no user code runs at all.
        killed_early = slot.scope.cancel_called
        run.scope = borrowed or trio.CancelScope()
        await self._live(run, None if killed_early else (fn, payload), None, borrowed is not None)

    async def _live(
        self,
        run: AgentRun,
        start: tuple[Callable[..., Any], Payload] | None = None,
        throw: BaseException | None = None,
        borrowed: bool = False,
        resumed: Awaitable[Any] | None = None,
    ) -> None:
        """One Trio task of a coroutine agent: its first (``start``: its code and arguments),
        one that resumes it after a park (parking.py), or one that stops it parked
        (``throw``), or goes on with one ``_reap`` stepped already (``resumed``). It ends
        when the agent parks, or ends the agent.

        What an idle agent holds is kept small (a worker hosts 100,000): parked, its coroutine,
        its run, Context, Mailbox and inbox, and no Trio task or cancel scope; not parked, one
        Trio task, this frame and one cancel scope (the task's, which is the slot's too: a
        KillActor cancels it, and marks the slot killed by making its ``done``). No Event, no
        strings made until it ends, and not the SubmitTask.

        Code that raises is run again, on the same mailbox (messages queued for it are kept),
        while the actor has restarts left (``max_restarts``). A crash loop backs off (the
        restart policy's delays, up to ACTOR_RESTART_POLICY.backoff_max_s) and logs at most one
        line per ACTOR_RESTART_LOG_INTERVAL_S, so code that fails at once can neither starve
        this worker's loop (its pulses, its other actors) nor flood the log.
        """
        slot = run.slot
        info = slot.info
        ctx = run.ctx
        scope = run.scope
        assert info is not None and ctx is not None
        # Stopped parked (_reap: ``throw``), or started under a scope entered already
        # (``borrowed``): no scope of its own to enter and leave; Cancelled ends it here.
        guard: AbstractContextManager[Any] = _Stopped() if throw or borrowed or resumed else scope
        slot.scope = scope
        result: tuple[bool, Payload] | None = None
        reason = ""  # why it ended; "" while it runs (made then: no string per idle agent)
        parked = False
        # Whether its name is still to be freed at the head, in a task of its own: this one
        # is shared (a resumer's, a stepper's, a reaper's), and the other agents it steps
        # must not wait for the head's answer (one agent's end after another: 64 a round trip).
        free = False
        with guard:
            try:
                if start is not None:
                    fn, payload = start
                    del start
                    try:
                        await self.holdings.hold(info.actor_id, info.resources)
                        args, kwargs = await self._load_args(payload)
                    except Exception as exc:
                        result = (False, system_error(exc))
                        reason = f"actor {_describe(info)} could not be started: {exc}"
                    else:
                        run.again = (fn, *_shared_args(args, kwargs))
                        del fn, args, kwargs
                    del payload
                while result is None and (run.coro is not None or run.again is not None):
                    try:
                        if run.coro is None:
                            assert run.again is not None
                            fn, args, kwargs = run.again
                            if run.restarts == 0:  # never run again: its frame holds the rest
                                run.again = None
                            run.coro = fn(ctx, *args, **kwargs)
                            del fn, args, kwargs
                        if resumed is not None:
                            # Taken before it is awaited: if it raises, a restart runs the
                            # code again (``drive``), not this finished awaitable.
                            stepped, resumed = resumed, None
                            value = await stepped
                        else:
                            value = await drive(run, throw)
                    except Exception as exc:
                        run.coro = None
                        throw = None
                        label = _describe(info)
                        reason = f"actor {label} raised {type(exc).__name__}: {exc}"
                        if run.restarts == 0:
                            result = (False, box_error(exc, self._where(f"actor {label}")))
                            break
                        run.restarts -= 1 if run.restarts > 0 else 0
                        if run.restarting is None:
                            run.restarting = _Restarting()
                        ctx._fail_open(exc, self._where(f"actor {label}"))
                        delay_s = run.restarting.next_delay(reason, run.restarts)
                        self.runtime.publish(
                            Event("actor_restarted", time.time(), pid=os.getpid(), detail=reason)
                        )
                        reason = ""
                        # Always a checkpoint, even with no delay: a call that fails before
                        # its first await must not hold the loop.
                        await trio.sleep(delay_s)
                    else:
                        if value is PARKED:
                            parked = True
                            run.scope = slot.scope = _PARKED_SCOPE
                            self._watch_end()
                            return
                        run.coro = None
                        label = _describe(info)
                        result = self.result_of(value, f"actor {label}")
                        reason = f"actor {label} has ended"
            finally:
                if not parked:
                    if self._tasked:
                        self._tasked.pop(run, None)
                    # No cycle outlives it (its objects may be frozen for the collector,
                    # starting.py): its coroutine, and its Context's link to its run.
                    run.coro = run.again = None
                    ctx._run = None
                    killed = slot.done is not None and (result is None or scope.cancelled_caught)
                    if killed or not reason:
                        # One shared string for the agents a stopping worker ends (100,000 at
                        # once).
                        reason = STOPPED if self.stopping else f"actor {_describe(info)} was killed"
                    ctx._close(reason)
                    if self._end_nowait(slot, reason):
                        free = guard is not scope
                        if not free:
                            with trio.CancelScope(shield=True):
                                await self._free_name(info, reason)
                    if slot.done is not None and not free:
                        slot.done.set()
        cancelled = scope.cancel_called or result is None
        if free:
            try:
                self.nursery.start_soon(
                    self._free_and_report, run, reason, killed, cancelled, result
                )
                return
            except RuntimeError:  # the nursery is closing: here, then
                await self._free_and_report(run, reason, killed, cancelled, result)
                return
        self._report(run, reason, killed, cancelled, result)

    async def _free_and_report(
        self,
        run: AgentRun,
        reason: str,
        killed: bool,
        cancelled: bool,
        result: tuple[bool, Payload] | None,
    ) -> None:
        """The end of an agent that ended in a shared task: its name freed, then its result."""
        slot = run.slot
        assert slot.info is not None
        with trio.CancelScope(shield=True):
            await self._free_name(slot.info, reason)
        if slot.done is not None:
            slot.done.set()
        self._report(run, reason, killed, cancelled, result)

    def _report(
        self,
        run: AgentRun,
        reason: str,
        killed: bool,
        cancelled: bool,
        result: tuple[bool, Payload] | None,
    ) -> None:
        """Tell an ended agent's owner how it ended."""
        task_id = run.task_id
        self._ended(task_id)
        if killed:
            result = (False, system_error(ActorDiedError(reason)))
        elif cancelled:
            if self.stopping and self._batch_cancelled(run.peer, task_id):
                return
            assert run.slot.info is not None
            result = (False, self._cancelled_agent(run.slot.info))
        assert result is not None
        run.peer.send(TaskResult(task_id, *result))
