"""Stepping a Trio task that a link's reader woke, in the reader's own turn.

A link's reader (peer.py) that puts a message in the mailbox of a coroutine agent busy enough
to keep a Trio task of its own (agenthost.py), which waits there (``InboxReceive.park(True)``),
reschedules that task, and Trio runs it in its next batch: after the reader has gone back to
wait on its socket and the loop has polled for I/O again. A ring of agents pays that at every
hop: 11-12 µs from the mailbox put to the agent's code on a 2-core machine, and a second wait
for I/O a hop. Here the reader, once it has dispatched the frames it had buffered, takes each
task it woke off Trio's run queue and runs the step Trio would have run (4.7 µs from the put
to the agent's code, one wait for I/O a hop): the body of Trio's scheduler loop for one task
(its coroutine sent its outcome in its own contextvars Context, with Trio's current task
being that task), and the trap it yields handled as Trio handles it. So the agent's code sees
what it would in its own turn: ``trio.lowlevel.current_task()`` is its own task, its cancel
scopes and deadlines are its task's, a checkpoint reschedules it, a cancellation is delivered
at its next wait, and a task that ends is reported to its nursery as Trio does. A task with
more messages queued behind the one that woke it is left to Trio (a stream: it takes more of
them a wake once the reader has read on; stepped, agent_rate_remote lost 2-3 %). What the
tasks stepped wake in turn (a send to an agent on the same worker) is stepped after them, in
the same turn, up to _STEPS_MAX tasks.

Invariants: a task is stepped only while it is in Trio's run queue (rescheduled and not run
since, so it is no other task's turn and Trio will not run it too), once per wake; never
while Trio instruments of task steps are installed (they would miss the step), nor in guest
mode; only on the Trio versions in ``_TRIO_TESTED`` (private attributes of Trio's runner and
tasks), else every woken task is left to Trio. Cost: a list append per wake while a reader
dispatches, and per task stepped a look at the end of the run queue.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio
from outcome import Error, Value

__all__ = ["Queue", "counts", "step_woken", "trio_version", "woke", "woken"]


def trio_version() -> tuple[int, int]:
    """Trio's (major, minor) release; (0, 0) if unreadable."""
    try:
        major, minor = trio.__version__.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


# The Trio releases whose scheduler loop ``_step`` follows (trio/_core/_run.py, the body of
# ``unrolled_run``'s ``while batch`` loop): on any other, nothing is stepped here.
_TRIO_TESTED = (0, 25) <= trio_version() < (0, 40)
try:
    from trio._core._run import GLOBAL_RUN_CONTEXT
    from trio._core._traps import (
        CancelShieldedCheckpoint,
        PermanentlyDetachCoroutineObject,
        WaitTaskRescheduled,
    )
except ImportError:  # pragma: no cover - a Trio whose internals moved
    _TRIO_TESTED = False


class Queue(Protocol):
    """What a woken task took its message from (inbox.InboxReceive)."""

    def queued(self) -> bool:
        """Whether more messages wait there."""
        ...


# What the reader dispatching now woke: each task, and the inbox its message came from
# (``woke``); None while no reader dispatches.
woken: list[tuple[trio.lowlevel.Task, Queue]] | None = None
# Steps run here, and woken tasks left to Trio (run already, in the batch it runs, or with
# more messages queued), since this process started: what a trace reads (ring_trace.py).
counts = {"stepped": 0, "left": 0}


# The most tasks one step_woken steps (those the reader woke and those they woke in turn).
_STEPS_MAX = 64


def woke(task: trio.lowlevel.Task, queue: Queue) -> None:
    """``task`` was just rescheduled with a message from ``queue``: stepped in the reader's
    turn if a reader dispatches now."""
    tasks = woken
    if tasks is not None:
        tasks.append((task, queue))


def step_woken(tasks: list[tuple[trio.lowlevel.Task, Queue]]) -> None:
    """Step each task of ``tasks`` that is still in Trio's run queue and has no more messages
    queued, once, in this task's turn; ``tasks`` is left empty. Loop only, outside any step
    of those tasks. One with more messages queued is left to Trio: messages keep coming
    for it (a stream), and it takes more of them a wake once the reader has read on."""
    if not _TRIO_TESTED:
        tasks.clear()
        return
    context: Any = GLOBAL_RUN_CONTEXT
    runner = context.runner
    instruments = runner.instruments
    if "before_task_step" in instruments or "after_task_step" in instruments or runner.is_guest:
        tasks.clear()
        return
    global woken
    runq = runner.runq
    me = context.task
    # What the tasks stepped wake in their turn (an agent's send to one on this worker) is
    # stepped after them, up to _STEPS_MAX in all: a ring of agents on one worker would
    # otherwise go round in this task's turn, with no I/O between.
    woken = tasks
    try:
        for n, (task, queue) in enumerate(tasks, 1):
            if n > _STEPS_MAX:
                break
            if task._next_send_fn is None:
                counts["left"] += 1
                continue  # run since, and waits again
            if queue.queued():
                counts["left"] += 1
                continue
            if runq and runq[-1] is task:
                runq.pop()
            else:
                try:
                    runq.remove(task)  # Task compares by identity
                except ValueError:
                    counts["left"] += 1
                    continue  # in the batch Trio runs now: its turn comes anyway
            counts["stepped"] += 1
            _step(runner, task, context)
    finally:
        woken = None
        context.task = me
        tasks.clear()


def _step(runner: Any, task: Any, context: Any) -> None:
    """One step of ``task``, as Trio's scheduler loop runs it (see the module docstring)."""
    context.task = task
    send = task._next_send_fn
    value = task._next_send
    task._next_send_fn = task._next_send = None
    end: Value[Any] | Error | None = None
    try:
        trap = task.context.run(send, value)
    except StopIteration as stop:
        end = Value(stop.value)
    except BaseException as exc:
        end = Error(exc)
    if end is not None:
        # Outside the except blocks, as Trio does: its exception is no other's __context__.
        runner.task_exited(task, end)
        return
    task._schedule_points += 1
    if trap is CancelShieldedCheckpoint:
        runner.reschedule(task)
    elif type(trap) is WaitTaskRescheduled:
        task._cancel_points += 1
        task._abort_func = trap.abort_func
        if runner.ki_pending and task is runner.main_task:
            task._attempt_delivery_of_pending_ki()
        task._attempt_delivery_of_any_pending_cancel()
    elif type(trap) is PermanentlyDetachCoroutineObject:
        runner.task_exited(task, trap.final_outcome)
    else:
        error = TypeError(
            f"trio.run received unrecognized yield message {trap!r}: an agent or actor awaited "
            "something of another async framework (asyncio?), which does not work under Trio"
        )
        runner.reschedule(task, error)
        task._next_send_fn = task.coro.throw
