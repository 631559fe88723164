"""The worker side of calls: runs tasks and hosts actors in the worker's nursery.

- Sync tasks wait in one FIFO queue and run on pool threads while holding ``num_cpus`` of the
  worker's CPUs, so the loop stays free to answer messages. A pool thread that finishes a task
  takes the next one itself: a burst of tasks costs one thread hand-off, not one per task. A
  sync task blocked in ``ag.get`` lends its CPUs back until it wakes. Async tasks are Trio
  tasks in the worker's nursery.
- An actor is one Trio task holding a bounded inbox. A sync class actor's calls go from the
  inbox into its lane, which one pool thread at a time drains in order; async methods run
  concurrently on the loop, up to ``max_concurrency``, started in order. Remote coroutines
  taking a Context read their inbox as a mailbox.
- Delivery never waits: a message for a full inbox is parked in the actor's overflow and moved
  in, in order, as the actor consumes, so one busy actor never holds up the link's other
  actors, its pulses or its replies. Mailbox senders are held back per (link, actor) by credit
  windows (_scheduler/flow.py), which bound the overflow; method calls are not windowed.
- Messages for an actor id this worker has not seen yet (a caller raced its creator) wait in a
  placeholder inbox for PLACEHOLDER_TIMEOUT_S; ended actors leave a tombstone, so late
  messages get ActorDiedError at once.

Executor is built in layers: ``lanes.py`` holds the work items and the queues that run them on
pool threads (TaskQueue, the lanes of sync actors, actor slots), ``running.py`` the executor's
state, tasks and cancel/interrupt (ExecutorTasks), and Executor here adds hosting actors: class
actors, coroutine actors, their mailboxes and flow control.
"""

from __future__ import annotations

import inspect
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._exceptions import ActorDiedError, TaskCancelledError
from .._protocol.ids import ActorId, short
from .._protocol.messages import (
    Ack,
    ActorEnded,
    ActorInfo,
    CallActor,
    CreateActor,
    Deliver,
    DeliverToKey,
    DeliveryFailed,
    Event,
    KillActor,
    Payload,
    Publish,
    SubmitTask,
    TaskResult,
)
from .._scheduler.names import DEFAULT_NAMESPACE
from .._scheduler.restart import Restart, RestartTracker
from .context import Context, Letter
from .inbox import open_inbox
from .keyed import KeyedAgents
from .lanes import (
    _TOMBSTONES_MAX,
    DEFAULT_ASYNC_CONCURRENCY,
    MAILBOX_CAPACITY,
    PLACEHOLDER_TIMEOUT_S,
    _Call,
    _cancelled,
    _construct,
    _describe,
    _Lane,
    _LetterFrom,
    _load_error,
    _refuse,
    _Slot,
    _taken,
    _Task,
    call_reject_letter,
    log,
)
from .restarts import ACTOR_RESTART_POLICY, RestartLog
from .running import ExecutorTasks
from .serialization import box_error, dumps, system_error

if TYPE_CHECKING:
    from .peer import Peer

__all__ = ["Executor"]


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


class Executor(ExecutorTasks):
    """Runs tasks and hosts actors in the worker's nursery (see the module docstring)."""

    _keyed: KeyedAgents | None = None
    _stop_payload: Payload | None = None  # _cancelled_agent's, made once
    # Set when this worker stops (worker.py): its agents end without freeing their names one
    # by one at the head, which frees them all when the worker leaves (100,000 requests at
    # once would outlast the stop).
    stopping = False

    @property
    def keyed(self) -> KeyedAgents:
        """Keyed agents and topic subscribers hosted here (keyed.py)."""
        if self._keyed is None:
            self._keyed = KeyedAgents(self)
        return self._keyed

    def on_deliver_to_key(self, peer: Peer, msg: DeliverToKey) -> None:
        self.keyed.on_deliver(peer, msg)

    def deliver_to_key_nowait(self, msg: DeliverToKey) -> bool:
        return self.keyed.deliver_nowait(msg)

    def on_publish(self, peer: Peer, msg: Publish) -> None:
        self.keyed.on_publish(peer, msg)

    def deliver_local(self, actor_id: ActorId, letter: Letter) -> bool:
        """Put a letter in the mailbox of a coroutine actor hosted here; False if it has none."""
        slot = self.actors.get(actor_id)
        if slot is None or slot.info is None or slot.info.kind != "coroutine":
            return False
        self._enqueue(slot, letter)
        return True

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

    def _slot_for(self, actor_id: ActorId) -> _Slot | None:
        slot = self.actors.get(actor_id)
        if slot is None:
            if actor_id in self.tombstones:
                return None
            slot = self.actors[actor_id] = _Slot(actor_id)
            self.nursery.start_soon(self._expire_placeholder, slot)
        return slot

    async def _expire_placeholder(self, slot: _Slot) -> None:
        await trio.sleep(PLACEHOLDER_TIMEOUT_S)
        if slot.info is None and self.actors.get(slot.actor_id) is slot:
            await self._end(slot, f"no actor {short(slot.actor_id)} was created on this worker")

    def _dead_reason(self, actor_id: ActorId) -> str:
        return self.tombstones.get(actor_id, f"actor {short(actor_id)} is not alive")

    def _claim_slot(self, info: ActorInfo) -> _Slot | None:
        """The slot of a new actor (taking over its placeholder, if messages came first);
        None if an actor with that id exists or has ended here."""
        if info.actor_id in self.tombstones:
            return None
        slot = self.actors.get(info.actor_id)
        if slot is None:
            slot = self.actors[info.actor_id] = _Slot(info.actor_id)
        elif slot.info is not None:
            return None
        slot.info = info = _shared_parts(info)
        if info.mailbox_size and info.mailbox_size != MAILBOX_CAPACITY and not slot.overflow:
            # Messages that came before the actor did stay queued (then it holds more); one
            # whose early messages overflowed keeps the default size.
            early = []
            while True:
                try:
                    early.append(slot.receive.receive_nowait())
                except trio.WouldBlock:
                    break
            slot.send, slot.receive = open_inbox(max(info.mailbox_size, len(early)))
            for item in early:
                slot.send.send_nowait(item)
        return slot

    def _refuse_actor(self, info: ActorInfo, why: str) -> None:
        """An actor that cannot start: end its slot, so its messages are refused and its
        name is freed."""
        slot = self._claim_slot(info)
        if slot is not None:
            self.nursery.start_soon(self._end, slot, f"actor {_describe(info)} {why}")

    def on_create(self, peer: Peer, msg: CreateActor) -> None:
        # The class blob rides only on the first CreateActor of its class on this link, and
        # the spawned tasks may start in any order: load it here, in arrival order.
        try:
            cls = self._code(self.classes, msg.class_id, msg.cls)
        except Exception as exc:
            why = f"could not be created: {_load_error('class', exc)}"
            error = ActorDiedError(f"actor {_describe(msg.actor)} {why}")
            peer.send(TaskResult(msg.task_id, False, system_error(error)))
            self._refuse_actor(msg.actor, why)
            return
        slot = self._claim_slot(msg.actor)
        if slot is None:
            error = ActorDiedError(f"actor {_describe(msg.actor)} already exists or ended")
            peer.send(TaskResult(msg.task_id, False, system_error(error)))
            return
        if msg.actor.detached:
            self.detached[msg.actor.actor_id] = msg
        self.nursery.start_soon(self._run_actor, slot, peer, msg, cls)

    async def _run_actor(self, slot: _Slot, peer: Peer, msg: CreateActor, cls: type) -> None:
        info = msg.actor
        label = _describe(info)
        reason = f"actor {label} was killed"
        try:
            with slot.scope:
                try:
                    await self.holdings.hold(info.actor_id, info.resources)
                    args, kwargs = await self._load_args(msg.args)
                except Exception as exc:
                    reason = f"actor {label} could not be created: {exc}"
                    peer.send(TaskResult(msg.task_id, False, system_error(ActorDiedError(reason))))
                    return
                ok, instance = await self.runtime.pool.run(
                    _construct, cls, args, kwargs, self._where(f"{info.label}.__init__")
                )
                if not ok:
                    from .serialization import loads_error

                    reason = f"actor {label} failed in its constructor: {loads_error(instance)}"
                    peer.send(TaskResult(msg.task_id, False, instance))
                    return
                peer.send(TaskResult(msg.task_id, True, dumps(None)))
                if any(inspect.iscoroutinefunction(getattr(cls, m, None)) for m in dir(cls)):
                    await self._serve_async_actor(slot, instance, msg.max_concurrency)
                else:
                    await self._serve_sync_actor(slot, instance)
        finally:
            with trio.CancelScope(shield=True):
                await self._end(slot, reason)

    async def _serve_sync_actor(self, slot: _Slot, instance: Any) -> None:
        assert slot.info is not None
        lane = slot.lane = _Lane(self, instance, slot.info)
        receive = slot.receive
        try:
            while True:
                try:
                    call = receive.receive_nowait()
                except trio.WouldBlock:
                    call = None  # the inbox holds no None
                except trio.EndOfChannel:
                    return
                if call is None:
                    slot.parked = True  # until a put hands it a call (see on_call)
                    try:
                        call = await receive.receive()
                    except trio.EndOfChannel:
                        return
                    finally:
                        slot.parked = False
                if not isinstance(call, _Call):
                    call_reject_letter(call, slot.info)
                    continue
                if not lane.has_room():
                    await lane.wait_room()
                lane.push(call)
        finally:
            lane.close(f"actor {_describe(slot.info)} was killed")

    async def _serve_async_actor(self, slot: _Slot, instance: Any, max_concurrency: int) -> None:
        assert slot.info is not None
        limit = trio.Semaphore(max_concurrency or DEFAULT_ASYNC_CONCURRENCY)
        async with trio.open_nursery() as calls:
            async for call in slot.receive:
                if not isinstance(call, _Call):
                    call_reject_letter(call, slot.info)
                    continue
                await limit.acquire()  # calls start in the order they arrived
                calls.start_soon(self._run_async_call, slot.info, instance, call, limit)

    async def _run_async_call(
        self, info: ActorInfo, instance: Any, call: _Call, limit: trio.Semaphore
    ) -> None:
        label = f"{info.label}.{call.method}"
        result: tuple[bool, Payload] | None = None
        call.scope = trio.CancelScope()
        try:
            with call.scope:
                if call.cancelled:
                    call.scope.cancel()
                try:
                    method = self.streams.adapt(getattr(instance, call.method))
                    args, kwargs = await self._load_args(call.payload)
                except Exception as exc:
                    result = (False, system_error(exc))
                else:
                    if inspect.iscoroutinefunction(method):
                        try:
                            value = await method(*args, **kwargs)
                        except Exception as exc:
                            result = (False, box_error(exc, self._where(label)))
                        else:
                            result = self.result_of(value, label)
                    else:
                        result = await self.runtime.pool.run(
                            self.call_in_thread, method, call.payload, label, call.running
                        )
        finally:
            limit.release()
            self.tasks.pop(call.task_id, None)
        if result is None:
            result = (False, _cancelled(call.method))
        call.answer(*result)

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
            result = (False, self._cancelled_agent(info))
        task.peer.send(TaskResult(task_id, *result))

    def _cancelled_agent(self, info: ActorInfo) -> Payload:
        """The answer of an agent cancelled: at a worker's stop, one payload pickled once for
        all of them (100,000 agents end at once there)."""
        if not self.stopping:
            return _cancelled(f"actor {_describe(info)}")
        if self._stop_payload is None:
            self._stop_payload = system_error(
                TaskCancelledError(
                    f"the actor was cancelled: its worker {self.runtime.address} stopped "
                    "(the cluster shut down, its node stopped, or the worker was told to stop)"
                )
            )
        return self._stop_payload

    async def _end(self, slot: _Slot, reason: str) -> None:
        """An actor is over: refuse its queued and future messages, free its name."""
        if self._end_nowait(slot, reason):
            assert slot.info is not None
            await self._free_name(slot.info, reason)
        if slot.done is not None:
            slot.done.set()

    def _end_nowait(self, slot: _Slot, reason: str) -> bool:
        """``_end`` but for what waits: True if the actor's name is to be freed at the head
        (``_free_name``). An agent without a name ends in no await and no cancel scope (a
        worker's stop ends 100,000 of them at once)."""
        if self.actors.get(slot.actor_id) is slot:
            del self.actors[slot.actor_id]
        self.detached.pop(slot.actor_id, None)
        self.holdings.release(slot.actor_id)
        self._bury(slot.actor_id, reason)
        slot.send.close()
        for item in slot.receive.drain():
            if type(item) is Payload:  # a send from this process (put_here): told as one
                loopback = self.runtime.peer_for(self.runtime.address)
                loopback.send(DeliveryFailed(slot.actor_id, reason))
            else:
                self._refuse_queued(item, reason)
        overflow = slot.overflow
        while overflow:
            item = overflow.popleft()
            if type(item) is _LetterFrom:
                _taken(item)
            self._refuse_queued(item, reason)
        slot.receive.close()
        info = slot.info
        head = self.runtime.head
        if info is None or head is None or self.stopping:
            # A stopping worker's actors are forgotten with it (the head's worker_gone).
            return False
        if not info.name and not info.detached:
            # Its creator registered it with the head (OwnActor): the head forgets it.
            head.send(ActorEnded(0, info.actor_id, reason))
            return False
        return bool(info.name)

    async def _free_name(self, info: ActorInfo, reason: str) -> None:
        head = self.runtime.head
        assert head is not None
        with trio.move_on_after(5):
            try:
                await head.request(lambda rid: ActorEnded(rid, info.actor_id, reason))
            except ConnectionError:
                pass  # the head is gone; it forgets the name with this worker

    def _bury(self, actor_id: ActorId, reason: str) -> None:
        self.tombstones[actor_id] = reason
        while len(self.tombstones) > _TOMBSTONES_MAX:
            self.tombstones.popitem(last=False)

    def _enqueue(self, slot: _Slot, item: Any) -> bool:
        """Into the mailbox or refused (True), or parked in its overflow while the mailbox is
        full (False): a mailbox message's credit goes back once True, or once _pump moves it.

        Never waits: the link's reader must go on delivering to other actors and reading
        pulses, replies and cancels. Senders of mailbox messages are held back by their
        credit windows instead (_scheduler/flow.py), which bounds the overflow.
        """
        overflow = slot.overflow
        if overflow:  # messages wait ahead of this one: keep the order
            overflow.append(item)
            return False
        try:
            slot.send.send_nowait(item)
            slot.parked = False
        except trio.WouldBlock:
            if overflow is None:
                overflow = slot.overflow = deque()
            overflow.append(item)
            self.nursery.start_soon(self._pump, slot, overflow)
            return False
        except trio.ClosedResourceError:
            self._refuse_queued(item, self._dead_reason(slot.actor_id))
        return True

    def _refuse_queued(self, item: Any, reason: str) -> None:
        # A call is listed in self.tasks from its arrival: once refused it is over, and must
        # not stay listed (an interrupt at shutdown would wait out the grace period for it).
        if isinstance(item, _Call):
            self.tasks.pop(item.task_id, None)
        _refuse(item, reason)

    async def _pump(self, slot: _Slot, overflow: deque[Any]) -> None:
        # Runs while the overflow is not empty; _enqueue starts one when it stops being so.
        # The item leaves the overflow before the send, so that it is either in the inbox
        # (where _end finds it) or refused here, never both: an actor that ends while this
        # waits drains its inbox and overflow at once. Should _enqueue start a second pump
        # while this one's last item is in flight, order still holds: Trio wakes blocked
        # senders first in, first out, and refills the inbox from them before anyone else.
        # A coroutine actor's pump waits for its mailbox to be half empty and then moves
        # messages in without waiting (Mailbox._wait_room), rather than one task switch each.
        while overflow:
            item = overflow.popleft()
            try:
                try:
                    slot.send.send_nowait(item)
                    slot.parked = False
                except trio.WouldBlock:
                    if slot.mailbox is None:
                        await slot.send.send(item)
                        slot.parked = False
                    else:
                        overflow.appendleft(item)  # still first in line, and _end's to refuse
                        await slot.mailbox._wait_room()
                        continue
            except trio.ClosedResourceError:
                if type(item) is _LetterFrom:
                    _taken(item)
                self._refuse_queued(item, self._dead_reason(slot.actor_id))
                return  # the actor ended: _end refused what the overflow still held
            if type(item) is _LetterFrom:
                _taken(item)

    def on_call(self, peer: Peer, msg: CallActor) -> Any:
        call = _Call(peer, msg)
        slot = self._slot_for(msg.actor_id)
        if slot is None:
            _refuse(call, self._dead_reason(msg.actor_id))
            return None
        self.tasks[msg.task_id] = call
        lane = slot.lane
        # Skip the inbox hop only while the feeder waits in receive(): then no call is queued
        # or in transit ahead of this one. An empty inbox is not enough: a call handed to the
        # waiting feeder leaves the inbox at once but reaches the lane only when the feeder
        # runs, and this call must not overtake it; so every put into the inbox clears
        # ``parked`` (a flag, not the channel's statistics(): no record built per call).
        if lane is not None and slot.parked and lane.has_room():
            lane.push(call)
            return None
        self._enqueue(slot, call)
        return None

    def on_deliver(self, peer: Peer, msg: Deliver) -> None:
        letter = _LetterFrom(peer, msg)
        slot = self._slot_for(msg.actor_id)
        if slot is None:
            _taken(letter)
            _refuse(letter, self._dead_reason(msg.actor_id))
        elif self._enqueue(slot, letter):
            _taken(letter)

    def on_kill(self, peer: Peer, msg: KillActor) -> None:
        slot = self.actors.get(msg.actor_id)
        if slot is None:
            if msg.actor_id not in self.tombstones:
                # Killed before its creation arrived (the head kills the actors of a creator
                # that died just after sending it): the creation, when it comes, is refused.
                self._bury(msg.actor_id, f"actor {short(msg.actor_id)} was killed")
            peer.send(Ack(msg.rid))
            return
        done = slot.done
        if done is None:
            done = slot.done = trio.Event()  # made here: also what marks the slot killed
        slot.scope.cancel()
        if slot.info is None:
            self.nursery.start_soon(self._end, slot, f"actor {short(msg.actor_id)} was killed")

        async def ack_when_done() -> None:
            await done.wait()
            peer.send(Ack(msg.rid))

        self.nursery.start_soon(ack_when_done)
