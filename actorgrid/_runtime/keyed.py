"""Virtual agents and topics, the worker side: activations of keyed agents, topic fan-out.

A ``DeliverToKey`` goes to the worker's ``ActivationTable`` (``_scheduler/activation.py``),
which says deliver, activate, forward or hold; this shell does it. An activation is a Trio task
in the executor's nursery running the kind's coroutine with a Context of its own (``ctx.key``
is its key); its mailbox ends when the table deactivates it (idle for ``idle_timeout``, or
moved by a membership change), so the agent's code after ``async for msg in ctx.mailbox``
runs as its on-deactivate hook (save state there) and the agent returns. When it has returned
the table releases the messages that came meanwhile to the next activation.

Nothing sent by key vanishes (``confirms.py``): a fire-and-forget message from another process
is confirmed to its sender when its agent takes it, or when this worker hands it on to the
key's new owner (which then counts it until that worker confirms it); one still here when this
worker dies is reported lost by its sender. What an agent that raised or returned left in its
mailbox is refused to its senders: an ask raises ``ActorDiedError``, a fire-and-forget message
is reported undelivered. An ask is never sent again: the agent may have acted on it.

A ``Publish`` is put in the mailbox of each of this worker's subscribers of the topic, in the
order published; ended subscribers are dropped as they are met. A publish is not confirmed: a
subscriber that ends, or dies with its worker, is gone, and what was published to it with it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from .._exceptions import ActorDiedError
from .._protocol.ids import ActorId, new_actor_id
from .._protocol.messages import (
    ActorInfo,
    AskReply,
    Credit,
    DeliverToKey,
    DeliveryFailed,
    Payload,
    Publish,
)
from .._scheduler.activation import (
    Activate,
    ActivationTable,
    Arrived,
    Command,
    Deactivate,
    Deliver,
    Ended,
    Forward,
    Ident,
    Idle,
    Members,
)
from .context import Context, Letter
from .inbox import InboxReceive, InboxSend, open_inbox
from .peer import PeerClosedError
from .serialization import system_error
from .starting import START_BATCH, Starter
from .virtual import key_id, key_label, live_workers

if TYPE_CHECKING:
    from .core import Runtime
    from .peer import Peer

__all__ = ["KeyedAgents"]

# A keyed agent's mailbox holds this many messages unless its kind says (mailbox_size=); as
# for named agents (lanes.MAILBOX_CAPACITY), senders past it wait for credit.
MAILBOX_CAPACITY = 1024
# An activation's on_deactivate hooks get this long, even while the worker shuts down.
DEACTIVATE_HOOKS_TIMEOUT_S = 5.0

log = logging.getLogger("actorgrid.agents")


class Host(Protocol):
    """What KeyedAgents needs of the executor."""

    runtime: Runtime
    functions: dict[bytes, Callable[..., Any]]

    @property
    def nursery(self) -> trio.Nursery: ...

    def deliver_local(self, actor_id: ActorId, letter: Letter) -> bool: ...

    @staticmethod
    def _code(cache: dict[bytes, Any], code_id: bytes, blob: bytes | None) -> Any: ...


class _In:
    """A message for a keyed agent, with the link it came on (None: sent from this process,
    outside flow control), its key's flow-control id (for credits and confirmations; None
    from this process) and whether its credit went back."""

    __slots__ = ("credited", "kid", "msg", "payload", "peer")

    def __init__(self, peer: Peer | None, msg: DeliverToKey | None, payload: Payload) -> None:
        self.peer = peer
        self.msg = msg  # None: a topic's message, which only ever goes into the mailbox
        self.payload = payload
        self.credited = peer is None
        self.kid = key_id(msg.kind, msg.key) if peer is not None and msg is not None else None

    def letter(self) -> Letter:
        msg = self.msg
        peer = self.peer
        if msg is None:
            return Letter(self.payload, None)
        if peer is None:
            return _Local(self.payload, msg)
        if msg.rid:
            return Letter(self.payload, (peer, msg.rid))
        return _Confirmed(self.payload, peer, self.kid)


class _Confirmed(Letter):
    """A fire-and-forget message by key from another process: its agent taking it confirms it
    to its sender (``Context``, ``confirms.LinkSends.taken``); one its agent never took is
    refused to it (``_refuse_left``)."""

    __slots__ = ("actor_id", "confirm", "peer")

    def __init__(self, payload: Payload, peer: Peer, actor_id: ActorId | None) -> None:
        super().__init__(payload, None)
        self.peer = peer
        self.confirm = peer.sends
        self.actor_id = actor_id


class _Local(Letter):
    """A fire-and-forget message by key from this process (an agent on this worker), put
    straight into the mailbox; one its agent never took is refused here (``_refuse_left``)."""

    __slots__ = ("msg",)

    def __init__(self, payload: Payload, msg: DeliverToKey) -> None:
        super().__init__(payload, None)
        self.msg = msg


def _refuse_left(rt: Runtime, letters: list[Any], reason: str) -> None:
    """What an agent that raised or returned left in its mailbox is refused to its senders, as
    a named agent's is: an ask raises ActorDiedError at the asker, a fire-and-forget message
    is reported undelivered at its sender (``message_undelivered``, counted in its process's
    ``undelivered_messages``), which for one from another process also confirms it; one from
    this process is told through the loopback, as ``Executor._end_nowait`` tells a named
    agent's. (A topic's message is lost with its subscriber, as with its worker.)"""
    for letter in letters:
        if letter.reply_to is not None:
            peer, rid = letter.reply_to
            peer.send(AskReply(rid, False, system_error(ActorDiedError(reason))))
        elif type(letter) is _Confirmed:
            letter.peer.send(DeliveryFailed(letter.actor_id, reason))
        elif type(letter) is _Local:
            msg = letter.msg
            kid = key_id(msg.kind, msg.key)
            if kid not in rt.key_labels:
                rt.key_labels[kid] = key_label(msg.kind, msg.key)
            rt.peer_for(rt.address).send(DeliveryFailed(kid, reason))


def _credit(item: _In) -> None:
    """The message left flow control's hands (into the mailbox, forwarded, or held while its
    agent deactivates): its sender gets the credit back."""
    if item.credited or item.peer is None or item.kid is None:
        return
    item.credited = True
    kid = item.kid
    n = item.peer.receive_credits.taken(kid)
    if n:
        item.peer.send(Credit(kid, n))


class _Activation:
    __slots__ = ("ctx", "last", "overflow", "receive", "send", "spec")

    def __init__(
        self, spec: DeliverToKey, ctx: Context, send: InboxSend, receive: InboxReceive
    ) -> None:
        self.spec = spec
        self.ctx = ctx
        self.send = send
        self.receive = receive
        self.last = trio.current_time()
        # Given to it while its mailbox was full, in order: moved in by _pump as it drains.
        self.overflow: deque[_In] | None = None


class KeyedAgents:
    """The keyed agents active on one worker and its topic subscribers."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.table = ActivationTable(host.runtime.address)
        self.live: dict[Ident, _Activation] = {}
        self.by_id: dict[ActorId, _Activation] = {}  # for topics: keyed subscribers
        self._members_seen: object = None
        self.blobs: dict[bytes, bytes] = {}  # kinds' code by id, as it came (for forwards)
        self.activations = 0  # since start: activations begun on this worker
        self.starter = Starter()  # a batch of activations per loop turn (starting.py)

    def __repr__(self) -> str:
        return f"<KeyedAgents live={len(self.live)} activations={self.activations}>"

    def _sync_members(self) -> None:
        rt = self.host.runtime
        if self._members_seen is not rt.membership_changed:
            self._members_seen = rt.membership_changed
            self._apply(self.table.handle(Members(live_workers(rt))))

    def on_deliver(self, peer: Peer | None, msg: DeliverToKey) -> None:
        if msg.code and msg.code_id not in self.blobs:
            self.blobs[msg.code_id] = msg.code
        self._sync_members()
        item = _In(peer, msg, msg.payload)
        commands = self.table.handle(Arrived((msg.kind, msg.key), item, msg.hops))
        if commands:
            self._apply(commands)
        else:
            _credit(item)  # held while its agent deactivates: the hold is short and bounded

    def deliver_nowait(self, msg: DeliverToKey) -> bool:
        """A send from this process to a key this worker owns, without the loopback: False
        if the agent's mailbox is full (then the sender goes through the loopback, under
        flow control)."""
        act = self.live.get((msg.kind, msg.key))
        if act is not None and self.table.is_active((msg.kind, msg.key)):
            if act.overflow:
                return False
            try:
                act.send.send_nowait(_Local(msg.payload, msg))
            except trio.WouldBlock:
                return False
            act.last = trio.current_time()
            return True
        self.on_deliver(None, msg)
        return True

    def _apply(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, Deliver):
                act = self.live.get(command.ident)
                if act is None:
                    act = self._activate(command.ident, command.item.msg)
                act.last = trio.current_time()
                self._put(act, command.item)
            elif isinstance(command, Forward):
                item = command.item
                msg = item.msg
                assert msg is not None  # only keyed messages go through the table
                code = msg.code or self.blobs.get(msg.code_id, b"")
                spec = attrs.evolve(msg, hops=command.hops, code=code, rid=0)
                to = self.host.runtime.peer_for(command.address)
                if msg.rid and item.peer is not None:
                    self.host.nursery.start_soon(self._relay, item.peer, msg.rid, to, spec)
                else:
                    self._hand_on(item, msg, to, spec)
                _credit(item)
            elif isinstance(command, Deactivate):
                act = self.live.get(command.ident)
                if act is not None:
                    act.send.close()  # its mailbox ends: the agent saves its state and returns
            else:
                assert isinstance(command, Activate)  # begun by the Deliver that follows

    def _hand_on(self, item: _In, msg: DeliverToKey, to: Peer, spec: DeliverToKey) -> None:
        """A fire-and-forget message for a key another worker owns now: confirmed to its
        sender, and counted here until that worker confirms it (lost with it: reported by
        this worker). Its link already gone: refused to its sender, as undelivered."""
        rt = self.host.runtime
        kid = item.kid or key_id(msg.kind, msg.key)
        if to.closed:
            why = f"the worker {to.address} its key moved to went away ({to.close_reason})"
            (item.peer or rt.peer_for(rt.address)).send(DeliveryFailed(kid, why))
            return
        to.send(spec)
        if kid not in rt.key_labels:
            rt.key_labels[kid] = key_label(msg.kind, msg.key)
        to.sends.sent_message(kid)
        if item.peer is not None:
            item.peer.sends.taken(kid)

    def _put(self, act: _Activation, item: _In) -> bool:
        """Into the mailbox, or parked while it is full; False: the mailbox has ended (a
        topic's message to an agent that deactivates; the table delivers keyed ones only to
        live activations)."""
        if act.overflow:  # messages wait ahead of this one: keep the order
            act.overflow.append(item)
            return True
        try:
            act.send.send_nowait(item.letter())
        except trio.WouldBlock:
            act.overflow = deque([item])
            self.host.nursery.start_soon(self._pump, act, act.overflow)
            return True
        except trio.ClosedResourceError:
            return False
        _credit(item)
        return True

    async def _pump(self, act: _Activation, overflow: deque[_In]) -> None:
        # Moves the overflow into the mailbox as the agent drains it; the credits go back as
        # each message goes in, so a full mailbox holds its senders back (flow.py).
        # It waits for the mailbox to be half empty, then moves messages in without waiting:
        # not one task switch per message (Mailbox._wait_room).
        while overflow:
            item = overflow[0]
            try:
                act.send.send_nowait(item.letter())
            except trio.WouldBlock:
                await act.ctx.mailbox._wait_room()
                continue
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return  # deactivated: _run hands what is left to the next activation
            overflow.popleft()
            _credit(item)
        act.overflow = None

    async def _relay(self, back: Peer, rid: int, to: Peer, spec: DeliverToKey) -> None:
        """An ask forwarded to the key's owner: its answer goes back to the asker."""
        try:
            reply = await to.request(lambda r: attrs.evolve(spec, rid=r))
        except PeerClosedError as exc:
            error = ActorDiedError(f"the worker of agent {spec.kind}[{spec.key!r}]: {exc}")
            back.send(AskReply(rid, False, system_error(error)))
            return
        assert isinstance(reply, AskReply)
        back.send(AskReply(rid, reply.ok, reply.value))

    def _activate(self, ident: Ident, spec: DeliverToKey) -> _Activation:
        rt = self.host.runtime
        info = ActorInfo(new_actor_id(), rt.address, "coroutine", f"{ident[0]}[{ident[1]!r}]")
        send, receive = open_inbox(spec.mailbox_size or MAILBOX_CAPACITY)
        ctx = Context._make(rt, info, receive)
        ctx._key = ident[1]
        act = self.live[ident] = self.by_id[info.actor_id] = _Activation(spec, ctx, send, receive)
        self.activations += 1
        self.starter.start_soon(self.host.nursery, self._run, ident, act)
        return act

    async def _run(self, ident: Ident, act: _Activation) -> None:
        label = act.ctx._info.label
        reason = f"agent {label} has ended"
        try:
            spec = act.spec
            blob = spec.code or self.blobs.get(spec.code_id)
            fn = self.host._code(self.host.functions, spec.code_id, blob)
            async with trio.open_nursery() as nursery:
                if act.spec.idle_timeout_s > 0:
                    nursery.start_soon(self._watch_idle, ident, act)
                try:
                    await fn(act.ctx)
                finally:
                    nursery.cancel_scope.cancel(reason="the agent returned")
        except Exception:
            reason = f"agent {label} raised"
            log.exception("agent %s raised; it comes back on its next message", label)
        finally:
            act.send.close()
            _refuse_left(self.host.runtime, act.receive.drain(), reason)
            with trio.CancelScope(shield=True) as hooks:
                hooks.deadline = trio.current_time() + DEACTIVATE_HOOKS_TIMEOUT_S
                await act.ctx._deactivated(label)
            act.ctx._close(reason)
            if self.live.get(ident) is act:
                del self.live[ident]
            del self.by_id[act.ctx._info.actor_id]
            unconsumed = tuple(i for i in act.overflow or () if i.msg is not None)
            act.overflow = None
            self._apply(self.table.handle(Ended(ident, unconsumed)))

    async def _watch_idle(self, ident: Ident, act: _Activation) -> None:
        idle = act.spec.idle_timeout_s
        while True:
            due = act.last + idle
            now = trio.current_time()
            busy = act.receive.statistics().current_buffer_used or act.overflow
            if now >= due and not busy:
                self._apply(self.table.handle(Idle(ident)))
                return
            await trio.sleep_until(max(due, now + idle / 4))

    # --- topics ---------------------------------------------------------------------------------

    # Publishes whose fan-out is under way, in the order they came (see on_publish).
    _fanning: deque[tuple[Publish, list[ActorId]]] | None = None

    def on_publish(self, peer: Peer, msg: Publish) -> None:
        subscribers = self.host.runtime.topics.subscribers(msg.topic)
        if self._fanning is None and len(subscribers) <= START_BATCH:
            self._fan_out(msg, subscribers)
            return
        # 50,000 subscribers woken in one loop turn would all take their step in the next:
        # seconds with no pulse written and no dial answered. START_BATCH per turn, and the
        # publishes one after the other, so each subscriber still gets them in order.
        if self._fanning is None:
            self._fanning = deque()
            self.host.nursery.start_soon(self._fan_out_gradually, self._fanning)
        self._fanning.append((msg, subscribers))

    async def _fan_out_gradually(self, fanning: deque[tuple[Publish, list[ActorId]]]) -> None:
        try:
            while fanning:
                msg, subscribers = fanning.popleft()
                for at in range(0, len(subscribers), START_BATCH):
                    self._fan_out(msg, subscribers[at : at + START_BATCH])
                    await trio.lowlevel.checkpoint()
        finally:
            self._fanning = None

    def _fan_out(self, msg: Publish, subscribers: list[ActorId]) -> None:
        topics = self.host.runtime.topics
        for actor_id in subscribers:
            act = self.by_id.get(actor_id)
            if act is not None:
                if self._put(act, _In(None, None, msg.payload)):
                    act.last = trio.current_time()
                    continue  # else deactivating: it no longer receives
            elif self.host.deliver_local(actor_id, Letter(msg.payload, None)):
                continue
            topics.unsubscribe(msg.topic, actor_id)
