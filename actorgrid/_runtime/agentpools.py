"""The tasks that step a worker's coroutine agents where they park (parking.py): steppers
(``_start_inline``) start them, resumers (``_resume_inline``) resume the parked ones a message
woke. AgentHost (``agenthost.py``) runs the agents; this is how many Trio tasks carry them.

An agent stepped in one of these tasks that parks before it awaits anything else never has a
Trio task of its own; one whose code awaits keeps the task until it parks or ends, and the rest
go on in other tasks of the pool, up to a cap (``_STEPPERS_MAX``): agents that all wait on one
full mailbox wait in the pool's deque, not as thousands of Trio tasks made and ended, whose
memory stays behind, fragmented, among the agents' own.
"""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import trio

from .._protocol.messages import SubmitTask
from .agentruns import _STOPPING_SCOPE, AgentRun
from .agentstops import AgentStops
from .gcpause import freeze
from .heaptrim import trim_heap
from .parking import cancelled_error, carry_on
from .starting import FREEZE_AFTER, START_BATCH

__all__ = ["AgentPools"]

# Steppers (``_start_inline`` tasks) made to start the agents queued while others await: the
# most Trio tasks agents that await at their start (on a full mailbox, a name's first lookup)
# hold, and the most of their first awaits batched in one loop turn; the same for resumers.
# Every agent starts in a stepper (agenthost.py), so a Trio task each of a thousand agents that
# await at their start (the rumour benchmark's first send to its counter) is freed once they
# park, and left behind in the worker's RSS among the agents' own: 1,024 cost ~3 KB an agent
# more than 64 at 1,000 agents (~5 KB a worker's agent, against ~1.6), and ~1 KB at 10,000,
# where a first round of sends by name went as fast with 64 (their lookups batched 64 a turn).
_STEPPERS_MAX = 64
# Resumers (``_resume_inline`` tasks) carry agents woken by a message that await in their turn
# (their sends' credits, a name's lookup): a round of sends by name among 10,000 agents keeps
# thousands of them waiting at once (most on the credits of the one counter they all tell).
# Each carried agent's task, cancel scope and frames (~6 KB) are freed after the round, but
# the pymalloc arenas they filled stay, pinned by what the agents kept meanwhile. So the cap
# is one resumer per _AGENTS_PER_RESUMER agents on the worker, between _RESUMERS_MIN and
# _RESUMERS_MAX (``_resumers_max``). After a round (agents_scale.py --agents N --hops 2), KB
# an agent: 10,000 agents (5,000 a worker), 1,024 resumers 5.4-5.5 (19-21k messages/s), 256
# 4.6-5.0 (25.7-26.8k/s), 312 by the rule 4.7-4.9 (32-33k/s); 1,000 agents, 1,024 10.9-11.3,
# 256 9.3-9.5, 64 by the rule 6.7-7.0 and as fast; 100,000 agents (50,000 a worker), 256 left
# 5.4-7.0 and 1,024 4.4-4.6 (so the rule's cap stays 1,024). With 64 or 128 at 10,000 the
# round went at 8,000-12,000/s (stalls of _STALL_S before each doubling).
_RESUMERS_MAX = 1024
_AGENTS_PER_RESUMER = 16
_RESUMERS_MIN = 64
# How long starts wait while that many steppers all carry agents that await and none of them
# gets through, before the cap doubles (``_unstall``): an agent may await at its start what
# only an agent queued after it gives. Long next to what agents usually await there (a credit
# of a busy mailbox, a name's lookup: milliseconds), short next to a user's patience.
_STALL_S = 0.2
# Wakes after which the resumers, once they have none left, have the heap trimmed
# (heaptrim.py): a burst that freed this many agents' messages and steps is worth a trim; one
# wake in a while never is. A round among 1,000 agents wakes ~1,000 on each of two workers
# (10,000 never trimmed after it): trimmed, 6.7-6.9 KB an agent after it against 7.0-7.2, and
# 4.6-4.9 at 10,000 agents; a trim takes milliseconds, in a thread, once per burst.
_TRIM_AFTER_WAKES = 1_000
# How long no wake must come before the trim: the burst is over (a round's waves of wakes
# follow each other closer than this), its last messages written and freed.
_TRIM_DELAY_S = 0.25


class AgentPools(AgentStops):
    """The steppers and resumers of a worker's parking agents (AgentHost's base)."""

    # Defined by AgentHost: an agent's first run, stepped in a stepper under its scope.
    _run_coroutine_actor: Callable[..., Coroutine[Any, Any, None]]
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
    # As for steppers: the most resumers now (doubled by _unstall_wakes while they stall),
    # agents they carried that got through, whether an _unstall_wakes task runs.
    _resumer_cap = 0
    _resumed_through = 0
    _unstalling_wakes = False
    # Wakes since the heap was last trimmed; whether a _trim_after_burst task runs.
    _woken = 0
    _trimming = False

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
        rescheduled, else one is started (up to the cap: ``_resumer_or_watch``)."""
        wakes = self._wakes
        if wakes is None:
            wakes = self._wakes = deque()
        wakes.append(run)
        self._woken += 1
        idle = self._idle_resumers
        if idle is None:
            idle = self._idle_resumers = {}
        if self._free_resumers > len(idle):
            return  # a free resumer that runs, or will run this turn, takes it
        if idle:
            trio.lowlevel.reschedule(idle.popitem()[0])
            return
        self._resumer_or_watch(wakes)

    def _resumer_or_watch(self, wakes: deque[AgentRun]) -> None:
        """Wakes wait and no resumer is free: one more, or at the cap, watch for a stall (as
        ``_stepper_or_watch``: a burst of wakes whose agents all await, on one full mailbox or
        a name's lookup, holds at most the cap's worth of Trio tasks, not one per agent)."""
        try:
            if self._resumers < (self._resumer_cap or self._resumers_max()):
                self._add_resumer(wakes)
            elif not self._unstalling_wakes:
                self._unstalling_wakes = True
                self.nursery.start_soon(self._unstall_wakes, wakes)
        except RuntimeError:  # the nursery is closed: its end stopped them already
            self._unstalling_wakes = False

    async def _unstall_wakes(self, wakes: deque[AgentRun]) -> None:
        """While wakes wait and every resumer (the cap's worth) carries an agent that awaits:
        when none of them got through for _STALL_S, the cap doubles and one more resumer
        starts (as ``_unstall``), so that agents that await, once woken, what only an agent
        woken after them gives all get through."""
        try:
            while wakes and self._free_resumers == 0:
                through = self._resumed_through
                await trio.sleep(_STALL_S)
                if wakes and self._free_resumers == 0 and self._resumed_through == through:
                    self._resumer_cap = 2 * (self._resumer_cap or self._resumers_max())
                    self._add_resumer(wakes)
        finally:
            self._unstalling_wakes = False

    async def _trim_after_burst(self) -> None:
        """_TRIM_AFTER_WAKES wakes or more came and ran out: what their messages and steps
        freed, glibc keeps in this process's RSS among what the burst left (the names its
        agents looked up); trimmed once the burst is over, no wake for _TRIM_DELAY_S
        (heaptrim.py), off the loop. While wakes keep coming, this task wakes once per
        _TRIM_DELAY_S and no more."""
        try:
            woken = -1
            while woken != self._woken or self._wakes:
                woken = self._woken
                await trio.sleep(_TRIM_DELAY_S)
            self._woken = 0
            await trio.to_thread.run_sync(trim_heap)
        finally:
            self._trimming = False

    def _resumers_max(self) -> int:
        """The most resumers while none stalls: one per _AGENTS_PER_RESUMER agents here,
        between _RESUMERS_MIN and _RESUMERS_MAX."""
        return min(_RESUMERS_MAX, max(_RESUMERS_MIN, len(self.actors) // _AGENTS_PER_RESUMER))

    def _add_resumer(self, wakes: deque[AgentRun]) -> None:
        """One more ``_resume_inline`` task, counted free from now (as ``_add_stepper``)."""
        self.nursery.start_soon(self._resume_inline, wakes)
        self._free_resumers += 1
        self._resumers += 1

    def _more_resumers(self, wakes: deque[AgentRun], want: int) -> None:
        """``want`` more resumers to run in the next turn (and at least one while wakes wait
        and none runs free): waiting ones rescheduled first, a Trio task made only for the
        rest, up to the cap (``_resumer_cap``); at the cap, the wakes wait for a resumer to
        come free, or for a stall (``_resumer_or_watch``)."""
        idle = self._idle_resumers
        assert idle is not None
        want -= self._free_resumers - len(idle)  # free ones that run next turn take some
        while want > 0 and idle:
            trio.lowlevel.reschedule(idle.popitem()[0])
            want -= 1
        cap = self._resumer_cap or self._resumers_max()
        for _ in range(min(want, cap - self._resumers)):
            self._add_resumer(wakes)
        if wakes and self._free_resumers == len(idle):  # none runs free to take them
            if idle:
                trio.lowlevel.reschedule(idle.popitem()[0])
            else:
                self._resumer_or_watch(wakes)

    async def _resume_inline(self, wakes: deque[AgentRun]) -> None:
        """A resumer: resumes woken agents, START_BATCH per loop turn, each stepped in this
        task until it parks again; when none is left it waits for more (up to _STEPPERS_MAX
        resumers wait; one more ends). A message to a parked agent costs no Trio task and no
        cancel scope of its own (this task's scope is its own while it runs). One whose code
        awaits something else (a name's first lookup, a credit, a full mailbox) keeps this
        task, in its scope, which is then its own, until it parks or ends; the rest go on in
        other resumers, waiting ones woken first (as a worker whose agents do not park wakes
        their tasks: a Trio task made per await costs about as much again as the agent's own
        step), up to the cap (woken agents that all look a name up at once look it up
        together, in few loop turns; more of them wait in ``wakes``, not each in a Trio task
        whose memory, freed, stays behind among the agents' own). One stopped while it
        waited here is stopped (as ``_reap``)."""
        idle = self._idle_resumers
        assert idle is not None
        try:
            while True:
                if not wakes:
                    self._resumer_cap = 0  # none waits: no stall now
                    if self._woken >= _TRIM_AFTER_WAKES and not self._trimming:
                        self._trimming = True
                        self.nursery.start_soon(self._trim_after_burst)
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
                            self._resumed_through += 1
                        del carried
        finally:
            self._free_resumers -= 1
            self._resumers -= 1


def _forget_idle(
    idle: dict[trio.lowlevel.Task, None], task: trio.lowlevel.Task, _: Any
) -> trio.lowlevel.Abort:
    """A waiting resumer is cancelled (its worker ends): it waits no more."""
    idle.pop(task, None)
    return trio.lowlevel.Abort.SUCCEEDED
