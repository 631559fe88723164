"""The worker side of coroutine agents: running one (its code, its restarts, its end) and
same-worker sends into its mailbox. Executor (``executor.py``) hosts them; see there.

An idle agent is kept small here, since a worker hosts 100,000: on a worker that hosts
PARK_FROM actors it parks (parking.py: no Trio task, no cancel scope, no frame of ours, only
its suspended coroutine, its AgentRun, Context, Mailbox and inbox), and so do those started
from DRIVE_FROM actors on before the worker got there (``_repark``); elsewhere one coroutine
frame (its code's restart loop is inline, not a second coroutine) and one cancel scope (the
task's, which is the slot's too). No Event (a KillActor makes the slot's ``done``, which also
marks it killed), no string made until it ends, not its SubmitTask, and its ActorInfo's
strings shared with the other agents of its kind (``_shared_parts``), and so are its start
arguments' short strings (``_shared_args``).
"""

from __future__ import annotations

import contextvars
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from functools import partial
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
from .agentruns import (
    _PARKED_SCOPE,
    _STOPPING_SCOPE,
    DRIVE_FROM,
    PARK_FROM,
    AgentRun,
    _Restarting,
    _shared_args,
    _Stopped,
)
from .agentstops import STOPPED, AgentStops
from .context import Context
from .gcpause import freeze
from .lanes import _describe, _Slot
from .parking import PARKED, REPARK, cancelled_error, carry_on, drive
from .serialization import box_error, system_error
from .starting import FREEZE_AFTER, START_BATCH

if TYPE_CHECKING:
    from .._protocol.ids import ActorId
    from .peer import Peer

__all__ = ["AgentHost"]

# Steppers (``_start_inline`` tasks) made to start the agents queued while others await: the
# most Trio tasks agents that await at their start (on a full mailbox, a name's first lookup)
# hold, and the most of their first awaits batched in one loop turn.
_STEPPERS_MAX = 1024
# How long starts wait while that many steppers all carry agents that await and none of them
# gets through, before the cap doubles (``_unstall``): an agent may await at its start what
# only an agent queued after it gives. Long next to what agents usually await there (a credit
# of a busy mailbox, a name's lookup: milliseconds), short next to a user's patience.
_STALL_S = 0.2


class AgentHost(AgentStops):
    """Runs coroutine agents and puts same-worker sends into their mailboxes."""

    # Defined by Executor (executor.py), which ends actors.
    _free_name: Callable[[ActorInfo, str], Any]
    # Agents to start in _start_inline's tasks; starts since a freeze.
    _starts: deque[tuple[AgentRun, Callable[..., Any], SubmitTask]] | None = None
    # Its _start_inline tasks (steppers), and those of them not carrying an agent that awaits.
    _steppers = 0
    _free_steppers = 0
    _unfrozen = 0
    # The most steppers now (_STEPPERS_MAX, doubled by _unstall while they stall); agents they
    # carried that got through (parked or ended); whether an _unstall task runs.
    _stepper_cap = _STEPPERS_MAX
    _carried_through = 0
    _unstalling = False
    # Parked agents a message woke, to resume in _resume_inline's tasks; those tasks, and
    # those of them not carrying an agent that awaits.
    _wakes: deque[AgentRun] | None = None
    _resumers = 0
    _free_resumers = 0
    # Resumers waiting for wakes (free, counted in _free_resumers), the last to wait first.
    _idle_resumers: dict[trio.lowlevel.Task, None] | None = None
    # Agents started under drive while agents did not park, until they end or _repark takes
    # them (once agents park); whether a _repark task runs.
    _unparked: dict[AgentRun, None] | None = None
    _reparking = False

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

    def _start_agent(
        self, peer: Peer, slot: _Slot, fn: Callable[..., Any], msg: SubmitTask
    ) -> None:
        """Start a coroutine agent in the slot that on_submit claimed for it."""
        info = slot.info
        assert info is not None
        run = AgentRun(self, peer, slot, msg.task_id, info.max_restarts)
        self.tasks[msg.task_id] = run
        run.parkable = len(self.actors) >= DRIVE_FROM
        if not self.parks_agents():
            if run.parkable:  # it parks once agents park here (_repark)
                unparked = self._unparked
                if unparked is None:
                    unparked = self._unparked = {}
                unparked[run] = None
            self.starter.start_soon(self.nursery, self._run_coroutine_actor, run, fn, msg)
            return
        if self._unparked and not self._reparking:
            self._reparking = True
            self.nursery.start_soon(self._repark, self._unparked)
        starts = self._starts
        if starts is None:
            starts = self._starts = deque()
        starts.append((run, fn, msg))
        if self._free_steppers == 0:
            self._stepper_or_watch(starts)

    async def _start_inline(
        self, starts: deque[tuple[AgentRun, Callable[..., Any], SubmitTask]]
    ) -> None:
        """A stepper: starts agents on a worker where they park, START_BATCH per loop turn
        (as starting.py does, and freezing them for the collector as it does), each stepped in
        this task until it parks: an agent that parks before it awaits anything else never
        has a Trio task of its own. One whose code awaits first keeps this task (its waits are
        this task's from its first step), in its cancel scope, which is then its own, until
        it parks or ends; then this task takes the next ones in a new scope. Meanwhile the
        rest of its batch go on in other steppers (``_add_stepper``), up to _STEPPERS_MAX of
        them (``_unstall`` says when more): agents that all wait on one full mailbox wait in
        ``starts``, not as thousands of Trio tasks made and ended, whose memory stays behind,
        fragmented, among the agents' own (the rumour benchmark's 50,000 agents on a worker
        all telling one counter they are up: ~15,000 such tasks at once, and ~1 KB an agent
        of its RSS left in pymalloc pools unused)."""
        try:
            while starts:
                with trio.CancelScope() as scope:
                    carried = None
                    while carried is None and starts:
                        for n in range(1, min(START_BATCH, len(starts)) + 1):
                            run, fn, msg = starts.popleft()
                            run.context = contextvars.copy_context()  # as a task of its own has
                            first = self._run_coroutine_actor(run, fn, msg, scope)
                            del fn, msg
                            self._unfrozen += 1
                            try:
                                trap = first.send(None)
                            except StopIteration:
                                continue
                            carried, taken = (first, trap), n
                            del first
                            break
                        self._freeze_started()
                        if carried is None:
                            await trio.lowlevel.checkpoint()  # pulses and messages get a turn
                    if carried is None:
                        self._stepper_cap = _STEPPERS_MAX  # none waits: no stall now
                        return
                    # Its code awaits: it keeps this task. The rest of this batch go on in
                    # steppers that run together in the next turn, as tasks woken together
                    # do (one for them all would start one per turn when each awaits, and
                    # what they await, a name's lookup say, would not be batched); at least
                    # one stepper is free while starts wait, up to the cap.
                    self._free_steppers -= 1
                    more = min(len(starts), START_BATCH - taken, self._stepper_cap - self._steppers)
                    for _ in range(more):
                        self._add_stepper(starts)
                    if starts and self._free_steppers == 0:
                        self._stepper_or_watch(starts)
                    try:
                        await carry_on(*carried)
                    finally:
                        self._free_steppers += 1
                        self._carried_through += 1
                    del carried
        finally:
            self._free_steppers -= 1
            self._steppers -= 1

    def _stepper_or_watch(
        self, starts: deque[tuple[AgentRun, Callable[..., Any], SubmitTask]]
    ) -> None:
        """Starts wait and no stepper is free: one more, or at the cap, watch for a stall."""
        if self._steppers < self._stepper_cap:
            self._add_stepper(starts)
        elif not self._unstalling:
            self._unstalling = True
            try:
                self.nursery.start_soon(self._unstall, starts)
            except RuntimeError:  # the nursery is closing: nothing starts any more
                self._unstalling = False

    async def _unstall(
        self, starts: deque[tuple[AgentRun, Callable[..., Any], SubmitTask]]
    ) -> None:
        """While starts wait and every stepper (the cap's worth) carries an agent that awaits:
        when none of them got through for _STALL_S, the cap doubles and one more stepper
        starts (each of its agents that awaits adds one more, up to the new cap). So agents
        that await at their start what only a later agent gives all start, a doubling per
        _STALL_S, while agents waiting on a busy mailbox, which get through one after another,
        hold no more than the cap's worth of Trio tasks."""
        try:
            while starts and self._free_steppers == 0:
                through = self._carried_through
                await trio.sleep(_STALL_S)
                if starts and self._free_steppers == 0 and self._carried_through == through:
                    self._stepper_cap *= 2
                    self._add_stepper(starts)
        finally:
            self._unstalling = False

    def _add_stepper(self, starts: deque[tuple[AgentRun, Callable[..., Any], SubmitTask]]) -> None:
        """One more ``_start_inline`` task, counted free (stepping, not carrying an agent) from
        now, so that a start queued before it runs makes no other."""
        self.nursery.start_soon(self._start_inline, starts)
        self._free_steppers += 1
        self._steppers += 1

    def _freeze_started(self) -> None:
        # Every FREEZE_AFTER agents started (each counted, whichever task goes on with it),
        # as starting.py does: else full collections walk them all, seconds with the loop
        # stopped at 50,000 agents.
        if self._unfrozen >= FREEZE_AFTER:
            self._unfrozen = 0
            freeze()  # thawed later (gcpause.py)

    def _wake_soon(self, run: AgentRun) -> None:
        """A message came for a parked agent: resume it in a resumer's task
        (``_resume_inline``): one that runs already takes it, else one that waits is
        rescheduled, else one is started."""
        wakes = self._wakes
        if wakes is None:
            wakes = self._wakes = deque()
        wakes.append(run)
        idle = self._idle_resumers
        if idle is None:
            idle = self._idle_resumers = {}
        if self._free_resumers > len(idle):
            return  # a free resumer that runs, or will run this turn, takes it
        if idle:
            trio.lowlevel.reschedule(idle.popitem()[0])
            return
        try:
            self._add_resumer(wakes)
        except RuntimeError:  # the nursery is closed: its end stopped them already
            pass

    def _add_resumer(self, wakes: deque[AgentRun]) -> None:
        """One more ``_resume_inline`` task, counted free from now (as ``_add_stepper``)."""
        self.nursery.start_soon(self._resume_inline, wakes)
        self._free_resumers += 1
        self._resumers += 1

    def _more_resumers(self, wakes: deque[AgentRun], want: int) -> None:
        """``want`` more resumers to run in the next turn (and at least one while wakes wait
        and none runs free): waiting ones rescheduled first, a Trio task made only for the
        rest (up to _STEPPERS_MAX in all)."""
        idle = self._idle_resumers
        assert idle is not None
        want -= self._free_resumers - len(idle)  # free ones that run next turn take some
        while want > 0 and idle:
            trio.lowlevel.reschedule(idle.popitem()[0])
            want -= 1
        want = min(want, _STEPPERS_MAX - self._resumers)
        if wakes and self._free_resumers == len(idle):
            want = max(want, 1)
        for _ in range(want):
            self._add_resumer(wakes)

    async def _resume_inline(self, wakes: deque[AgentRun]) -> None:
        """A resumer: resumes woken agents, START_BATCH per loop turn, each stepped in this
        task until it parks again; when none is left it waits for more (up to _STEPPERS_MAX
        resumers wait; one more ends). A message to a parked agent costs no Trio task and no
        cancel scope of its own (this task's scope is its own while it runs). One whose code
        awaits something else (a name's first lookup, a credit, a full mailbox) keeps this
        task, in its scope, which is then its own, until it parks or ends; the rest go on in
        other resumers, waiting ones woken first (as a worker whose agents do not park wakes
        their tasks: a Trio task made per await costs about as much again as the agent's own
        step), up to _STEPPERS_MAX (woken agents that all look a name up at once look it up
        together, in few loop turns). One stopped while it waited here is stopped (as
        ``_reap``)."""
        idle = self._idle_resumers
        assert idle is not None
        try:
            while True:
                if not wakes:
                    if len(idle) >= _STEPPERS_MAX:
                        return
                    task = trio.lowlevel.current_task()
                    idle[task] = None
                    await trio.lowlevel.wait_task_rescheduled(partial(_forget_idle, idle, task))
                    continue
                with trio.CancelScope() as scope:
                    # One scope for the agents this task steps, until one it carried was
                    # cancelled in it (a scope entered per await costs as much as the step).
                    while wakes and not scope.cancel_called:
                        carried = None
                        while carried is None and wakes:
                            n = 0
                            while wakes and n < START_BATCH:
                                n += 1
                                run = wakes.popleft()
                                if run.scope is _STOPPING_SCOPE:
                                    error = cancelled_error()
                                    if error is None:  # resume it in a cancelled scope
                                        run.scope = trio.CancelScope()
                                        run.scope.cancel()
                                        self.nursery.start_soon(self._live, run)
                                        continue
                                    live = self._live(run, None, error)
                                else:
                                    run.scope = scope
                                    live = self._live(run, None, None, True)
                                try:
                                    trap = live.send(None)
                                except StopIteration:
                                    continue
                                carried, taken = (live, trap), n
                                del live
                                break
                            if carried is None and wakes:
                                await trio.lowlevel.checkpoint()  # pulses and messages get a turn
                        if carried is None:
                            break
                        # Its code awaits: it keeps this task. The rest of this batch go on in
                        # resumers that run together in the next turn, as tasks woken together
                        # do; at least one resumer is free while wakes wait.
                        self._free_resumers -= 1
                        self._more_resumers(wakes, min(len(wakes), START_BATCH - taken))
                        try:
                            await carry_on(*carried)
                        finally:
                            self._free_resumers += 1
                        del carried
        finally:
            self._free_resumers -= 1
            self._resumers -= 1

    async def _repark(self, unparked: dict[AgentRun, None]) -> None:
        """The worker began to park agents: the agents started before, under drive, that
        wait for a message in their own Trio task are woken with REPARK (parking.py), so that
        they park now rather than keep their task until their next message (the first
        PARK_FROM agents of a worker, idle for good in a simulation). START_BATCH per loop
        turn; one that runs parks at its next wait by itself. It stops if the worker falls
        back under PARK_FROM (the rest wait for the next time it reaches it)."""
        try:
            while unparked and self.parks_agents():
                for _ in range(min(START_BATCH, len(unparked))):
                    run = unparked.popitem()[0]
                    task = run.driver
                    if task is not None:
                        run.slot.receive.wake_first(task, REPARK)
                await trio.lowlevel.checkpoint()
        finally:
            self._reparking = False

    def parks_agents(self) -> bool:
        """Whether idle agents park now (parking.py): only at scale, where the memory and the
        stop time they save matter; below it an agent keeps its Trio task between messages,
        and a busy agent pays nothing for parking."""
        return len(self.actors) >= PARK_FROM

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
        task = run
        result: tuple[bool, Payload] | None = None
        reason = ""  # why it ended; "" while it runs (made then: no string per idle agent)
        parked = False
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
                            value, resumed = await resumed, None
                        else:
                            value = await (drive(run, throw) if run.parkable else run.coro)
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
                    if self._unparked:
                        self._unparked.pop(run, None)
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
                        with trio.CancelScope(shield=True):
                            await self._free_name(info, reason)
                    if slot.done is not None:
                        slot.done.set()
        task_id = run.task_id
        self._ended(task_id)
        if killed:
            result = (False, system_error(ActorDiedError(reason)))
        elif scope.cancel_called or result is None:
            if self.stopping and self._batch_cancelled(task.peer, task_id):
                return
            result = (False, self._cancelled_agent(info))
        task.peer.send(TaskResult(task_id, *result))


def _forget_idle(
    idle: dict[trio.lowlevel.Task, None], task: trio.lowlevel.Task, _: Any
) -> trio.lowlevel.Abort:
    """A waiting resumer is cancelled (its worker ends): it waits no more."""
    idle.pop(task, None)
    return trio.lowlevel.Abort.SUCCEEDED
