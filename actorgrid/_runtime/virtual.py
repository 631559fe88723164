"""Virtual agents and topics, the sending side: ``kind.key(k)`` targets and ``publish``.

A message to ``kind.key(k)`` goes straight to the worker that rendezvous hashing of
``(kind, k)`` over the live workers picks (``_scheduler/activation.py``), with the kind's code;
that worker activates the agent on its first message (``keyed.py``). No head round trip: each
process hashes over its own view of the membership, cached until the membership changes.

``publish(topic, msg)`` sends the message once to every live worker, in order on each link,
so every subscriber gets every message of a publisher in the order published.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._exceptions import ActorDiedError, ActorgridError, GetTimeoutError
from .._protocol.ids import ActorId
from .._protocol.messages import AskReply, DeliverToKey, Payload, Publish
from .._scheduler.activation import Ident, owner_of
from .names import wait_credit
from .peer import Peer, PeerClosedError
from .serialization import dumps, loads, loads_error

if TYPE_CHECKING:
    from .core import Runtime

__all__ = ["AgentKey", "ask_key", "key_id", "key_label", "publish", "send_to_key"]


class AgentKey:
    """The agent of one key of a kind: ``kind.key("42")``, a target for ``ctx.send`` and
    ``ag.send``. Made by the runtime (``RemoteFunction.key``); picklable, so agents can pass
    keys around in messages."""

    __slots__ = ("code", "code_id", "idle_timeout_s", "key", "kind", "mailbox_size")

    def __init__(self, *_: Any, **__: Any) -> None:
        raise TypeError("AgentKey has no public constructor: use kind.key(k) on a remote coroutine")

    @classmethod
    def _make(
        cls,
        kind: str,
        key: str,
        code_id: bytes,
        code: bytes,
        idle_timeout_s: float,
        mailbox_size: int,
    ) -> AgentKey:
        target = object.__new__(cls)
        target.kind = kind
        target.key = key
        target.code_id = code_id
        target.code = code
        target.idle_timeout_s = idle_timeout_s
        target.mailbox_size = mailbox_size
        return target

    kind: str
    key: str
    code_id: bytes
    code: bytes
    idle_timeout_s: float
    mailbox_size: int

    def __repr__(self) -> str:
        return key_label(self.kind, self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgentKey) and (self.code_id, self.key) == (
            other.code_id,
            other.key,
        )

    def __hash__(self) -> int:
        return hash((self.code_id, self.key))

    def __reduce__(self) -> Any:
        return (
            _rebuild,
            (
                self.kind,
                self.key,
                self.code_id,
                self.code,
                self.idle_timeout_s,
                self.mailbox_size,
            ),
        )


def _rebuild(*fields: Any) -> AgentKey:
    return AgentKey._make(*fields)


class _Owners:
    """The owner of each ident this process sent to, until the membership changes."""

    def __init__(self) -> None:
        self.seen: object = None
        self.workers: tuple[str, ...] = ()
        self.owner: dict[Ident, str | None] = {}
        # The code ids each link has carried: a kind's code goes once per link (links keep
        # order, so it arrives before the messages that need it; a new link sends it again).
        self.code_sent: dict[str, tuple[Peer, set[bytes]]] = {}
        # Each key's flow-control id (key_id), kept across membership changes: a hash per key,
        # not per message.
        self.ids: dict[Ident, ActorId] = {}


def _workers(rt: Runtime) -> _Owners:
    try:
        owners: _Owners = rt.__dict__["_key_owners"]  # on every keyed send: no weakref lookup
    except KeyError:
        owners = rt.__dict__["_key_owners"] = _Owners()
    if owners.seen is not rt.membership_changed:
        # The event is replaced on every membership change: a new one means a new view.
        owners.seen = rt.membership_changed
        own = rt.env_key  # workers of envs its calls use (options(runtime_env=)) own no key
        owners.workers = tuple(
            sorted(w.address for w in rt.placement.workers.values() if w.env == own)
        )
        owners.owner = {}
    return owners


def key_owner(rt: Runtime, ident: Ident) -> str | None:
    owners = _workers(rt)
    try:
        return owners.owner[ident]
    except KeyError:
        owner = owners.owner[ident] = owner_of(ident, owners.workers)
        return owner


def live_workers(rt: Runtime) -> tuple[str, ...]:
    return _workers(rt).workers


def key_label(kind: str, key: str) -> str:
    """How reports name the agent of ``(kind, key)``: as ``repr(kind.key(key))``."""
    return f"<agent {kind}.key({key!r})>"


def _id_of(rt: Runtime, target: AgentKey) -> ActorId:
    """``target``'s flow-control id; the first time, its name for the reports of messages
    lost with its worker (``links.key_labels``, read by ``confirms.report_lost``)."""
    ids = _workers(rt).ids
    ident = (target.kind, target.key)
    kid = ids.get(ident)
    if kid is None:
        kid = ids[ident] = key_id(target.kind, target.key)
        rt.key_labels[kid] = repr(target)
    return kid


def key_id(kind: str, key: str) -> ActorId:
    """The flow-control id of the agent ``(kind, key)``: credits on a link are kept per id."""
    digest = hashlib.blake2b(f"{kind}\x00{key}".encode(), digest_size=12).digest()
    return ActorId(b"key:" + digest)


def _owner_peer(rt: Runtime, target: AgentKey) -> tuple[str, Peer]:
    owner = key_owner(rt, (target.kind, target.key))
    if owner is None:
        raise ActorgridError(
            f"cannot activate {target!r}: the cluster has no live worker yet; wait for one "
            "(ag.init starts them) and send again"
        )
    return owner, rt.peer_for(owner)


def _spec(rt: Runtime, owner: str, peer: Peer, target: AgentKey, payload: Payload) -> DeliverToKey:
    """The message for ``target``; its kind's code goes once per link (links keep order, so
    it arrives before the messages that need it; a new link sends it again)."""
    owners = _workers(rt)
    sent = owners.code_sent.get(owner)
    if sent is None or sent[0] is not peer:
        sent = owners.code_sent[owner] = (peer, set())
    code = b"" if target.code_id in sent[1] else target.code
    sent[1].add(target.code_id)
    return DeliverToKey(
        target.kind,
        target.key,
        target.code_id,
        code,
        target.idle_timeout_s,
        target.mailbox_size,
        payload,
    )


def _unreachable(target: AgentKey, owner: str, exc: Exception) -> ActorDiedError:
    return ActorDiedError(
        f"cannot deliver to {target!r}: its worker {owner} is unreachable ({exc}); the "
        "agent comes back on a live worker once the cluster notices, so send again"
    )


async def send_to_key(rt: Runtime, target: AgentKey, message: Any) -> None:
    payload = dumps(message)
    rt.check_size(payload, "send()")
    owner, peer = _owner_peer(rt, target)
    executor = rt.executor
    if owner == rt.address and executor is not None and not payload.buffers and not peer.queued:
        # Its owner is this worker: straight to the activation table, in order with what went
        # before (nothing is queued on the loopback), with no loopback task switch.
        full = DeliverToKey(
            target.kind,
            target.key,
            target.code_id,
            target.code,
            target.idle_timeout_s,
            target.mailbox_size,
            payload,
        )
        if executor.deliver_to_key_nowait(full):
            return
    kid = _id_of(rt, target)
    try:
        if not peer.send_credits.try_take(kid):
            await wait_credit(peer, kid)  # its mailbox is full: wait, as for named agents
        # Counted until its worker confirms its agent took it, or handed it on (keyed.py):
        # if that worker dies first, this process reports it lost (confirms.py).
        peer.sends.sent_message(kid)
        try:
            # The writer coalesces what agents send in one loop turn.
            await peer.send_wait(_spec(rt, owner, peer, target, payload))
        except BaseException:
            peer.sends.confirmed(kid, 1)  # not queued (send_wait raises only before it queues)
            raise
    except PeerClosedError as exc:
        raise _unreachable(target, owner, exc) from None


async def ask_key(rt: Runtime, target: AgentKey, message: Any, timeout: float | None) -> Any:
    """Send ``message`` to the agent of ``target``'s key and wait for its ``ctx.reply``."""
    payload = dumps(message)
    rt.check_size(payload, "ask()")
    owner, peer = _owner_peer(rt, target)
    kid = _id_of(rt, target)
    start = time.monotonic()
    try:
        with trio.fail_after(math.inf if timeout is None else timeout):
            if not peer.send_credits.try_take(kid):
                await wait_credit(peer, kid)
            spec = _spec(rt, owner, peer, target, payload)
            reply = await peer.request(lambda rid: attrs.evolve(spec, rid=rid))
    except trio.TooSlowError:
        raise GetTimeoutError(
            f"{target!r} did not reply within {timeout} s (waited {time.monotonic() - start:.2f} s)"
        ) from None
    except PeerClosedError as exc:
        raise _unreachable(target, owner, exc) from None
    assert isinstance(reply, AskReply)
    if reply.ok:
        return loads(reply.value)
    raise loads_error(reply.value)


async def publish(rt: Runtime, topic: str, message: Any) -> int:
    """Send ``message`` on ``topic`` to every live worker; the number of workers reached."""
    payload = dumps(message)
    rt.check_size(payload, "publish()")
    reached = 0
    for address in live_workers(rt):
        try:
            await rt.peer_for(address).send_wait(Publish(topic, payload))
            reached += 1
        except PeerClosedError:
            pass  # a worker that is gone has no subscriber left to miss the message
    return reached
