"""How a worker's coroutine agents end when it stops: 100,000 at once, in a few seconds of CPU
at most, with their pulses on time. AgentHost (``agenthost.py``) runs them; this is its stop.

- Parked agents (no Trio task: parking.py) are reaped in one task per loop turn (``_reap``):
  one Cancelled thrown into each in turn, in its own contextvars, and one whose code ends at
  once is ended inline (``_end_reaped``), with no coroutine of ``_live`` made and stepped.
- The owners of the agents ended in a loop turn are told in one TasksCancelled each, with one
  answer pickled once for all (``_batch_cancelled``, ``_stopped_payload``); the worker waits,
  within its grace period, until those are written before it exits (``wait_stop_told``).
- A worker whose nursery is cancelled without the SIGTERM path (``_stop_parked``) stops its
  parked agents too: Trio's cancel knows nothing of them.
"""

from __future__ import annotations

import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

import trio

from .._exceptions import ActorDiedError, TaskCancelledError
from .._protocol.messages import ActorInfo, Payload, TaskResult, TasksCancelled
from .agentruns import _PARKED_SCOPE, AgentRun
from .lanes import _cancelled, _describe, _Slot
from .parking import cancelled_error, carry_on, drive
from .running import ExecutorTasks
from .serialization import system_error
from .starting import START_BATCH

if TYPE_CHECKING:
    from .._protocol.ids import ObjectId
    from .peer import Peer

__all__ = ["STOPPED", "AgentStops"]

# Ids in one TasksCancelled: a stop that ends 100,000 agents in a turn sends a few frames of
# ~70 KB, not one of 1.7 MB.
_CANCELLED_PER_MESSAGE = 4096

# Why the agents of a stopping worker ended (each has it as its tombstone, shared).
STOPPED = "the actor was cancelled: its worker stopped"


class AgentStops(ExecutorTasks):
    """The stop of a worker's coroutine agents (AgentHost's base)."""

    # Defined by Executor (executor.py), which ends actors.
    _end_nowait: Callable[[_Slot, str], bool]
    # Defined by AgentHost: one Trio task of an agent (its first, a resumed, or its end).
    _live: Callable[..., Coroutine[Any, Any, None]]
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
                if self.stopping:
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
        ctx._close(STOPPED)
        self._end_nowait(slot, STOPPED)  # False: a stopping worker frees no name itself
        task_id = run.task_id
        if slot.done is not None:  # killed while it stopped
            slot.done.set()
            self._ended(task_id)
            run.peer.send(TaskResult(task_id, False, system_error(ActorDiedError(STOPPED))))
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
