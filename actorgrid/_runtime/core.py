"""The per-process runtime: one in every driver and worker.

It listens for peers, keeps one outbound connection per peer address (requests go out on it,
answers come back on it, so one caller's calls to one worker stay in order), owns the objects
this process created, places this process's calls on workers, and caches names. The head is
consulted only for membership and names, never for a call; its link is kept up by HeadLink
(``headlink.py``), which reconnects after a loss.

Failing over: a call whose link dies is retried, restarted or failed by its policy; one that
was never written (its dial failed or timed out, after DIAL_TIMEOUT_INTERVALS pulses) is
placed again without spending a retry; a worker the head declares dead has its link dropped,
so its calls fail over at once. A call no worker fits waits (``waiting.py``) until one does.

The name cache holds only live actors: the head sends ActorEnded to every process it gave a
named actor to, and waits for its Ack, before the actor's end is confirmed to its worker. So a
send by name after a named actor's end is known (its ref resolved, its kill returned) never
goes to it: it reaches the name's new holder or raises NameNotFoundError.

Thread model: everything here runs on the runtime's Trio loop, except the methods marked
"any thread", which serialize in the calling thread and hop onto the loop through the Portal.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._exceptions import (
    ActorDiedError,
    ActorgridError,
    GetTimeoutError,
    NameNotFoundError,
    NotInitializedError,
    ProtocolError,
    TaskCancelledError,
    WorkerDiedError,
)
from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES
from .._protocol.ids import ActorId, ObjectId, WorkerId, new_actor_id, new_object_id, short
from .._protocol.messages import (
    Ack,
    ActorEnded,
    ActorInfo,
    AdoptActor,
    AskReply,
    CallActor,
    CancelTask,
    CreateActor,
    Credit,
    Deliver,
    DeliveryFailed,
    Event,
    EventHistory,
    FetchObject,
    Hello,
    KillActor,
    LookupName,
    Membership,
    Message,
    NameReply,
    ObjectValue,
    OwnActor,
    Payload,
    RegisterName,
    Shutdown,
    SubmitTask,
    SubscribeEvents,
    SubscribeMembership,
    TaskResult,
    WorkerInfo,
    WorkerJoined,
    WorkerLeft,
    WorkerState,
)
from .._scheduler.backlog import DEFAULT_PENDING_WARNING_S
from .._scheduler.names import DEFAULT_NAMESPACE
from .._scheduler.placement import NoWorkerError, Placement
from .._scheduler.tasktree import TaskTree
from .._transport.tcp import TcpFrameStream, open_tcp_frame_stream, serve_tcp_frame_streams
from .._transport.tls import TLSConfig
from . import getting
from .headlink import EventFeed, HeadLink
from .observe import Observer
from .peer import LoopbackPeer, Peer, PeerClosedError
from .portal import Portal, ThreadPool
from .pulse import DEFAULT_PULSE_INTERVAL_S, PulseMonitor
from .refs import PENDING, ObjectEntry, ObjectRef
from .serialization import dumps, loads, loads_error, system_error
from .waiting import WorkerWait

if TYPE_CHECKING:
    from .._transport.base import FrameStream
    from .executor import Executor
    from .handles import ActorHandle

__all__ = ["Runtime", "current_runtime", "runtime_or_none", "set_current_runtime"]

log = logging.getLogger("actorgrid.runtime")

# A dial (TCP connect and handshake) gives up after this many pulse intervals, at least
# DIAL_TIMEOUT_MIN_S: an address that never answers (a stopped or cut-off host) fails its
# calls over in seconds, not after the kernel's connect timeout (about 2 minutes).
DIAL_TIMEOUT_INTERVALS = 3
DIAL_TIMEOUT_MIN_S = 2.0
# How long a request to the head waits for a lost head link to come back before failing.
HEAD_WAIT_S = 10.0
# ObjectEntry.where of a call that waits for a worker (in Runtime.waiting).
WAITING = "waiting for a worker"
# ag.kill waits at most this long for the head to free the killed actor's name.
FREE_NAME_TIMEOUT_S = 5.0

_current: Runtime | None = None


def current_runtime() -> Runtime:
    rt = _current
    if rt is None:
        raise NotInitializedError(
            "actorgrid is not initialized in this process: call ag.init() (or use "
            "`async with ag.connect()` in Trio code) before using remote functions and actors"
        )
    return rt


def runtime_or_none() -> Runtime | None:
    return _current


def set_current_runtime(rt: Runtime | None) -> None:
    global _current
    if rt is not None and _current is not None and _current is not rt:
        raise RuntimeError(
            "actorgrid is already initialized in this process; call ag.shutdown() first"
        )
    _current = rt


class _SendWhenReady:
    """Answers a FetchObject once the object is resolved."""

    __slots__ = ("entry", "limit", "peer", "rid")

    def __init__(self, peer: Peer, rid: int, entry: ObjectEntry, limit: int) -> None:
        self.peer, self.rid, self.entry, self.limit = peer, rid, entry, limit

    def set(self) -> None:
        self.peer.send(_object_value(self.rid, self.entry, self.limit))


def _object_value(rid: int, entry: ObjectEntry, limit: int) -> ObjectValue:
    """The answer to a FetchObject. A value over ``limit`` is refused with an error: sent, it
    would make the borrower close the whole connection, failing everything else on it."""
    if entry.payload is not None:
        if entry.payload.nbytes <= limit:
            return ObjectValue(rid, True, entry.payload)
        too_big = ValueError(
            f"object {short(entry.object_id)} serializes to {entry.payload.nbytes} bytes, over "
            f"max_message_bytes={limit}, so its owner {entry.owner} cannot send it; raise "
            "max_message_bytes in ag.init() or pass the data another way (e.g. a file path)"
        )
        return ObjectValue(rid, False, system_error(too_big))
    error = entry.error
    return ObjectValue(rid, False, error if isinstance(error, Payload) else system_error(error))  # type: ignore[arg-type]


TASK, CALL, CREATE = 0, 1, 2


class TaskSpec:
    """What it takes to send a task again: its code, arguments and the retries left.

    Kept while the task is in flight, so a task whose worker dies is re-sent elsewhere
    (``max_retries``), and a remote coroutine actor whose worker dies is started again
    (``max_restarts``), keeping its ref.
    """

    __slots__ = (
        "actor",
        "blob",
        "function_id",
        "num_cpus",
        "parent",
        "payload",
        "retries",
        "retry_on",
    )

    def __init__(
        self,
        function_id: bytes,
        blob: Callable[[], bytes],
        payload: Payload,
        num_cpus: float,
        actor: ActorInfo | None,
        retries: int,
        retry_on: bool | tuple[type[BaseException], ...],
        parent: ObjectId | None = None,
    ) -> None:
        self.parent = parent  # the task of this process that started it, if any
        self.function_id = function_id
        self.blob = blob
        self.payload = payload
        self.num_cpus = num_cpus
        self.actor = actor
        self.retries = retries
        self.retry_on = retry_on


class Sent:
    """A call in flight on one link, until its result comes back or the link dies."""

    __slots__ = (
        "actor",
        "cancelled",
        "counted",
        "entry",
        "kind",
        "method",
        "payload",
        "retries",
        "spec",
    )

    def __init__(
        self,
        entry: ObjectEntry,
        kind: int,
        *,
        counted: bool = False,
        spec: TaskSpec | None = None,
        actor: ActorInfo | None = None,
        method: str = "",
        payload: Payload | None = None,
        retries: int = 0,
    ) -> None:
        self.entry = entry
        self.kind = kind
        self.counted = counted  # counts towards the worker's load in our placement
        self.spec = spec  # TASK: how to send it again
        self.actor = actor  # CALL, CREATE: the actor
        self.method = method  # CALL: to send it again (max_task_retries)
        self.payload = payload
        self.retries = retries
        self.cancelled = False  # ag.cancel() reached it: never retried nor restarted


class _Placing:
    """A task or remote coroutine actor waiting for a worker (in Runtime.waiting): calling it
    places it; its entry lets a cancel find it."""

    __slots__ = ("entry", "place", "spec")

    def __init__(
        self, place: Callable[[ObjectEntry, TaskSpec], None], entry: ObjectEntry, spec: TaskSpec
    ) -> None:
        self.place, self.entry, self.spec = place, entry, spec

    def __call__(self) -> None:
        self.place(self.entry, self.spec)


class OwnedActor:
    """A restartable class actor this process created: how to create it again."""

    __slots__ = ("blob", "class_id", "handles", "info", "max_concurrency", "payload", "resend")

    def __init__(
        self,
        info: ActorInfo,
        class_id: bytes,
        blob: Callable[[], bytes],
        payload: Payload,
        max_concurrency: int,
    ) -> None:
        self.info = info
        self.class_id = class_id
        self.blob = blob
        self.payload = payload
        self.max_concurrency = max_concurrency
        self.handles: weakref.WeakSet[ActorHandle[Any]] = weakref.WeakSet()
        self.resend: list[tuple[ObjectEntry, str, Payload, int]] = []


class Runtime:
    def __init__(
        self,
        *,
        kind: str,
        secret: bytes,
        head_address: str | None,
        host: str = "127.0.0.1",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        pulse_interval_s: float = DEFAULT_PULSE_INTERVAL_S,
        tls: TLSConfig | None = None,
        pending_warning_s: float = DEFAULT_PENDING_WARNING_S,
    ) -> None:
        self.kind = kind
        self.tls = tls
        self.monitor = PulseMonitor(pulse_interval_s)
        self.owned: dict[bytes, OwnedActor] = {}
        self.owned_at: dict[str, set[bytes]] = {}
        self.children = TaskTree()  # the tasks this process's running tasks started
        self._closing = False
        self.event_feed = EventFeed()
        self.secret = secret
        self.head_address = head_address
        self.host = host
        self.max_message_bytes = max_message_bytes
        self.address = ""
        self.placement = Placement()
        # Calls that wait for a worker that fits: each is a callable that places it now.
        self.waiting = WorkerWait(
            self.placement,
            pending_warning_s,
            events=self.event_feed,
            subscribe_events=functools.partial(self.subscribe_events, None),
            head_lost=self.head_lost,
        )
        self.dial_timeout_s = max(DIAL_TIMEOUT_INTERVALS * pulse_interval_s, DIAL_TIMEOUT_MIN_S)
        self.peers: dict[str, Peer] = {}
        self.headlink: HeadLink | None = None
        self.objects: weakref.WeakValueDictionary[ObjectId, ObjectEntry] = (
            weakref.WeakValueDictionary()
        )
        self.pinned: dict[ObjectId, ObjectEntry] = {}
        self.names: dict[tuple[str, str], ActorInfo] = {}
        # Bumped when the head says named actors ended: a name reply that was in flight
        # meanwhile may be older than that news, so it is used but not cached.
        self._names_epoch = 0
        self.executor: Executor | None = None
        # Fire-and-forget messages reported undelivered (DeliveryFailed), since start.
        self.undelivered = 0
        self.membership_changed = trio.Event()
        self._worker_at: dict[str, WorkerId] = {}
        self._handlers: dict[type, Callable[[Peer, Any], Any]] = {
            TaskResult: self._on_result,
            FetchObject: self._on_fetch,
            DeliveryFailed: self._on_delivery_failed,
            Credit: self._on_credit,
            ActorEnded: self._on_actor_ended,
            WorkerJoined: self._on_worker_joined,
            WorkerLeft: self._on_worker_left,
            WorkerState: self._on_worker_state,
            Event: self._on_event,
            Shutdown: self._on_shutdown,
        }
        self.observe = Observer()  # task events, timeline spans, worker output shown here
        self._handlers.update(self.observe.handlers(self.event_feed))
        self.on_shutdown: Callable[[str], None] | None = None
        self._nursery: trio.Nursery | None = None
        self.portal: Portal
        self.pool: ThreadPool

    def __repr__(self) -> str:
        return (
            f"<Runtime {self.kind}@{self.address} workers={len(self.placement)} "
            f"peers={len(self.peers)} objects={len(self.objects)}>"
        )

    # --- lifecycle ----------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, connect to the head, learn the membership; run until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.portal = Portal(trio.lowlevel.current_trio_token())
            self.waiting.start(nursery)
            self.pool = ThreadPool(self.portal)
            await nursery.start(self.monitor.serve)
            try:
                self.address = await nursery.start(
                    functools.partial(
                        serve_tcp_frame_streams,
                        self._accept,
                        self.host,
                        0,
                        self.secret,
                        max_message_bytes=self.max_message_bytes,
                        tls=self.tls,
                    )
                )
                self.hello = Hello(self.kind, self.address, os.getpid())
                loopback = LoopbackPeer(self.address, self._handle, local_hello=self.hello)
                self.peers[self.address] = loopback
                nursery.start_soon(loopback.run_loopback)
                if self.executor is not None:
                    self._handlers.update(self.executor.handlers())
                    await nursery.start(self.executor.serve)
                if self.head_address is not None:
                    self.headlink = HeadLink(
                        self.head_address,
                        dial=functools.partial(self._open_stream, self.head_address),
                        make_peer=self._head_peer,
                        on_connected=self._on_head_connected,
                        wait_s=HEAD_WAIT_S,
                    )
                    await nursery.start(self.headlink.serve)
                    nursery.start_soon(self.observe.serve, self.headlink.send)
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.pool.close()

    @property
    def head(self) -> Peer | None:
        """The link to the head now (None before the first connection, or with no head)."""
        return self.headlink.peer if self.headlink is not None else None

    def _head_peer(self) -> Peer:
        assert self.head_address is not None
        return Peer(self.head_address, self._handle, local_hello=self.hello, monitor=self.monitor)

    async def _on_head_connected(self, head: Peer) -> None:
        """Loop: a new link to the head, before it is used: learn the membership (afresh
        after a reconnection: workers that left meanwhile are dropped) and subscribe again
        to what this process was subscribed to."""
        reply = await head.request(SubscribeMembership)
        assert isinstance(reply, Membership)
        listed = {info.worker_id for info in reply.workers}
        for wid, info in list(self.placement.workers.items()):  # O(workers), per connection
            if wid not in listed:
                self.placement.remove(wid)
                self._worker_at.pop(info.address, None)
            else:
                self.placement.set_suspended(wid, False)  # the head re-sends its suspensions
        for info in reply.workers:
            self._add_worker(info)
        self.observe.on_head_connected(head)
        if self.event_feed.subscribed:
            history = await head.request(SubscribeEvents)
            assert isinstance(history, EventHistory)
            self.event_feed.merge_history(history.events)

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise NotInitializedError("the actorgrid runtime is not running")
        return self._nursery

    def on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Any thread: run ``fn(*args)`` on the loop, now if we are on it, else soon."""
        if self.portal.in_loop_thread():
            fn(*args)
        else:
            self.portal.call_soon(fn, *args)

    # --- peers ---------------------------------------------------------------------------------

    def peer_for(self, address: str) -> Peer:
        """The outbound peer for ``address``, dialling it in the background if needed."""
        peer = self.peers.get(address)
        if peer is None or peer.closed:
            peer = Peer(address, self._handle, local_hello=self.hello, monitor=self.monitor)
            peer.wake_threadsafe = self._waker(peer)
            peer.on_closed.append(self._peer_closed)
            self.peers[address] = peer
            self.nursery.start_soon(self._dial, peer)
        return peer

    async def _open_stream(self, address: str) -> FrameStream:
        """Connect and shake hands within the dial timeout (past it: TimeoutError)."""
        with trio.move_on_after(self.dial_timeout_s):
            return await open_tcp_frame_stream(
                address, self.secret, max_message_bytes=self.max_message_bytes, tls=self.tls
            )
        raise TimeoutError(
            f"could not connect to {address} within {self.dial_timeout_s:g} s: the process "
            "there is hung, stopped or cut off"
        )

    async def _dial(self, peer: Peer) -> None:
        try:
            stream = await self._open_stream(peer.address)
        except TimeoutError as exc:
            peer.close(str(exc))
            return
        except (OSError, ActorgridError) as exc:
            peer.close(f"could not connect: {exc}")
            return
        if peer.closed:  # given up on while dialling (its worker left the cluster)
            with trio.CancelScope(shield=True):
                await stream.aclose()
            return
        await peer.run(stream)

    async def _accept(self, stream: TcpFrameStream) -> None:
        peer = Peer(stream.peer, self._handle, local_hello=self.hello, monitor=self.monitor)
        peer.wake_threadsafe = self._waker(peer)
        if self.executor is not None:
            peer.on_closed.append(self.executor.caller_gone)
        await peer.run(stream)

    def _waker(self, peer: Peer) -> Callable[[], None]:
        return lambda: self.portal.call_soon(peer.flush)

    def _handle(self, peer: Peer, message: Message) -> Any:
        handler = self._handlers.get(type(message))
        if handler is None:
            raise ProtocolError(
                f"{type(message).__name__} is not a message a {self.kind} accepts; "
                "closing the connection"
            )
        return handler(peer, message)

    def _peer_closed(self, peer: Peer) -> None:
        if self.peers.get(peer.address) is peer:
            del self.peers[peer.address]
        inflight, peer.inflight = peer.inflight, {}
        wid = self._worker_at.get(peer.address)
        lost = not self._closing and peer.address != self.address
        if lost and wid is not None and (inflight or peer.address in self.owned_at):
            # The link to a worker died under calls: it is dead to us (the head confirms).
            self.placement.remove(wid)
        why = f"the worker at {peer.address} went away before answering ({peer.close_reason})"
        if lost:
            self._restart_owned_at(peer.address, why)
        else:
            why = f"the call was abandoned: {peer.close_reason}"
        retried = 0
        for sent in list(inflight.values()):
            if sent.counted and wid is not None:
                self.placement.finished(wid)
            if sent.entry.state != PENDING:
                continue
            spec = sent.spec
            if lost and not peer.connected and spec and spec.actor is None and not sent.cancelled:
                # Never written to a socket, so it never ran: place it again, and it spends
                # no retry (a dead worker still listed is not the task's fault).
                self._send_spec(sent.entry, spec)
                retried += 1
                continue
            retried += self._lost(sent, why, lost=lost)
        if retried:
            self.publish(Event("task_retried", time.time(), detail=f"{retried} tasks: {why}"))

    def _missed_by_close(self, peer: Peer, object_id: ObjectId) -> None:
        """Loop: a call was put in flight on ``peer`` as it closed, after the close had
        handled what was in flight: handle it the same way now."""
        sent = peer.inflight.pop(object_id, None)
        if sent is not None and sent.entry.state == PENDING:
            why = f"the worker at {peer.address} went away ({peer.close_reason})"
            self._lost(sent, why, lost=not self._closing)

    def _lost(self, sent: Sent, why: str, *, lost: bool) -> bool:
        """A call's link died before its answer (``lost``: the peer died, rather than this
        process stopping): retry it (True), restart its actor, re-send it to its restarted
        actor, or fail it."""
        entry, spec, actor = sent.entry, sent.spec, sent.actor
        if sent.cancelled:
            entry.set_error(TaskCancelledError(f"the call was cancelled, and then {why}"))
        elif spec is not None and spec.actor is None:
            if spec.retries != 0 and not self._closing:
                self._retry_task(entry, spec, why, report=False)
                return True
            else:
                entry.set_error(WorkerDiedError(why))
        elif spec is not None and spec.actor is not None:
            if spec.actor.max_restarts != 0 and not self._closing:
                self._restart_coroutine_actor(entry, spec, why)
            else:
                entry.set_error(ActorDiedError(f"actor {_describe(spec.actor)} died: {why}"))
        elif (
            lost
            and actor is not None
            and (owned := self.owned.get(actor.actor_id)) is not None
            and sent.kind == CALL
            and sent.retries
        ):
            # The owner restarts this actor (the link's close started it): send the call to
            # the new incarnation, now if it exists, else once it does.
            assert sent.payload is not None
            retry = (entry, sent.method, sent.payload, sent.retries - 1)
            if owned.info.address != actor.address:
                self._send_call_info(owned.info, *retry)
            else:
                owned.resend.append(retry)
        else:
            label = _describe(actor) if actor is not None else "the actor"
            entry.set_error(ActorDiedError(f"actor {label} died: {why}"))
        return False

    # --- membership ----------------------------------------------------------------------------

    def _add_worker(self, info: WorkerInfo) -> None:
        self.placement.add(info)
        self._worker_at[info.address] = info.worker_id
        if info.address == self.address and self.executor is not None:
            queue = self.executor.queue
            self.placement.local = info.worker_id
            self.placement.local_load = lambda: queue.total - queue.free + len(queue.items)
        if info.worker_id not in self.placement.suspended:
            self.waiting.worker_available(info.num_cpus)
        self.membership_changed.set()
        self.membership_changed = trio.Event()

    def _on_worker_joined(self, peer: Peer, msg: WorkerJoined) -> None:
        self._add_worker(msg.worker)

    def _on_worker_left(self, peer: Peer, msg: WorkerLeft) -> None:
        info = self.placement.workers.get(msg.worker_id)
        self.placement.remove(msg.worker_id)
        if info is not None:
            link = self.peers.get(info.address)
            if link is not None and info.address != self.address:
                # The head declared it dead: what is in flight there fails over now, rather
                # than when the link or a dial to it gives up.
                reason = f"the head declared the worker dead: {msg.reason}"
                if link.connected:
                    self.nursery.start_soon(self._abort_soon, link, reason)
                else:
                    link.abort(reason)
            self._worker_at.pop(info.address, None)
            for key in [k for k, a in self.names.items() if a.address == info.address]:
                del self.names[key]
            self._names_epoch += 1
        self.membership_changed.set()
        self.membership_changed = trio.Event()

    async def _abort_soon(self, link: Peer, reason: str) -> None:
        # A worker that exited after its last answers (closed, drained) may have them still
        # on their way on this link, which the head's news overtook: they are read first.
        # A dead process's link closes by itself; a silent one is dropped after this.
        await trio.sleep(self.monitor.interval_s)
        if not link.closed:
            link.abort(reason)

    def _on_worker_state(self, peer: Peer, msg: WorkerState) -> None:
        self.placement.set_suspended(msg.worker_id, msg.suspended)
        info = self.placement.workers.get(msg.worker_id)
        if info is not None and not msg.suspended:
            self.waiting.worker_available(info.num_cpus)

    def _on_shutdown(self, peer: Peer, msg: Shutdown) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown(msg.reason)

    def closing(self) -> None:
        """This process is leaving the cluster: lost links no longer retry, restart or
        reconnect."""
        self._closing = True
        self.observe.close()
        if self.headlink is not None:
            self.headlink.close()

    async def wait_for_workers(self, n: int) -> None:
        while len(self.placement) < n:
            await self.membership_changed.wait()

    # --- objects -------------------------------------------------------------------------------

    def new_entry(self, actor: ActorInfo | None = None) -> ObjectEntry:
        """Any thread: a pending object owned by this process."""
        entry = ObjectEntry(new_object_id(), self.address, actor)
        self.objects[entry.object_id] = entry
        return entry

    def borrowed_entry(
        self, object_id: ObjectId, owner: str, actor: ActorInfo | None
    ) -> ObjectEntry:
        entry = self.objects.get(object_id)
        if entry is None:
            entry = ObjectEntry(object_id, owner, actor)
            self.objects[object_id] = entry
        return entry

    def pin(self, entry: ObjectEntry) -> None:
        # A ref leaving this process may be fetched later by its borrower; keep the value.
        if entry.owner == self.address:
            self.pinned[entry.object_id] = entry

    def put(self, value: Any) -> ObjectRef[Any]:
        payload = dumps(value)
        if payload.nbytes > self.max_message_bytes:
            raise ValueError(
                f"ag.put() got a value that serializes to {payload.nbytes} bytes, over "
                f"max_message_bytes={self.max_message_bytes}, so no other process could ever "
                "fetch it; raise max_message_bytes (ag.init(), or `actorgrid up "
                "--max-message-bytes` for a cluster the CLI started) or pass the data another "
                "way (e.g. a file path)"
            )
        entry = self.new_entry()
        entry.set_value(payload)
        return ObjectRef._make(entry)

    def _ensure_fetch(self, entry: ObjectEntry) -> None:
        """Loop: start fetching a borrowed object from its owner, once."""
        if entry.state != PENDING or entry.fetching or entry.owner == self.address:
            return
        entry.fetching = True
        self.nursery.start_soon(self._fetch, entry)

    async def _fetch(self, entry: ObjectEntry) -> None:
        peer = self.peer_for(entry.owner)
        try:
            reply = await peer.request(lambda rid: FetchObject(rid, entry.object_id))
        except PeerClosedError as exc:
            entry.set_error(
                ActorgridError(
                    f"the owner of object {short(entry.object_id)} at {entry.owner} is "
                    f"unreachable, so its value is lost: {exc}"
                )
            )
            return
        assert isinstance(reply, ObjectValue)
        if reply.ok:
            entry.set_value(reply.value)
        else:
            entry.set_error(reply.value)

    def _on_fetch(self, peer: Peer, msg: FetchObject) -> None:
        entry = self.objects.get(msg.object_id)
        if entry is None:
            error = ActorgridError(
                f"object {short(msg.object_id)} no longer exists on its owner {self.address}"
            )
            peer.send(ObjectValue(msg.rid, False, system_error(error)))
        elif entry.state == PENDING:
            self._ensure_fetch(entry)
            entry.add_waiter(_SendWhenReady(peer, msg.rid, entry, self.max_message_bytes))
        else:
            peer.send(_object_value(msg.rid, entry, self.max_message_bytes))

    # --- getting values ------------------------------------------------------------------------

    def get_sync(self, refs: Any, timeout: float | None) -> Any:
        """Any thread but a Trio one: block until the refs resolve."""
        return getting.get_sync(self, refs, timeout)

    async def get_async(self, refs: Any, timeout: float | None = None) -> Any:
        return await getting.get_async(self, refs, timeout)

    def wait_sync(
        self, refs: Sequence[ObjectRef[Any]], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
        return getting.wait_sync(self, refs, num_returns, timeout)

    async def wait_async(
        self, refs: Sequence[ObjectRef[Any]], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
        return await getting.wait_async(self, refs, num_returns, timeout)

    # --- calls ---------------------------------------------------------------------------------

    def check_size(self, payload: Payload, label: str) -> None:
        if payload.nbytes > self.max_message_bytes:
            raise ValueError(
                f"the arguments of {label} serialize to {payload.nbytes} bytes, over "
                f"max_message_bytes={self.max_message_bytes}; raise it (ag.init(), or "
                "`actorgrid up --max-message-bytes` for a cluster the CLI started) or pass the "
                "data another way (e.g. a file path)"
            )

    def send_task(
        self,
        entry: ObjectEntry,
        function_id: bytes,
        blob: Callable[[], bytes],
        payload: Payload,
        num_cpus: float,
        actor: ActorInfo | None,
        retries: int = 0,
        retry_on: bool | tuple[type[BaseException], ...] = False,
        parent: ObjectId | None = None,
    ) -> None:
        """Loop: place a task (unless it is an actor with a place already) and send it.
        ``parent``: the task running in this process that started it (cancelled with it)."""
        spec = TaskSpec(function_id, blob, payload, num_cpus, actor, retries, retry_on, parent)
        if parent is not None:
            self.children.started(parent, entry.object_id)
        if actor is None:
            self.observe.record(
                "task_submitted", entry.object_id, self.observe.name_of(function_id, blob)
            )
        self._send_spec(entry, spec)

    def _send_spec(self, entry: ObjectEntry, spec: TaskSpec) -> None:
        actor = spec.actor
        if actor is not None:
            if not actor.address:
                self._place_coroutine_actor(entry, spec)
                return
            address, wid = actor.address, self._worker_at.get(actor.address)
        else:
            try:
                worker = self.placement.choose_for_task(spec.num_cpus)
            except NoWorkerError:
                entry.where = WAITING
                place = _Placing(self._send_if_pending, entry, spec)
                self.waiting.add(place, spec.num_cpus, "task")
                return
            address, wid = worker.address, worker.worker_id
            self.placement.started(wid)
        if actor is not None:
            self._register_owned(actor)
        peer = self.peer_for(address)
        code = None
        if spec.function_id not in peer.sent_code:
            code = spec.blob()
            peer.sent_code.add(spec.function_id)
        peer.inflight[entry.object_id] = Sent(entry, TASK, counted=actor is None, spec=spec)
        entry.where = peer
        peer.send(
            SubmitTask(entry.object_id, spec.function_id, code, spec.payload, spec.num_cpus, actor)
        )
        if actor is None:
            self.observe.task_sent(
                entry.object_id, spec.function_id, spec.blob, wid, spec.payload.nbytes
            )

    def _retry_task(
        self, entry: ObjectEntry, spec: TaskSpec, why: str, *, report: bool = True
    ) -> None:
        spec.retries -= 1 if spec.retries > 0 else 0
        if report:
            name = self.observe.name_of(spec.function_id, spec.blob)
            self.observe.record("task_retried", entry.object_id, name, error=why)
        self._send_spec(entry, spec)  # waits in the backlog if no worker takes it now

    def _send_if_pending(self, entry: ObjectEntry, spec: TaskSpec) -> None:
        if entry.state == PENDING:
            entry.where = None
            self._send_spec(entry, spec)

    def _place_coroutine_actor(self, entry: ObjectEntry, spec: TaskSpec) -> None:
        """A remote coroutine actor submitted while no worker fitted: place it now, or
        let it wait for a worker."""
        if entry.state != PENDING:
            return
        assert spec.actor is not None
        try:
            worker = self.placement.choose_for_actor(spec.num_cpus)
        except NoWorkerError:
            entry.where = WAITING
            place = _Placing(self._place_coroutine_actor, entry, spec)
            self.waiting.add(place, spec.num_cpus, "actor")
            return
        entry.where = None
        spec.actor = entry.actor = attrs.evolve(spec.actor, address=worker.address)
        self._send_spec(entry, spec)

    def head_lost(self) -> str | None:
        """What happened to the link to the head while it is being reconnected, else None."""
        return self.headlink.lost if self.headlink is not None else None

    def _restart_coroutine_actor(self, entry: ObjectEntry, spec: TaskSpec, why: str) -> None:
        old = spec.actor
        assert old is not None

        async def restart() -> None:
            info = await self._new_incarnation(old, why)
            if info is None:
                entry.set_error(ActorDiedError(f"actor {_describe(old)} died: {why}"))
                return
            spec.actor = info
            entry.actor = info
            self._send_spec(entry, spec)

        self.nursery.start_soon(restart)

    async def _new_incarnation(self, old: ActorInfo, why: str) -> ActorInfo | None:
        """Loop: place a dead actor again (same id and name, new address), waiting for a
        worker if none fits; None if its name was taken meanwhile or the head is away."""
        worker = await self.waiting.worker_for_actor(0.0)
        left = old.max_restarts - 1 if old.max_restarts > 0 else old.max_restarts
        info = attrs.evolve(old, address=worker.address, max_restarts=left)
        if info.name:
            try:
                reply = await self.head_request(lambda rid: RegisterName(rid, info, False))
            except ActorgridError:
                return None
            assert isinstance(reply, NameReply)
            if reply.error is not None:
                log.warning("actor %s not restarted: %s", _describe(old), reply.error)
                return None
            self.names[(info.namespace or DEFAULT_NAMESPACE, info.name)] = info
        self.publish(
            Event(
                "actor_restarted",
                time.time(),
                worker_id=worker.worker_id,
                node_id=worker.node_id,
                detail=f"actor {_describe(old)} restarted on {worker.address} after: {why}",
            )
        )
        return info

    def _restart_owned_at(self, address: str, why: str) -> None:
        """Start again the restartable class actors this process created at ``address``;
        those with no restarts left are forgotten."""
        for actor_id in self.owned_at.pop(address, set()):
            owned = self.owned.get(actor_id)
            if owned is None:
                continue
            if owned.info.max_restarts == 0 or self._closing:
                del self.owned[actor_id]
                if not self._closing:
                    self._actor_died(owned.info, f"no restarts left; {why}")
                continue
            for handle in list(owned.handles):
                handle._unresolve()
            self.nursery.start_soon(self._restart_class_actor, owned, why)

    async def _restart_class_actor(self, owned: OwnedActor, why: str) -> None:
        old = owned.info
        info = await self._new_incarnation(old, why)
        if info is None:
            self.owned.pop(old.actor_id, None)
            self._actor_died(old, f"it could not be restarted; {why}")
            error = ActorDiedError(f"actor {_describe(old)} died and could not be restarted: {why}")
            for handle in list(owned.handles):
                handle._fail(error)
            for entry, *_ in owned.resend:
                entry.set_error(error)
            owned.resend.clear()
            return
        owned.info = info
        self.send_create(
            self.new_entry(), info, owned.class_id, owned.blob, owned.payload, owned.max_concurrency
        )
        for entry, method, payload, retries in owned.resend:
            self._send_call_info(info, entry, method, payload, retries)
        owned.resend.clear()
        for handle in list(owned.handles):
            handle._resolve(info, self.send_call)

    def _actor_died(self, info: ActorInfo, why: str) -> None:
        self.publish(Event("actor_died", time.time(), detail=f"actor {_describe(info)}: {why}"))

    def own(self, handle: ActorHandle[Any], owned: OwnedActor) -> None:
        """Any thread: remember how to restart a restartable actor this process creates."""
        owned.handles.add(handle)
        self.owned[owned.info.actor_id] = owned

    def send_create(
        self,
        entry: ObjectEntry,
        info: ActorInfo,
        class_id: bytes,
        blob: Callable[[], bytes],
        payload: Payload,
        max_concurrency: int,
    ) -> None:
        peer = self.peer_for(info.address)
        code = None
        if class_id not in peer.sent_code:
            code = blob()
            peer.sent_code.add(class_id)
        if info.actor_id in self.owned:
            self.owned_at.setdefault(info.address, set()).add(info.actor_id)
        self._register_owned(info)
        create = CreateActor(entry.object_id, info, class_id, code, payload, max_concurrency)
        head = self.head
        if info.detached and info.max_restarts != 0 and head is not None:
            # The head restarts it, whoever is left: it needs the class code every time.
            head.send(AdoptActor(attrs.evolve(create, cls=code if code is not None else blob())))
        peer.inflight[entry.object_id] = Sent(entry, CREATE, actor=info)
        peer.send(create)

    def _register_owned(self, info: ActorInfo) -> None:
        """Loop: tell the head that ``info`` (about to be created) is this process's, so it
        ends when this process does; written out before the creation is, so that a creator
        killed in between leaves no actor the head does not know of."""
        head = self.head
        if head is not None and not info.detached:
            head.send(OwnActor(info.actor_id, info.address))
            head.flush()

    def send_call_direct(
        self, handle: ActorHandle[Any], entry: ObjectEntry, method: str, payload: Payload
    ) -> bool:
        """Any thread: send a method call straight from this thread, if that keeps order.

        Only for a lone call (nothing in flight to that worker): it saves the hop onto the
        loop, which is most of a round trip. False: nothing was sent; use ``send_call``.
        """
        info = handle._info
        if info is None or handle._queued or not self.portal.idle():
            return False
        peer = self.peers.get(info.address)
        if peer is None or peer.closed or peer.inflight:
            # Calls already in flight mean a burst: leave batching to the loop.
            return False
        peer.inflight[entry.object_id] = _call_sent(entry, info, method, payload)
        entry.where = peer
        self.observe.call_sent(
            entry.object_id, info.label, method, self._worker_at.get(info.address), payload.nbytes
        )
        if peer.send_threadsafe(CallActor(entry.object_id, info.actor_id, method, payload)):
            if peer.closed:
                # Closed meanwhile: the close may have missed this entry; the loop checks.
                self.on_loop(self._missed_by_close, peer, entry.object_id)
            return True
        peer.inflight.pop(entry.object_id, None)
        entry.where = None
        return False

    def send_call(
        self, handle: ActorHandle[Any], entry: ObjectEntry, method: str, payload: Payload
    ) -> None:
        """Loop: send a method call, or queue it on the handle until the actor is placed."""
        info = handle._info
        if info is None:
            handle._queued.append((entry, method, payload))
            return
        self._send_call_info(info, entry, method, payload, info.max_task_retries)

    def _send_call_info(
        self, info: ActorInfo, entry: ObjectEntry, method: str, payload: Payload, retries: int
    ) -> None:
        peer = self.peer_for(info.address)
        sent = _call_sent(entry, info, method, payload)
        sent.retries = retries
        peer.inflight[entry.object_id] = sent
        entry.where = peer
        self.observe.call_sent(
            entry.object_id, info.label, method, self._worker_at.get(info.address), payload.nbytes
        )
        peer.send(CallActor(entry.object_id, info.actor_id, method, payload))

    def _on_result(self, peer: Peer, msg: TaskResult) -> None:
        sent = peer.inflight.pop(msg.task_id, None)
        if sent is None:
            return
        self.observe.answered(msg.task_id, msg.ok)
        entry = sent.entry
        if sent.counted:
            wid = self._worker_at.get(peer.address)
            if wid is not None:
                self.placement.finished(wid)
        entry.where = None
        spec = sent.spec
        if msg.ok:
            if spec is not None and spec.parent is not None:
                self.children.finished(msg.task_id)
            entry.set_value(msg.value)
            return
        if spec is not None and spec.retry_on and spec.retries != 0 and spec.actor is None:
            error = loads_error(msg.value)
            cause = getattr(error, "cause", None) or error
            if isinstance(error, TaskCancelledError):
                pass
            elif spec.retry_on is True or (
                isinstance(spec.retry_on, tuple) and isinstance(cause, spec.retry_on)
            ):
                self._retry_task(entry, spec, f"it raised {type(cause).__name__}: {cause}")
                return
        if spec is not None and spec.parent is not None:
            self.children.finished(msg.task_id)
        entry.set_error(msg.value)

    def cancel(self, entry: ObjectEntry, force: bool = False, recursive: bool = True) -> None:
        """Loop: ask the worker running the call to cancel it (``force``: kill the worker;
        ``recursive``: that worker cancels the tasks it started too, and so on down)."""
        peer = entry.where
        if entry.state == PENDING and isinstance(peer, Peer):
            sent = peer.inflight.get(entry.object_id)
            if sent is not None:
                sent.cancelled = True
            peer.send(CancelTask(entry.object_id, force, recursive))
            if force:
                self.observe.record(
                    "task_cancelled", entry.object_id, error="cancelled with force=True"
                )
                entry.set_error(
                    TaskCancelledError(
                        "the call was cancelled with force=True: its worker is killed"
                    )
                )
        elif entry.state == PENDING and peer == WAITING:
            self.waiting.backlog.remove_where(
                lambda p: isinstance(p, _Placing) and p.entry is entry
            )
            self.observe.record("task_cancelled", entry.object_id, error="cancelled while waiting")
            entry.set_error(
                TaskCancelledError("the call was cancelled while it waited for a worker")
            )

    def cancel_children(self, parent: ObjectId, force: bool) -> None:
        """Loop: ``parent``, a task running here, is being cancelled: cancel the tasks it
        started that are still in flight (each of their workers does the same for theirs)."""
        for child in self.children.cancel(parent):
            entry = self.objects.get(child)
            if entry is None:
                continue
            self.cancel(entry, force)
            if force and isinstance(entry.where, Peer):
                entry.where.flush()  # before this worker kills itself, if it can

    def interrupt_all(self) -> None:
        """Loop: cancel every call this process has in flight (a driver's Ctrl-C)."""
        n = 0
        for peer in list(self.peers.values()):
            for task_id, sent in list(peer.inflight.items()):
                if sent.kind != CREATE:
                    sent.cancelled = True
                    peer.send(CancelTask(task_id))
                    n += 1
        for waiting in self.waiting.backlog.remove_where(lambda p: isinstance(p, _Placing)):
            assert isinstance(waiting, _Placing)
            waiting.entry.set_error(
                TaskCancelledError("the call was interrupted while it waited for a worker")
            )
            n += 1
        log.info("interrupted: cancelled %d calls in flight or waiting for a worker", n)

    def _wait_blocking(self, event: threading.Event, timeout: float | None) -> bool:
        """A user thread's blocking wait: lends its task's CPUs meanwhile; a driver's
        Ctrl-C here cancels all of its remote work before the KeyboardInterrupt goes on."""
        from .executor import blocking_section

        try:
            with blocking_section():
                return event.wait(timeout)
        except KeyboardInterrupt:
            if self.kind == "driver":
                try:
                    self.on_loop(self.interrupt_all)
                except NotInitializedError:
                    pass
            raise

    # --- names and actors ----------------------------------------------------------------------

    def new_actor_info(
        self,
        kind: str,
        label: str,
        num_cpus: float,
        name: str | None,
        namespace: str | None,
        methods: tuple[str, ...] = (),
        *,
        max_restarts: int = 0,
        max_task_retries: int = 0,
        detached: bool = False,
        mailbox_size: int = 0,
    ) -> ActorInfo:
        """Any thread: place a new actor and describe it. Its address is "" when no worker
        fits now: ``place_actor`` waits for one."""
        try:
            address = self.placement.choose_for_actor(num_cpus).address
        except NoWorkerError:
            address = ""
        ns = (namespace or DEFAULT_NAMESPACE) if name else namespace
        return ActorInfo(
            new_actor_id(),
            address,
            kind,
            label,
            name,
            ns,
            methods,
            max_restarts,
            max_task_retries,
            detached,
            mailbox_size,
        )

    def _link(self) -> HeadLink:
        if self.headlink is None:
            raise NotInitializedError(
                "this process is not connected to a cluster head, so names are unavailable"
            )
        return self.headlink

    def register_name_nowait(self, info: ActorInfo, get_if_exists: bool) -> Any:
        """Loop: queue the name claim now (ordered before anything sent after it)."""
        head = self._link().up()
        pending = head.request_nowait(lambda rid: RegisterName(rid, info, get_if_exists))
        return head, pending, self._names_epoch

    async def finish_register(self, pending: Any) -> ActorInfo:
        """Loop: wait for a name claim; the actor now holding the name (ours or existing)."""
        head, request, epoch = pending
        try:
            reply = await head.wait_reply(request)
        except PeerClosedError as exc:
            raise ActorgridError(
                f"the cluster head went away before it answered a name registration: {exc}; "
                "try again once it is back"
            ) from None
        assert isinstance(reply, NameReply)
        if reply.error is not None:
            raise ValueError(reply.error)
        assert reply.actor is not None
        if reply.actor.name:
            key = (reply.actor.namespace or DEFAULT_NAMESPACE, reply.actor.name)
            self._cache_name(key, reply.actor, epoch)
        return reply.actor

    async def lookup(self, name: str, namespace: str | None, *, cached: bool) -> ActorInfo:
        key = (namespace or DEFAULT_NAMESPACE, name)
        if cached and key in self.names:
            return self.names[key]
        epoch = self._names_epoch
        reply = await self.head_request(lambda rid: LookupName(rid, name, key[0]))
        assert isinstance(reply, NameReply)
        if reply.actor is None:
            raise NameNotFoundError(
                f"no live actor is named {name!r} in namespace {key[0]!r}: it was never "
                "created, it has ended, or it lives in another namespace (pass namespace=)"
            )
        self._cache_name(key, reply.actor, epoch)
        return reply.actor

    def _cache_name(self, key: tuple[str, str], info: ActorInfo, epoch: int) -> None:
        if self._names_epoch == epoch:
            self.names[key] = info

    def forget_actor(self, actor_id: bytes) -> None:
        for key in [k for k, a in self.names.items() if a.actor_id == actor_id]:
            del self.names[key]

    def _on_actor_ended(self, peer: Peer, msg: ActorEnded) -> None:
        # From the head: a named actor this process looked up or registered has ended.
        self._names_epoch += 1
        self.forget_actor(msg.actor_id)
        if msg.rid:
            peer.send(Ack(msg.rid))

    async def kill(self, info: ActorInfo) -> None:
        peer = self.peer_for(info.address)
        try:
            await peer.request(lambda rid: KillActor(rid, info.actor_id))
        except PeerClosedError:
            pass  # its worker is gone, and the actor with it
        self.forget_actor(info.actor_id)
        if info.name and self.head is not None and not self.head.closed:
            # Its name may name an actor that was never created (its creator died first):
            # then no worker frees it, so the killer does. Freeing a free name does nothing.
            with trio.move_on_after(FREE_NAME_TIMEOUT_S):
                try:
                    await self.head.request(lambda rid: ActorEnded(rid, info.actor_id, "killed"))
                except PeerClosedError:
                    pass

    # --- mailboxes -----------------------------------------------------------------------------

    async def resolve_target(self, target: Any) -> ActorInfo:
        from .handles import ActorHandle

        if isinstance(target, str):
            info = await self.lookup(target, None, cached=True)
        elif isinstance(target, ActorHandle):
            info = await target._wait_info()
        elif isinstance(target, ObjectRef):
            if target._entry.actor is None:
                raise TypeError(
                    f"{target!r} is not the ref of a remote coroutine actor, so it has no "
                    "mailbox; send to a name, an actor handle or such a ref"
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
        if info.kind != "coroutine":
            raise TypeError(
                f"the {info.label} actor is a class actor, which has no mailbox: call its "
                "methods (handle.method.remote()); remote coroutines taking an ag.Context "
                "receive messages"
            )
        return info

    async def send(self, target: Any, message: Any) -> None:
        info = self.names.get((DEFAULT_NAMESPACE, target)) if isinstance(target, str) else None
        if info is None or info.kind != "coroutine":
            info = await self.resolve_target(target)
        payload = dumps(message)
        self.check_size(payload, "send()")
        peer = self.peer_for(info.address)
        try:
            if not peer.send_credits.try_take(info.actor_id):
                await _wait_credit(peer, info.actor_id)
            try:
                await peer.send_wait(Deliver(0, info.actor_id, payload), flush=True)
            except BaseException:
                # Not queued (send_wait raises only before it queues): the credit goes back.
                self._on_credit(peer, Credit(info.actor_id, 1))
                raise
        except PeerClosedError as exc:
            self.forget_actor(info.actor_id)
            raise ActorDiedError(f"cannot deliver to actor {_describe(info)}: {exc}") from None

    async def ask(self, target: Any, message: Any, timeout: float | None) -> Any:
        info = await self.resolve_target(target)
        payload = dumps(message)
        self.check_size(payload, "ask()")
        peer = self.peer_for(info.address)
        start = time.monotonic()
        try:
            with trio.fail_after(float("inf") if timeout is None else timeout):
                if not peer.send_credits.try_take(info.actor_id):
                    await _wait_credit(peer, info.actor_id)
                reply = await peer.request(lambda rid: Deliver(rid, info.actor_id, payload))
        except trio.TooSlowError:
            raise GetTimeoutError(
                f"actor {_describe(info)} did not reply within {timeout} s "
                f"(waited {time.monotonic() - start:.2f} s)"
            ) from None
        except PeerClosedError as exc:
            self.forget_actor(info.actor_id)
            raise ActorDiedError(f"actor {_describe(info)} is unreachable: {exc}") from None
        assert isinstance(reply, AskReply)
        if reply.ok:
            return loads(reply.value)
        error = loads_error(reply.value)
        if isinstance(error, ActorDiedError):
            self.forget_actor(info.actor_id)
        raise error

    # --- events and operations ----------------------------------------------------------------

    async def head_request(self, make: Callable[[int], Message]) -> Message:
        """Loop: ask the head, waiting a while for a lost head link to come back."""
        return await self._link().request(make)

    def publish(self, event: Event) -> None:
        """Loop: report an event to the head, which forwards it to every subscriber."""
        if self.headlink is not None:
            self.headlink.send(event)

    async def subscribe_events(self, listener: Callable[[Event], None] | None) -> list[Event]:
        """Loop: add ``listener`` for new events; the events known so far."""
        feed = self.event_feed
        if not feed.subscribed:
            feed.subscribed = True  # a link made meanwhile subscribes too
            try:
                reply = await self.head_request(SubscribeEvents)
            except BaseException:
                feed.subscribed = False
                raise
            assert isinstance(reply, EventHistory)
            feed.merge_history(reply.events)
        if listener is not None:
            feed.listeners.append(listener)
        return feed.recent()

    def unsubscribe_events(self, listener: Callable[[Event], None]) -> None:
        try:
            self.event_feed.listeners.remove(listener)
        except ValueError:
            pass

    def _on_event(self, peer: Peer, event: Event) -> None:
        self.event_feed.push(event)

    def _on_delivery_failed(self, peer: Peer, msg: DeliveryFailed) -> None:
        # A fire-and-forget message found its actor gone: counted, and reported as an event
        # (Cluster.events(), kind "message_undelivered") as well as logged.
        self.forget_actor(msg.actor_id)
        self.undelivered += 1
        detail = f"a message to actor {short(msg.actor_id)} was not delivered: {msg.reason}"
        log.warning("%s", detail)
        self.publish(Event("message_undelivered", time.time(), pid=os.getpid(), detail=detail))

    def _on_credit(self, peer: Peer, msg: Credit) -> None:
        peer.send_credits.grant(msg.actor_id, msg.n)
        lot = peer.credit_waiters.get(msg.actor_id)
        if lot is not None:
            # As many as the credits: waking every sender of a busy actor (thousands, when
            # all ack one clock) for each grant would cost O(senders) per grant. A woken
            # sender that finds the credit taken parks again, and a later grant wakes it.
            lot.unpark(count=msg.n)
            if not lot:
                del peer.credit_waiters[msg.actor_id]


async def _wait_credit(peer: Peer, actor_id: ActorId) -> None:
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


def _call_sent(entry: ObjectEntry, info: ActorInfo, method: str, payload: Payload) -> Sent:
    return Sent(
        entry, CALL, actor=info, method=method, payload=payload, retries=info.max_task_retries
    )


def _describe(info: ActorInfo) -> str:
    return repr(info.name) if info.name else f"{info.label}#{short(info.actor_id)}"
