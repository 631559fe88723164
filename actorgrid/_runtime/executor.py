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
- A send from this process to an agent hosted here (``Context.send``, names.py's fast path)
  goes straight into its mailbox while it has room and nothing waits ahead: the payload
  itself (no letter, no loopback frame, no credit); a full mailbox first gets a loop turn to
  drain, then the sender takes the flow-controlled path like a remote one.
- An idle coroutine agent parks (parking.py): no Trio task, only its suspended coroutine, its
  run and its inbox (~2.1 KB traced); new agents are stepped until they park in one task,
  START_BATCH per loop turn, with no task each. On a worker below PARK_FROM actors a busy one
  gets a Trio task of its own until it idles (agenthost.py): then it costs one Trio task, one
  coroutine frame, one cancel scope, its Context, Mailbox and inbox (~4 KB traced). A stopping worker ends them
  START_BATCH per loop turn, each with no await, one shared reason and one shared
  cancellation payload; parked ones by Cancelled thrown in, with no task to cancel.
- A quiet call (``quiet.py``) that a pool thread here makes to a sync actor hosted here goes
  straight into its lane while nothing of this process waits ahead of it
  (``call_from_thread``): no loop wake, as a call to another worker goes straight to its
  socket (``Peer.send_threadsafe``).
- Messages for an actor id this worker has not seen yet (a caller raced its creator) wait in a
  placeholder inbox for PLACEHOLDER_TIMEOUT_S; ended actors leave a tombstone, so late
  messages get ActorDiedError at once.

Executor is built in layers: ``lanes.py`` holds the work items and the queues that run them on
pool threads (TaskQueue, the lanes of sync actors, actor slots), ``running.py`` the executor's
state, tasks and cancel/interrupt (ExecutorTasks), ``agenthost.py`` the runs of coroutine agents
and same-worker sends (AgentHost), and Executor here adds hosting actors: class actors, the
slots and mailboxes of all actors, their ends and flow control.
"""

from __future__ import annotations

import inspect
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from .._exceptions import ActorDiedError, NotInitializedError
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
    KillActor,
    Payload,
    Publish,
    TaskResult,
)
from .agenthost import AgentHost
from .agentruns import _shared_parts
from .context import Letter
from .inbox import open_inbox
from .inline import run_inline, trial_methods, trial_ran
from .keyed import KeyedAgents
from .lanes import (
    _TOMBSTONES_MAX,
    DEFAULT_ASYNC_CONCURRENCY,
    ENDED_BATCH,
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
    call_reject_letter,
)
from .serialization import box_error, dumps, system_error

if TYPE_CHECKING:
    from .peer import Peer

__all__ = ["Executor"]


class Executor(AgentHost):
    """Runs tasks and hosts actors in the worker's nursery (see the module docstring)."""

    _keyed: KeyedAgents | None = None

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

    def _trial_ran(self, cls: type, name: str, elapsed: float) -> None:
        """A pool thread: a run of a method on trial ended (inline.trial_ran), told through
        the portal's queue, after what the run handed to the loop there: its fire-and-forget
        calls that could not go straight from the thread. Once moved to the loop, the method's
        next runs send from the loop, and must not overtake those (order per caller)."""
        try:
            self.runtime.portal.call_soon(trial_ran, cls, name, elapsed)
        except NotInitializedError:
            pass  # the loop has ended: nothing runs there any more

    async def _serve_sync_actor(self, slot: _Slot, instance: Any) -> None:
        assert slot.info is not None
        lane = slot.lane = _Lane(self, instance, slot.info)
        lane.trial, lane.trial_ran = trial_methods(type(instance)), self._trial_ran  # inline.py
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
            if not run_inline(self, lane, call, self.runtime.address):  # inline.py
                lane.push(call)
            return None
        self._enqueue(slot, call)
        return None

    def call_from_thread(self, peer: Peer, msg: CallActor) -> bool:
        """A pool thread of this process, whose user code makes a quiet call (``quiet.py``) to
        a sync actor hosted here: put it straight into the actor's lane, and True. Then no
        loop wakes for it (not for the portal, the loopback or the inbox), and the lane's drain
        starts on a pool thread at once: a ring of actors by handle on one worker hops from
        thread to thread.

        False (nothing done) unless that keeps the order of the calls before it, made from
        any thread here: none waits for the loop (the caller saw the portal idle), on the
        loopback (``peer.idle``) or in the actor's inbox or overflow (its feeder is parked in
        receive). The loop only moves calls onward, so none of them can reappear behind this
        one; calls from other processes race it as they race each other. A call run on the
        loop holds the lane (``take_for_inline``), so the actor's calls still run one at a
        time. Out-of-band buffers would be shared with the caller: such a call goes round.
        """
        slot = self.actors.get(msg.actor_id)
        if (
            slot is None or not slot.parked or slot.overflow or msg.args.buffers or not peer.idle()  # type: ignore[attr-defined]
        ):
            return False
        lane = slot.lane
        if lane is None:
            return False
        call = _Call(peer, msg)
        self.tasks[msg.task_id] = call  # (the loop lists and interrupts it from here on)
        if not lane.push_from_thread(call):
            del self.tasks[msg.task_id]
            return False
        if len(self._ended_later) >= ENDED_BATCH:  # (the loop may have no other work)
            self.runtime.portal.call_soon(self.drain_ended)
        return True

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
        run = slot.mailbox._ctx._run if slot.mailbox is not None else None
        if run is not None:
            run.cancel()  # a coroutine agent, parked or not (agenthost.py)
        else:
            slot.scope.cancel()
        if slot.info is None:
            self.nursery.start_soon(self._end, slot, f"actor {short(msg.actor_id)} was killed")

        async def ack_when_done() -> None:
            await done.wait()
            peer.send(Ack(msg.rid))

        self.nursery.start_soon(ack_when_done)
