"""What a remote coroutine actor sees: its Context and its Mailbox."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._exceptions import ActorDiedError
from .._protocol.messages import ActorInfo, AskReply, Deliver, Payload
from .._scheduler.names import DEFAULT_NAMESPACE
from .inbox import InboxReceive
from .parking import Parkable, ParkThen, may_park, park
from .serialization import box_error, dumps, loads, system_error
from .virtual import AgentKey, ask_key, publish, send_to_key

if TYPE_CHECKING:
    from .core import Runtime
    from .peer import Peer

__all__ = ["Context", "Letter", "Mailbox", "MailboxStatistics", "Request"]

log = logging.getLogger("actorgrid.agents")

# Mailbox.receive yields to the scheduler at least once every this many messages.
_TURN_EVERY = 16
# No message taken yet (Mailbox.receive).
_NOTHING: Any = object()
# An empty list that is never appended to: what a Context holds until it has asks or hooks.
_NONE: tuple[()] = ()


class Letter:
    """A message waiting in a mailbox; ``reply_to`` is set when it was sent with ask()."""

    __slots__ = ("payload", "reply_to")

    # A fire-and-forget message from another process (lanes._LetterFrom) has the counts of
    # the link it came on (``confirm``, a confirms.LinkSends) and its actor's id: its agent
    # taking it confirms it there. None here: a letter of this process, or an ask.
    confirm: Any = None
    actor_id: Any = None

    def __init__(self, payload: Payload, reply_to: tuple[Peer, int] | None) -> None:
        self.payload = payload
        self.reply_to = reply_to


class Request:
    """An ask() waiting for its answer. Answer it once, with ``ctx.reply`` or ``reply``."""

    __slots__ = ("_peer", "_rid", "replied")

    def __init__(self, peer: Peer, rid: int) -> None:
        self._peer = peer
        self._rid = rid
        self.replied = False

    def reply(self, value: Any) -> None:
        self._answer(True, dumps(value))

    def reply_error(self, error: BaseException, where: str = "an actor") -> None:
        self._answer(False, box_error(error, where))

    def _answer(self, ok: bool, payload: Payload) -> None:
        if self.replied:
            raise RuntimeError("this ask was already answered; each ask gets exactly one reply")
        self.replied = True
        self._peer.send(AskReply(self._rid, ok, payload))


@attrs.frozen
class MailboxStatistics:
    queued: int
    capacity: float
    received: int


class Mailbox:
    """The bounded queue of messages sent to an actor. A full mailbox makes senders wait.

    ``async for msg in ctx.mailbox`` or ``await ctx.mailbox.receive()``. Created by the runtime.
    """

    # Slots, and no list until there is something to hold (Context): a worker hosts 100,000.
    __slots__ = ("_ctx", "_receive", "_received", "_room", "_room_after", "_since_turn")

    def __init__(self, *_: Any, **__: Any) -> None:
        raise TypeError("Mailbox has no public constructor: use ctx.mailbox")

    @classmethod
    def _make(cls, receive: InboxReceive, ctx: Context) -> Mailbox:
        box = object.__new__(cls)
        box._receive = receive
        box._ctx = ctx
        box._received = 0
        box._since_turn = 0
        box._room = None
        box._room_after = 0
        return box

    _receive: InboxReceive
    _ctx: Context
    _received: int
    _since_turn: int
    # The pump waiting for room (executor.py, keyed.py); None: nobody waits.
    _room: trio.lowlevel.ParkingLot | None
    _room_after: int  # messages to receive before they are woken

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<Mailbox queued={s.queued} capacity={s.capacity:g} received={s.received}>"

    async def receive(self) -> Any:
        """The next message, waiting for one if the mailbox is empty.

        A message already queued is taken without a trip through Trio's scheduler (which
        costs more than the rest of a local send and receive together); every
        ``_TURN_EVERY``-th receive is a full checkpoint, so a busy agent still lets others run
        and sees cancellation."""
        while True:
            item = self._take()
            if item is _NOTHING:
                # InboxReceive.receive, inlined: an idle agent's stack is its own code, this
                # frame and Trio's wait (each coroutine more is ~200 bytes an agent).
                await trio.lowlevel.checkpoint_if_cancelled()
                item = self._receive.take(_NOTHING)
                if item is _NOTHING:
                    run = self._ctx._run
                    if run is not None and may_park(run) and self._receive.park_run(run):
                        await park  # no Trio task until its next message (parking.py)
                        continue
                    item = await trio.lowlevel.wait_task_rescheduled(self._receive.park(True))
                else:
                    await trio.lowlevel.cancel_shielded_checkpoint()
            message = self._opened(item)
            if message is not _NOTHING:
                return message

    def _take(self) -> Any:
        """A queued message without a checkpoint, or _NOTHING: none is queued, or this is the
        ``_TURN_EVERY``-th receive (then the caller waits, see ``receive``)."""
        self._since_turn += 1
        if self._since_turn < _TURN_EVERY:
            item = self._receive.take(_NOTHING)
            if item is not _NOTHING:
                return item
        self._since_turn = 0
        return _NOTHING

    def receive_nowait(self) -> Any:
        """The next message; raises trio.WouldBlock if the mailbox is empty."""
        while True:
            message = self._opened(self._receive.receive_nowait())
            if message is not _NOTHING:
                return message

    def _opened(self, item: Any) -> Any:
        """The message in an item taken from the inbox; _NOTHING for a method call sent to a
        coroutine actor (refused here)."""
        if self._room is not None:
            self._room_after -= 1
            if self._room_after <= 0:
                self._make_room()
        if type(item) is Payload:  # a send from this process (Executor.put_here)
            self._received += 1
            self._ctx.request = None
            return loads(item)
        if isinstance(item, Letter):
            return self._open(item)
        item.reject()
        return _NOTHING

    async def _wait_room(self) -> None:
        """The runtime's pump of a full mailbox (the messages parked beside it) waits until
        it is half empty, not until one place is free: that would wake it once per message
        received. Call it only when the mailbox is full."""
        if self._room is None:
            self._room = trio.lowlevel.ParkingLot()
            self._room_after = int(self._receive.statistics().max_buffer_size) // 2
        await self._room.park()

    def _make_room(self) -> None:
        room, self._room = self._room, None
        assert room is not None
        room.unpark_all()

    def __aiter__(self) -> Mailbox:
        return self

    def __anext__(self) -> Awaitable[Any]:
        # A coroutine (_next), except for an agent that parks at once: then what it holds
        # while idle is a ParkThen (~50 bytes), not a coroutine's frame (parking.py).
        receive = self._receive
        if receive._items is None and self._ctx._run is not None and self._parks_now(receive):
            return ParkThen(self)
        return self._next()

    def _parks_now(self, receive: InboxReceive) -> bool:
        """What ``_next`` would do first on an empty inbox: park (then it is queued)."""
        if receive._putters or receive._send_closed or receive._closed:
            return False
        run = self._ctx._run
        if run is not None and may_park(run) and receive.park_run(run):
            self._since_turn = 0
            return True
        return False

    def _after_park(self) -> Coroutine[Any, Any, Any]:
        return self._next()

    async def _next(self) -> Any:
        # receive()'s body (not a call to it: one coroutine less under every idle agent).
        while True:
            try:
                self._since_turn += 1  # _take, inlined: one call less per message
                turn = self._since_turn >= _TURN_EVERY
                item = _NOTHING if turn else self._receive.take(_NOTHING)
                if item is _NOTHING:
                    self._since_turn = 0
                    await trio.lowlevel.checkpoint_if_cancelled()
                    item = self._receive.take(_NOTHING)
                    if item is _NOTHING:
                        run = self._ctx._run
                        if run is not None and may_park(run) and self._receive.park_run(run):
                            await park  # no Trio task until its next message (parking.py)
                            continue
                        item = await trio.lowlevel.wait_task_rescheduled(self._receive.park(True))
                    else:
                        await trio.lowlevel.cancel_shielded_checkpoint()
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
            message = self._opened(item)
            if message is not _NOTHING:
                return message

    def statistics(self) -> MailboxStatistics:
        s = self._receive.statistics()
        return MailboxStatistics(s.current_buffer_used, s.max_buffer_size, self._received)

    def _open(self, letter: Letter) -> Any:
        self._received += 1
        confirm = letter.confirm
        if confirm is not None:
            confirm.taken(letter.actor_id)
        request = None
        if letter.reply_to is not None:
            request = Request(*letter.reply_to)
            ctx = self._ctx
            if ctx._open_requests:
                ctx._open_requests.append(request)
            else:
                ctx._open_requests = [request]
        self._ctx.request = request
        return loads(letter.payload)


class Context:
    """Given to a remote coroutine whose first parameter is annotated ``ag.Context``.

    It makes the coroutine an actor: it has an address, a bounded ``mailbox``, and may
    ``send`` to, ``ask`` and ``reply`` to other actors by handle, ref or name.
    """

    __slots__ = (
        "_deactivate_hooks",
        "_info",
        "_key",
        "_last_sent",
        "_open_requests",
        "_run",
        "_runtime",
        "mailbox",
        "request",
    )

    def __init__(self, *_: Any, **__: Any) -> None:
        raise TypeError("Context has no public constructor: the runtime passes it in")

    @classmethod
    def _make(cls, runtime: Runtime, info: ActorInfo, receive: InboxReceive) -> Context:
        ctx = object.__new__(cls)
        ctx._runtime = runtime
        ctx._info = info
        ctx._key = None
        ctx._last_sent = None
        ctx._open_requests = _NONE  # a list once an ask is open
        ctx._deactivate_hooks = _NONE  # a list once a hook is added
        ctx._run = None
        ctx.request = None
        ctx.mailbox = Mailbox._make(receive, ctx)
        return ctx

    _runtime: Runtime
    _info: ActorInfo
    _key: str | None
    # (name, namespace, slot) of the local agent last sent to (send's fast path).
    _last_sent: tuple[str, str | None, Any] | None
    _open_requests: list[Request] | tuple[()]
    _deactivate_hooks: list[Callable[[], Any]] | tuple[()]
    # The run of an agent that may park while idle (agenthost.py); None: it never parks.
    _run: Parkable | None
    request: Request | None
    """The ask behind the last message received, or None if it was a plain send."""
    mailbox: Mailbox

    def __repr__(self) -> str:
        return f"<Context of {self.name or self._info.label} at {self._info.address}>"

    @property
    def name(self) -> str | None:
        return self._info.name

    @property
    def namespace(self) -> str | None:
        return self._info.namespace

    @property
    def actor_id(self) -> bytes:
        return self._info.actor_id

    @property
    def key(self) -> str | None:
        """The key of a keyed agent (``kind.key(k)``); None for an agent started by .remote()."""
        return self._key

    def subscribe(self, topic: str) -> None:
        """From now on, every message published on ``topic`` also comes to this mailbox, in
        the order each publisher published them. Until this agent ends or unsubscribes."""
        self._runtime.topics.subscribe(topic, self._info.actor_id)

    def unsubscribe(self, topic: str) -> None:
        self._runtime.topics.unsubscribe(topic, self._info.actor_id)

    async def publish(self, topic: str, message: Any) -> None:
        """Send ``message`` to every subscriber of ``topic``, cluster-wide: one message per
        worker on the wire, fanned out there to its subscribers."""
        await publish(self._runtime, topic, message)

    @property
    def handle(self) -> Any:
        """An ActorHandle to this actor, to hand to others as a send target."""
        from .handles import ActorHandle

        return ActorHandle._make(self._info)

    async def send(self, target: Any, message: Any, *, namespace: str | None = None) -> None:
        """Put ``message`` in the target's mailbox; waits while that mailbox is full.

        A name is looked up in ``namespace``; None: this actor's own namespace (the default
        namespace for an actor created without one)."""
        if isinstance(target, AgentKey):
            await send_to_key(self._runtime, target, message)
            return
        namespace = namespace or self._info.namespace
        runtime = self._runtime
        executor = runtime.executor
        if type(target) is str and executor is not None:
            # The agent last sent to, while it lives (its name is its own until it ends,
            # and then its mailbox is closed): no lookup per message to it.
            last = self._last_sent
            if last is not None and last[0] == target and last[1] == namespace:
                slot = last[2]
            else:
                info = runtime.names.get((namespace or DEFAULT_NAMESPACE, target))
                if info is not None and info.address != runtime.address:
                    if send_remote_nowait(runtime, info, message):
                        return
                    await runtime.send(target, message, namespace)
                    return
                slot = executor.agent_here(target, namespace)
                self._last_sent = None if slot is None else (target, namespace, slot)
            if slot is not None:  # on this worker: into its mailbox, in this task
                payload = dumps(message)
                if executor.local_payload(payload):
                    if executor.put_here(slot, payload):
                        return
                    # Full (or a message waits ahead): let the loop run a turn, in which the
                    # agent takes some, rather than park this one beside it under a credit.
                    await trio.lowlevel.checkpoint()
                    if executor.put_here(slot, payload):
                        return
                self._last_sent = None  # it may have ended: look it up again next time
        await runtime.send(target, message, namespace)

    async def ask(
        self,
        target: Any,
        message: Any,
        *,
        timeout: float | None = None,
        namespace: str | None = None,
    ) -> Any:
        """Send ``message`` and wait for the target's ``reply``; GetTimeoutError after timeout.
        A name is looked up as for ``send``; a key (``kind.key(k)``) activates its agent as a
        send does."""
        if isinstance(target, AgentKey):
            return await ask_key(self._runtime, target, message, timeout)
        return await self._runtime.ask(target, message, timeout, namespace or self._info.namespace)

    def on_deactivate(self, hook: Callable[[], Any]) -> None:
        """Keyed agents: call ``hook()`` (a plain or an async function) when this activation
        ends, after its code has returned and before the next activation of its key may
        start: the place to save its state. An activation ends when it has been idle for
        ``idle_timeout``, when its key moves to another worker, or when its code returns or
        raises. Hooks run in the order registered; one that raises is logged."""
        if self._key is None:
            raise TypeError(
                "on_deactivate is for keyed agents (kind.key(k)), which the runtime "
                "deactivates; an agent started with .remote() ends when its code returns, so "
                "save its state there"
            )
        if self._deactivate_hooks:
            self._deactivate_hooks.append(hook)
        else:
            self._deactivate_hooks = [hook]

    async def _deactivated(self, label: str) -> None:
        hooks, self._deactivate_hooks = self._deactivate_hooks, _NONE
        for hook in hooks:
            try:
                result = hook()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("the on_deactivate hook of agent %s raised", label)

    async def reply(self, value: Any) -> None:
        """Answer the ask behind the last message received from the mailbox."""
        request = self.request
        if request is None:
            raise RuntimeError(
                "there is no ask to reply to: the last message received was sent with "
                "send(), not ask() (keep ctx.request if you answer asks out of order)"
            )
        request.reply(value)
        self.request = None
        self._forget(request)

    def _forget(self, request: Request) -> None:
        self._open_requests = [r for r in self._open_requests if not r.replied] or _NONE

    def _fail_open(self, error: BaseException, where: str) -> None:
        """The actor's code raised and runs again: the asks it received and never answered
        get that error, raised at the asker as its own type (the next run cannot know they
        wait, and the asker would otherwise wait out its timeout)."""
        for request in self._open_requests:
            if not request.replied:
                request.reply_error(error, where)
        self._open_requests = _NONE
        self.request = None

    def _close(self, reason: str) -> None:
        """The actor ended: every ask it received and never answered gets an error. The
        mailbox lets go of this context, so that the two are freed without the cyclic
        collector (which may never see them: starting.py freezes agents' objects)."""
        for request in self._open_requests:
            if not request.replied:
                request._answer(False, system_error(ActorDiedError(reason)))
        self._open_requests = _NONE
        if self.mailbox._room is not None:
            self.mailbox._make_room()  # the pump finds it closed
        self.mailbox._ctx = _CLOSED


def send_remote_nowait(runtime: Runtime, info: ActorInfo, message: Any) -> bool:
    """``ctx.send`` to a coroutine agent on another worker whose name this process has cached,
    done now without waiting, as the runtime's send does it when nothing makes it wait: the
    message goes out (written at once when it is alone on an idle link) under a credit of its
    flow-control window, counted until its worker confirms it (confirms.py). False, with
    nothing sent: the link is not up, the window is full, messages from other threads wait
    ahead (send_soon), or the payload needs the runtime's send (out-of-band buffers, over the
    size cap): the caller sends it that way, which waits or says why. No coroutine, no
    checkpoint: one hop of a ring of agents pays for none."""
    if info.kind != "coroutine" or runtime._soon or runtime._in_line:
        return False
    peer = runtime.peers.get(info.address)
    if peer is None or not peer.has_room():
        return False
    payload = dumps(message)
    if payload.buffers or len(payload.data) > runtime.max_message_bytes:
        return False
    actor_id = info.actor_id
    if not peer.send_credits.try_take(actor_id):
        return False
    peer.sends.sent_message(actor_id)
    peer.send_lone(Deliver(0, actor_id, payload))
    return True


# What a closed mailbox points to instead of its context (Context._close).
_CLOSED = object.__new__(Context)
_CLOSED._open_requests = _NONE
_CLOSED.request = None
_CLOSED._run = None
