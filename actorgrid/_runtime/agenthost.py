"""The worker side of coroutine agents: running one (its code, its restarts, its end) and
same-worker sends into its mailbox. Executor (``executor.py``) hosts them; see there.

An idle agent is kept small here, since a worker hosts 100,000: on a worker that hosts
PARK_FROM actors it parks (parking.py: no Trio task, no cancel scope, no frame of ours, only
its suspended coroutine, its AgentRun, Context, Mailbox and inbox); elsewhere one coroutine
frame (its code's restart loop is inline, not a second coroutine) and one cancel scope (the
task's, which is the slot's too). No Event (a KillActor makes the slot's ``done``, which also
marks it killed), no string made until it ends, not its SubmitTask, and its ActorInfo's
strings shared with the other agents of its kind (``_shared_parts``).
"""

from __future__ import annotations

import contextvars
import os
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractContextManager
from functools import partial
from typing import TYPE_CHECKING, Any

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
from .agentruns import (
    _PARKED_SCOPE,
    _STOPPING_SCOPE,
    PARK_FROM,
    AgentRun,
    _Restarting,
    _Stopped,
)
from .context import Context
from .gcpause import freeze
from .lanes import _cancelled, _describe, _Slot
from .parking import PARKED, cancelled_error, carry_on, drive
from .running import ExecutorTasks
from .serialization import box_error, system_error
from .starting import FREEZE_AFTER, START_BATCH

if TYPE_CHECKING:
    from .._protocol.ids import ActorId, ObjectId
    from .peer import Peer

__all__ = ["AgentHost"]

# Ids in one TasksCancelled: a stop that ends 100,000 agents in a turn sends a few frames of
# ~70 KB, not one of 1.7 MB.
_CANCELLED_PER_MESSAGE = 4096

# Steppers (``_start_inline`` tasks) made to start the agents queued while others await: the
# most Trio tasks agents that await at their start (on a full mailbox, a name's first lookup)
# hold, and the most of their first awaits batched in one loop turn.
_STEPPERS_MAX = 1024

# Why the agents of a stopping worker ended (each has it as its tombstone, shared).
_STOPPED = "the actor was cancelled: its worker stopped"


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
    _told: set[Peer] | None = None  # owners sent a TasksCancelled at the stop
    _watching_end = False  # _watch_end
    _reaping: deque[AgentRun] | None = None  # parked agents to stop in this loop turn
    # Agents to start in _start_inline's tasks; starts since a freeze.
    _starts: deque[tuple[AgentRun, Callable[..., Any], SubmitTask]] | None = None
    # Its _start_inline tasks (steppers), and those of them not carrying an agent that awaits.
    _steppers = 0
    _free_steppers = 0
    _unfrozen = 0
    # Parked agents a message woke, to resume in _resume_inline's tasks; those tasks, and
    # those of them not carrying an agent that awaits.
    _wakes: deque[AgentRun] | None = None
    _resumers = 0
    _free_resumers = 0
    # Resumers waiting for wakes (free, counted in _free_resumers), the last to wait first.
    _idle_resumers: dict[trio.lowlevel.Task, None] | None = None

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
        if not self.parks_agents():
            self.starter.start_soon(self.nursery, self._run_coroutine_actor, run, fn, msg)
            return
        starts = self._starts
        if starts is None:
            starts = self._starts = deque()
        starts.append((run, fn, msg))
        if self._free_steppers == 0:
            self._add_stepper(starts)

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
        them: agents that all wait on one full mailbox wait in ``starts``, not as thousands
        of Trio tasks made and ended (whose memory stays behind, fragmented, among the agents'
        own: ~1 KB an agent at 10,000)."""
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
                        return
                    # Its code awaits: it keeps this task. The rest of this batch go on in
                    # steppers that run together in the next turn, as tasks woken together
                    # do (one for them all would start one per turn when each awaits, and
                    # what they await, a name's lookup say, would not be batched); at least
                    # one stepper is free while starts wait (an agent may await forever).
                    self._free_steppers -= 1
                    more = min(len(starts), START_BATCH - taken, _STEPPERS_MAX - self._steppers)
                    if starts and self._free_steppers == 0:
                        more = max(more, 1)
                    for _ in range(more):
                        self._add_stepper(starts)
                    try:
                        await carry_on(*carried)
                    finally:
                        self._free_steppers += 1
                    del carried
        finally:
            self._free_steppers -= 1
            self._steppers -= 1

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
        run.parkable = self.parks_agents()
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
                        run.again = (fn, args, kwargs)
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
                    # No cycle outlives it (its objects may be frozen for the collector,
                    # starting.py): its coroutine, and its Context's link to its run.
                    run.coro = run.again = None
                    ctx._run = None
                    killed = slot.done is not None and (result is None or scope.cancelled_caught)
                    if killed or not reason:
                        # One shared string for the agents a stopping worker ends (100,000 at
                        # once).
                        reason = (
                            _STOPPED if self.stopping else f"actor {_describe(info)} was killed"
                        )
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

    def _watch_end(self) -> None:
        """At an agent's first park: watch for the end of this worker's nursery, which
        cancels Trio tasks but knows nothing of parked agents (``_stop_parked``)."""
        if not self._watching_end:
            self._watching_end = True
            try:
                self.nursery.start_soon(self._stop_parked)
            except RuntimeError:
                pass  # the nursery is closing: the agents were stopped already

    async def _stop_parked(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            # The worker's nursery is cancelled (its stop, without the SIGTERM path's
            # interrupt_all): its parked agents are stopped too, START_BATCH per loop turn.
            with trio.CancelScope(shield=True):
                parked = [
                    run
                    for run in list(self.tasks.values())
                    if type(run) is AgentRun and run.scope is _PARKED_SCOPE
                ]
                for n, run in enumerate(parked, 1):
                    run.cancel()
                    if n % START_BATCH == 0:
                        await trio.lowlevel.checkpoint()

    def _reap_soon(self, run: AgentRun) -> None:
        """Stop a parked agent (its ``cancel``): with the others stopped in this loop turn, in
        one task (``_reap``)."""
        runs = self._reaping
        if runs is None:
            runs = self._reaping = deque()
            try:
                self.nursery.start_soon(self._reap, runs)
            except RuntimeError:  # the nursery is closed: nothing runs any more
                self._reaping = None
                return
        runs.append(run)

    async def _reap(self, runs: deque[AgentRun]) -> None:
        """Stop parked agents: each in this task, in its cancelled scope, Cancelled thrown in
        where it waits, with no Trio task of its own to start, cancel and unwind. One whose
        code awaits while it ends keeps this task (its scopes and waits are this task's
        from its first step, so it must end here); the rest go on in a new one.

        At a worker's stop (100,000 agents at once) one whose code ends at once is ended
        inline (``_end_reaped``: no coroutine of ``_live`` made and stepped, the answer not
        pickled), and one Cancelled is thrown into each in turn (its traceback and context
        reset): one made per agent was a twentieth of the stop's CPU."""
        if self._reaping is runs:
            self._reaping = None
        # Cancelled: what the code of an agent that awaits while it ends awaits is cancelled,
        # as in its own cancelled scope.
        with trio.CancelScope() as cancelled:
            cancelled.cancel()
            shared: BaseException | None = None
            while runs:
                run = runs.popleft()
                error = shared or cancelled_error()
                if shared is not None:  # what the last agent's end left on it
                    shared.__traceback__ = shared.__context__ = shared.__cause__ = None
                if error is None:  # no Cancelled to throw: resume it in a cancelled scope
                    run.scope = trio.CancelScope()
                    run.scope.cancel()
                    self.nursery.start_soon(self._live, run)
                    continue
                if self.stopping and run.parkable:
                    rest = self._end_reaped(run, error)
                    if rest is None:
                        shared = error
                        continue
                    live = self._live(run, None, None, resumed=rest)
                else:
                    live = self._live(run, None, error)
                try:
                    trap = live.send(None)
                except StopIteration:
                    continue
                if runs:
                    self.nursery.start_soon(self._reap, runs)
                await carry_on(live, trap)
                return

    def _end_reaped(self, run: AgentRun, error: BaseException) -> Awaitable[Any] | None:
        """A stopping worker's parked agent: ``error`` (Cancelled) thrown in; None when it
        ended at once (its ``finally`` ran in its own contextvars; ended as ``_live`` ends
        it), else what ``_live`` goes on with in this task (its code awaited, raised
        something else, or returned)."""
        steps = drive(run, error)
        try:
            trap = steps.send(None)
        except StopIteration as stop:  # it caught the Cancelled and returned
            return _returning(stop.value)
        except BaseException as exc:
            if type(exc) is not type(error):  # e.g. it raised: restarts, boxing (_live's)
                return _raising(exc)
        else:
            return carry_on(steps, trap)  # it awaits while it ends: this task carries it
        # Ended by the Cancelled: as ``_live``'s ``finally`` and end, for its scope cancelled
        # (_STOPPING_SCOPE) and no result.
        slot = run.slot
        slot.scope = run.scope
        ctx = run.ctx
        info = slot.info
        assert ctx is not None and info is not None
        run.coro = run.again = None
        ctx._run = None
        ctx._close(_STOPPED)
        self._end_nowait(slot, _STOPPED)  # False: a stopping worker frees no name itself
        task_id = run.task_id
        if slot.done is not None:  # killed while it stopped
            slot.done.set()
            self._ended(task_id)
            run.peer.send(TaskResult(task_id, False, system_error(ActorDiedError(_STOPPED))))
            return None
        self._ended(task_id)
        if not self._batch_cancelled(run.peer, task_id):
            run.peer.send(TaskResult(task_id, False, self._cancelled_agent(info)))
        return None

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
        self._flush_cancelled()

    def _flush_cancelled(self) -> None:
        batch, self._cancelled_batch = self._cancelled_batch, None
        if not batch:
            return
        value = self._stopped_payload()
        if self._told is None:
            self._told = set()
        for peer, ids in batch.items():
            self._told.add(peer)
            for i in range(0, len(ids), _CANCELLED_PER_MESSAGE):
                peer.send(TasksCancelled(tuple(ids[i : i + _CANCELLED_PER_MESSAGE]), value))

    async def wait_stop_told(self, timeout_s: float) -> None:
        """Wait until the owners of the agents this stopping worker ended have been sent
        their TasksCancelled (written to their sockets, or their links closed), at most
        ``timeout_s``: the worker exits next, and an answer still queued would be lost
        (its owner would see the worker go away instead of the stop's error)."""
        self._flush_cancelled()
        with trio.move_on_after(timeout_s):
            for peer in list(self._told or ()):
                await peer.wait_sent(timeout_s)

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


def _forget_idle(
    idle: dict[trio.lowlevel.Task, None], task: trio.lowlevel.Task, _: Any
) -> trio.lowlevel.Abort:
    """A waiting resumer is cancelled (its worker ends): it waits no more."""
    idle.pop(task, None)
    return trio.lowlevel.Abort.SUCCEEDED


@types.coroutine
def _raising(error: BaseException) -> Generator[Any, Any, Any]:
    """An await that raises ``error`` (what an agent's code raised, for ``_live`` to handle)."""
    raise error
    yield  # a generator


@types.coroutine
def _returning(value: Any) -> Generator[Any, Any, Any]:
    """An await that returns ``value`` (what an agent's code returned, for ``_live``)."""
    return value
    yield  # a generator
