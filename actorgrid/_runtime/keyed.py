"""Virtual agents and topics, the worker side: activations of keyed agents, topic fan-out.

A ``DeliverToKey`` goes to the worker's ``ActivationTable`` (``_scheduler/activation.py``),
which says deliver, activate, forward or hold; this shell does it. An activation is a Trio task
in the executor's nursery running the kind's coroutine with a Context of its own (``ctx.key``
is its key); its mailbox ends when the table deactivates it (idle for ``idle_timeout``, or
moved by a membership change), so the agent's code after ``async for msg in ctx.mailbox``
runs as its on-deactivate hook (save state there) and the agent returns. When it has returned
the table releases the messages that came meanwhile to the next activation.

A ``Publish`` is put in the mailbox of each of this worker's subscribers of the topic, in the
order published; ended subscribers are dropped as they are met.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from .._protocol.ids import ActorId, new_actor_id
from .._protocol.messages import ActorInfo, DeliverToKey, Publish
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
from .starting import Starter
from .virtual import live_workers

if TYPE_CHECKING:
    from .core import Runtime
    from .peer import Peer

__all__ = ["KeyedAgents"]

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


class _Activation:
    __slots__ = ("ctx", "last", "receive", "send", "spec")

    def __init__(self, spec: DeliverToKey, ctx: Context, send: Any, receive: Any) -> None:
        self.spec = spec
        self.ctx = ctx
        self.send = send
        self.receive = receive
        self.last = trio.current_time()


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

    def on_deliver(self, peer: Peer, msg: DeliverToKey) -> None:
        if msg.code and msg.code_id not in self.blobs:
            self.blobs[msg.code_id] = msg.code
        self._sync_members()
        self._apply(self.table.handle(Arrived((msg.kind, msg.key), msg, msg.hops)))

    def _apply(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, Deliver):
                act = self.live.get(command.ident)
                if act is None:
                    act = self._activate(command.ident, command.item)
                act.last = trio.current_time()
                act.send.send_nowait(Letter(command.item.payload, None))
            elif isinstance(command, Forward):
                item = command.item
                code = item.code or self.blobs.get(item.code_id, b"")
                spec = attrs.evolve(item, hops=command.hops, code=code)
                self.host.runtime.peer_for(command.address).send(spec)
            elif isinstance(command, Deactivate):
                act = self.live.get(command.ident)
                if act is not None:
                    act.send.close()  # its mailbox ends: the agent saves its state and returns
            else:
                assert isinstance(command, Activate)  # begun by the Deliver that follows

    def _activate(self, ident: Ident, spec: DeliverToKey) -> _Activation:
        rt = self.host.runtime
        info = ActorInfo(new_actor_id(), rt.address, "coroutine", f"{ident[0]}[{ident[1]!r}]")
        # Unbounded: the table holds no credit for keyed senders yet, and delivery must
        # never stop the link's reader (see executor.py).
        send, receive = trio.open_memory_channel[Any](math.inf)
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
            act.ctx._close(reason)
            act.send.close()
            if self.live.get(ident) is act:
                del self.live[ident]
            del self.by_id[act.ctx._info.actor_id]
            self._apply(self.table.handle(Ended(ident)))

    async def _watch_idle(self, ident: Ident, act: _Activation) -> None:
        idle = act.spec.idle_timeout_s
        while True:
            due = act.last + idle
            now = trio.current_time()
            if now >= due and act.receive.statistics().current_buffer_used == 0:
                self._apply(self.table.handle(Idle(ident)))
                return
            await trio.sleep_until(max(due, now + idle / 4))

    # --- topics ---------------------------------------------------------------------------------

    def on_publish(self, peer: Peer, msg: Publish) -> None:
        topics = self.host.runtime.topics
        for actor_id in topics.subscribers(msg.topic):
            letter = Letter(msg.payload, None)
            act = self.by_id.get(actor_id)
            if act is not None:
                try:
                    act.send.send_nowait(letter)
                    continue
                except trio.ClosedResourceError:
                    pass  # deactivating: it no longer receives
            elif self.host.deliver_local(actor_id, letter):
                continue
            topics.unsubscribe(msg.topic, actor_id)
