"""Names and lookup, kill, send and ask: reaching actors by handle or by name.

At 100,000 named agents nothing here is a round trip per name: the claims of one loop turn go
to the head in one ClaimNames (``claims.py``: the creator uses each name at once, from its
cache; the agents' creations its reply grants go to each worker in one CreateAgents), the first
lookups of one loop turn in one LookupNames, and ``ag.send`` from a plain thread to a name this
process knows is queued for the loop without waiting for it (``send_soon``), while the agent's
credit window has room: a full mailbox still holds the sender back.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

import trio

from .._exceptions import ActorDiedError, ActorgridError, GetTimeoutError, NameNotFoundError
from .._protocol.ids import ActorId
from .._protocol.messages import (
    Ack,
    ActorEnded,
    ActorInfo,
    AskReply,
    Credit,
    Deliver,
    Event,
    KillActor,
    LookupName,
    LookupNames,
    NameReply,
    NamesEnded,
    NamesFound,
    Payload,
)
from .._protocol.namebatch import of_kind
from .._scheduler.names import DEFAULT_NAMESPACE, CachedName
from .claims import RuntimeClaims
from .links import FREE_NAME_TIMEOUT_S, log
from .peer import Peer, PeerClosedError
from .records import _describe
from .refs import PENDING, ObjectEntry, ObjectRef
from .restartwait import ask_restarted, may_restart, send_restarted
from .serialization import dumps, loads, loads_error
from .starting import START_BATCH

# A lookup that finds no such name asks the head again after these pauses (0.5 s in all)
# before it raises NameNotFoundError: see lookup().
LOOKUP_MISS_RETRIES_S = (0.05, 0.15, 0.3)
# Tasks that waited for one shared lookup, woken per loop turn (see release_gradually): as
# many as starting.py starts per turn.
RELEASE_BATCH = START_BATCH
# First lookups per LookupNames: a lookup batch wakes this many waiting tasks at once when its
# answer comes.
LOOKUP_BATCH_MAX = 512

# Sends by cached name queued for the loop at most (send_soon): beyond, ag.send waits for
# the loop as before, so a thread that outruns the loop is held back, not buffered.
SEND_SOON_MAX = 4096


class _LookupBatch:
    """The first lookups of one loop turn, asked in one LookupNames."""

    __slots__ = ("done", "error", "found", "keys")

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], int] = {}  # each key's index in the request
        self.found: tuple[ActorInfo | None, ...] = ()
        self.error: Exception | None = None
        self.done = trio.Event()


class RuntimeNames(RuntimeClaims):
    """Names, lookup, kill, send and ask."""

    # Cached lookups on their way to the head, by key: the agents that want the same name at
    # once (10,000 agents greeting one clock) wait for the one lookup, not one each.
    _lookups: dict[tuple[str, str], trio.lowlevel.ParkingLot] | None = None

    async def lookup(self, name: str, namespace: str | None, *, cached: bool) -> ActorInfo:
        key = (namespace or DEFAULT_NAMESPACE, name)
        if not cached:
            return await self._lookup_at_head(name, key)
        if self._lookups is None:
            self._lookups = {}
        while True:
            info = self.names.get(key)
            if info is not None:
                return info
            waiting = self._lookups.get(key)
            if waiting is None:
                break
            await waiting.park()  # then the cache has it, or the lookup failed: ask ourselves
        waiting = self._lookups[key] = trio.lowlevel.ParkingLot()
        try:
            return await self._lookup_at_head(name, key, batched=True)
        finally:
            del self._lookups[key]
            if waiting:
                self.nursery.start_soon(release_gradually, waiting)

    async def _lookup_at_head(
        self, name: str, key: tuple[str, str], *, batched: bool = False
    ) -> ActorInfo:
        epoch = self._names_epoch
        ask = self._ask_batched if batched else self._ask_head
        actor = await ask(key)
        for delay in LOOKUP_MISS_RETRIES_S:
            if actor is not None:
                break
            # A named agent's creator queues its claim to the head and goes on at once, so
            # the name may reach us (in a task, a message) on another link before its claim
            # reaches the head: a miss is asked again a few times before it is believed.
            await trio.sleep(delay)
            actor = await ask(key)
        if actor is None:
            raise NameNotFoundError(
                f"no live actor is named {name!r} in namespace {key[0]!r}: it was never "
                "created, it has ended, or it lives in another namespace (pass namespace=)"
            )
        self._cache_name(key, actor, epoch)
        return actor

    async def _ask_head(self, key: tuple[str, str]) -> ActorInfo | None:
        reply = await self.head_request(lambda rid: LookupName(rid, key[1], key[0]))
        assert isinstance(reply, NameReply)
        return reply.actor

    _lookup_batch: _LookupBatch | None = None

    async def _ask_batched(self, key: tuple[str, str]) -> ActorInfo | None:
        """The actor holding ``key`` now, asked with the other first lookups of this loop
        turn in one LookupNames: 10,000 agents greeting 10,000 others by name cost a few
        frames to the head, not a round trip each."""
        batch = self._lookup_batch
        if batch is None or len(batch.keys) >= LOOKUP_BATCH_MAX:
            batch = self._lookup_batch = _LookupBatch()
            self.nursery.start_soon(self._send_lookups, batch)
        i = batch.keys.setdefault(key, len(batch.keys))
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.found[i]

    async def _send_lookups(self, batch: _LookupBatch) -> None:
        # Started by the batch's first lookup, run after the rest of its loop turn.
        if self._lookup_batch is batch:
            self._lookup_batch = None
        keys = tuple(batch.keys)
        try:
            reply = await self.head_request(lambda rid: LookupNames(rid, keys))
            assert isinstance(reply, NamesFound)
            batch.found = reply.actors
        except PeerClosedError as exc:
            batch.error = ActorgridError(
                f"the cluster head went away before it answered a name lookup: {exc}; "
                "try again once it is back"
            )
        except Exception as exc:
            batch.error = exc
        finally:
            batch.done.set()

    def _on_names_ended(self, peer: Peer, msg: NamesEnded) -> None:
        # From the head: named actors this process looked up or registered have ended.
        self._names_epoch += 1
        watchers = self.end_watchers
        for actor_id in msg.actor_ids:
            self.forget_actor(actor_id)
            for entry in watchers.pop(actor_id, ()):
                if entry.state == PENDING:
                    entry.set_value(dumps(None))
        peer.send(Ack(msg.rid))

    def watch_end(self, info: ActorInfo, entry: ObjectEntry) -> None:
        """Loop: resolve ``entry`` (to None) when the named actor ``info`` ends. The ref that
        get_if_exists returns for a coroutine actor someone else created: its return value
        goes to its creator's ref, but this one still tells when it is over."""
        self.end_watchers.setdefault(info.actor_id, []).append(entry)

    async def kill(self, info: ActorInfo) -> None:
        self.actor_killed(info.actor_id)  # never restarted; its owner fails later calls
        peer = self.peer_for(info.address)
        try:
            await peer.request(lambda rid: KillActor(rid, info.actor_id))
        except PeerClosedError:
            pass  # its worker is gone, and the actor with it
        self.forget_actor(info.actor_id)
        if info.name and self.head is not None and not self.head.closed:
            self._flush_claims()  # (its own claim, if still queued, first)
            # Its name may name an actor that was never created (its creator died first):
            # then no worker frees it, so the killer does. Freeing a free name does nothing.
            with trio.move_on_after(FREE_NAME_TIMEOUT_S):
                try:
                    await self.head.request(lambda rid: ActorEnded(rid, info.actor_id, "killed"))
                except PeerClosedError:
                    pass

    # --- mailboxes -----------------------------------------------------------------------------

    async def resolve_target(self, target: Any, namespace: str | None = None) -> ActorInfo:
        """The actor a send or ask goes to. A string is a name in ``namespace`` (None: the
        default namespace)."""
        if isinstance(target, str):
            # (before the import below: a worker that never saw a handle has not imported
            # handles.py, and importing it in the first send by name cost 9-20 ms)
            info = await self.lookup(target, namespace, cached=True)
            return check_mailbox(info)
        from .handles import ActorHandle

        if isinstance(target, ActorHandle):
            info = await target._wait_info()
        elif isinstance(target, ObjectRef):
            if target._entry.actor is None:
                raise TypeError(
                    f"{target!r} is not the ref of a remote coroutine actor, so it has no "
                    "mailbox; send to a name, an actor handle or such a ref"
                )
            if target._entry.state != PENDING:
                raise ActorDiedError(
                    f"cannot send to {target!r}: its remote coroutine actor has already "
                    "returned, so no mailbox is left to receive the message; await the ref "
                    "for its result, or keep the actor running (async for msg in ctx.mailbox)"
                )
            info = target._entry.actor
            while not info.address and target._entry.state == PENDING:
                # The actor waits for a worker (Runtime.waiting); a poll, since this is rare
                # and its placement may still have its name to register.
                await trio.sleep(0.05)
                info = target._entry.actor
        elif isinstance(target, ActorInfo):
            info = target
        else:
            raise TypeError(
                f"cannot send to {type(target).__name__}: a target is an actor name, an "
                "ActorHandle, or the ObjectRef of a remote coroutine actor"
            )
        return check_mailbox(info)

    # Sends by cached name from other threads (send_soon) queued for the loop, not yet run:
    # one item each (a deque: appended by any thread, popped by the loop).
    _soon: deque[None] | None = None
    # Per actor, the sends of send_soon waiting for a credit, in order (see _send_in_line).
    _in_line: dict[ActorId, deque[Payload]] | None = None

    def send_soon(self, target: Any, message: Any, namespace: str | None = None) -> bool:
        """Any thread but the loop's: ``ag.send`` to a name this process has cached (a live
        coroutine agent on another worker), without waiting for the loop: the message is
        queued for it in order, as fire-and-forget as any send (one the agent can no longer
        take is counted and reported, as ``message_undelivered``). False: nothing was sent;
        use ``send`` (also while earlier ones wait for the agent's credits: backpressure). The driver that created 10,000 agents ends them by name in well under
        a second, not one thread hop each."""
        if type(target) is not str or self.portal.in_loop_thread():
            return False
        info = self.names.get((namespace or DEFAULT_NAMESPACE, target))
        if info is None or info.kind != "coroutine" or info.address in ("", self.address):
            return False
        peer = self.peers.get(info.address)
        if peer is None or peer.closed:
            return False
        # Only while the agent's credit window surely has room for this one and all queued
        # before it (read from this thread: a dict lookup, and a conservative sum): a full
        # mailbox holds the sender back in send(), as ever, never buffers here.
        soon, credits = self._soon, peer.send_credits
        queued = 0 if soon is None else len(soon)
        if queued >= SEND_SOON_MAX or credits.outstanding(info.actor_id) + queued >= credits.window:
            return False
        in_line = self._in_line
        if in_line and info.actor_id in in_line:
            return False  # (it waits for credits: the caller waits in send() behind it)
        payload = dumps(message)
        if payload.buffers:
            return False  # (a large value: the loop's send copes with it)
        self.check_size(payload, "send()")
        if self._soon is None:
            self._soon = deque()
        self._soon.append(None)
        self.on_loop(self._send_soon, info, payload)
        return True

    def _send_soon(self, info: ActorInfo, payload: Payload) -> None:
        assert self._soon is not None
        self._soon.popleft()
        peer = self.peer_for(info.address)
        line = self._in_line.get(info.actor_id) if self._in_line else None
        if line is None:
            if peer.closed:
                self._undelivered(info, f"connection to {peer.address} is closed")
                return
            if peer.send_credits.try_take(info.actor_id):
                peer.send(Deliver(0, info.actor_id, payload))
                peer.sends.sent_message(info.actor_id)  # until confirmed (confirms.py)
                return
            if self._in_line is None:
                self._in_line = {}
            line = self._in_line[info.actor_id] = deque()
            self.nursery.start_soon(self._send_in_line, peer, info, line)
        line.append(payload)

    async def _send_in_line(self, peer: Peer, info: ActorInfo, line: deque[Payload]) -> None:
        """Send the messages of ``line`` as credits come (a full mailbox: they wait here, in
        order, and later sends to the actor wait behind them)."""
        assert self._in_line is not None
        try:
            while line:
                await wait_credit(peer, info.actor_id)
                peer.send(Deliver(0, info.actor_id, line.popleft()))
                peer.sends.sent_message(info.actor_id)
        except PeerClosedError as exc:
            for _ in range(len(line)):
                self._undelivered(info, str(exc))
            line.clear()
        finally:
            del self._in_line[info.actor_id]

    def _undelivered(self, info: ActorInfo, why: str) -> None:
        self.forget_actor(info.actor_id)
        self.undelivered += 1
        detail = f"a message to actor {_describe(info)} was not delivered: {why}"
        log.warning("%s", detail)
        self.publish(Event("message_undelivered", time.time(), pid=os.getpid(), detail=detail))

    async def _after_soon(self, actor_id: ActorId) -> None:
        """Loop: wait until the sends of send_soon queued before now went out (or wait in
        line for ``actor_id``): a send or ask made after them never overtakes them."""
        while self._soon:
            await trio.lowlevel.checkpoint()  # the portal's next drain runs them
        while self._in_line and actor_id in self._in_line:
            await trio.sleep(0.001)  # rare: that agent's mailbox is full

    async def send(self, target: Any, message: Any, namespace: str | None = None) -> None:
        # A cached name is read as the cache holds it (no ActorInfo made per message).
        held: ActorInfo | CachedName | None = (
            self.names.held(namespace or DEFAULT_NAMESPACE, target)
            if isinstance(target, str)
            else None
        )
        if held is None or held.kind != "coroutine":
            held = await self.resolve_target(target, namespace)
        actor_id, address = held.actor_id, held.address
        if self._soon or self._in_line:
            await self._after_soon(actor_id)
        payload = dumps(message)
        self.check_size(payload, "send()")
        peer = self.peer_for(address)
        executor = self.executor if address == self.address else None
        # An agent on this worker (the loopback would copy out-of-band buffers, so that
        # agents share no memory); nothing sent earlier may still be queued: keep order.
        if payload.buffers:
            executor = None
        if executor is not None and not peer.queued and executor.deliver_nowait(actor_id, payload):
            return  # no loopback hop, no task switch, no credit
        try:
            if not peer.send_credits.try_take(actor_id):
                await wait_credit(peer, actor_id)
            if executor is not None and not peer.queued:
                # Its mailbox is full: parked beside it under the credit, as the loopback
                # would do, minus the hop.
                peer.sends.sent_message(actor_id)
                executor.on_deliver(peer, Deliver(0, actor_id, payload))
                return
            # Counted until its worker confirms it took it (confirms.py): if that worker dies
            # first, this process reports it lost.
            peer.sends.sent_message(actor_id)
            try:
                # Written now if it is alone on the link (a ring's hop: no switch to the
                # writer); the rest of a burst is queued for the writer, which sends it in
                # one write (a flush per message was a syscall per message).
                await peer.send_wait(Deliver(0, actor_id, payload), flush=True)
            except BaseException:
                # Not queued (send_wait raises only before it queues): the credit goes back.
                peer.sends.confirmed(actor_id, 1)
                self._on_credit(peer, Credit(actor_id, 1))
                raise
        except PeerClosedError as exc:
            info = full_info(held, target)
            self.forget_actor(actor_id)
            if may_restart(target, info):  # it may be restarting: wait for it (restartwait.py)
                return await send_restarted(self, target, info, message, str(exc))
            raise ActorDiedError(f"cannot deliver to actor {_describe(info)}: {exc}") from None

    async def ask(
        self, target: Any, message: Any, timeout: float | None, namespace: str | None = None
    ) -> Any:
        info = await self.resolve_target(target, namespace)
        if self._soon or self._in_line:
            await self._after_soon(info.actor_id)
        payload = dumps(message)
        self.check_size(payload, "ask()")
        peer = self.peer_for(info.address)
        start = time.monotonic()
        try:
            with trio.fail_after(float("inf") if timeout is None else timeout):
                if not peer.send_credits.try_take(info.actor_id):
                    await wait_credit(peer, info.actor_id)
                reply = await peer.request(lambda rid: Deliver(rid, info.actor_id, payload))
        except trio.TooSlowError:
            raise GetTimeoutError(
                f"actor {_describe(info)} did not reply within {timeout} s "
                f"(waited {time.monotonic() - start:.2f} s)"
            ) from None
        except PeerClosedError as exc:
            self.forget_actor(info.actor_id)
            if may_restart(target, info):  # it may be restarting: wait for it (restartwait.py)
                left = None if timeout is None else timeout - (time.monotonic() - start)
                return await ask_restarted(self, target, info, message, left, str(exc))
            raise ActorDiedError(f"actor {_describe(info)} is unreachable: {exc}") from None
        assert isinstance(reply, AskReply)
        if reply.ok:
            return loads(reply.value)
        error = loads_error(reply.value)
        if isinstance(error, ActorDiedError):
            self.forget_actor(info.actor_id)
        raise error

    # --- events and operations ----------------------------------------------------------------


def full_info(held: ActorInfo | CachedName, name: str) -> ActorInfo:
    """The ActorInfo of what a name cache held for ``name`` (``NameCache.held``)."""
    if isinstance(held, CachedName):
        return of_kind(held.of, held.actor_id, name)
    return held


def check_mailbox(info: ActorInfo) -> ActorInfo:
    """``info``, the target of a send or ask, if it has a mailbox (else TypeError)."""
    if info.kind != "coroutine":
        raise TypeError(
            f"the {info.label} actor is a class actor, which has no mailbox: call its "
            "methods (handle.method.remote()); remote coroutines taking an ag.Context "
            "receive messages"
        )
    return info


async def release_gradually(waiting: trio.lowlevel.ParkingLot) -> None:
    """Wake the tasks parked in ``waiting``, RELEASE_BATCH per loop turn.

    Woken all at once, the 50,000 agents of a worker that started while one lookup was on
    its way would all take their next step in one turn of the loop: seconds with no pulse
    written, no dial answered and no frame read, and the worker taken for a zombie. A turn
    per batch lets the loop do its I/O in between.
    """
    while waiting:
        waiting.unpark(count=RELEASE_BATCH)
        await trio.lowlevel.checkpoint()


async def wait_credit(peer: Peer, actor_id: ActorId) -> None:
    """Wait for a credit to send one more message to ``actor_id`` on ``peer``, and take it.

    This is where a full mailbox makes its senders wait: the link itself stays free for
    every other actor and for pulses, replies and cancels.
    """
    credits = peer.send_credits
    while not credits.try_take(actor_id):
        if peer.closed:
            raise PeerClosedError(f"connection to {peer.address} is closed: {peer.close_reason}")
        lot = peer.credit_waiters.get(actor_id)
        if lot is None:
            lot = peer.credit_waiters[actor_id] = trio.lowlevel.ParkingLot()
        await lot.park()
