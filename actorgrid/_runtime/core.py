"""The per-process runtime: one in every driver and worker.

It listens for peers, keeps one outbound connection per peer address (requests go out on it,
answers come back on it, so one caller's calls to one worker stay in order), owns the objects
this process created, places this process's calls on workers, and caches names. The head is
consulted only for membership and names, never for a call.

The name cache holds only live actors: the head sends ActorEnded to every process it gave a
named actor to, and waits for its Ack, before the actor's end is confirmed to its worker. So a
send by name after a named actor's end is known (its ref resolved, its kill returned) never
goes to it: it reaches the name's new holder or raises NameNotFoundError.

Thread model: everything here runs on the runtime's Trio loop, except the methods marked
"any thread", which serialize in the calling thread and hop onto the loop through the Portal.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from .._exceptions import (
    ActorDiedError,
    ActorgridError,
    GetTimeoutError,
    NameNotFoundError,
    NotInitializedError,
    ProtocolError,
    WorkerDiedError,
)
from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES
from .._protocol.ids import ObjectId, WorkerId, new_actor_id, new_object_id, short
from .._protocol.messages import (
    Ack,
    ActorEnded,
    ActorInfo,
    AskReply,
    CallActor,
    CreateActor,
    Deliver,
    DeliveryFailed,
    FetchObject,
    Hello,
    KillActor,
    LookupName,
    Membership,
    Message,
    NameReply,
    ObjectValue,
    Payload,
    RegisterName,
    Shutdown,
    SubmitTask,
    SubscribeMembership,
    TaskResult,
    WorkerJoined,
    WorkerLeft,
)
from .._scheduler.names import DEFAULT_NAMESPACE
from .._scheduler.placement import NoWorkerError, Placement
from .._transport.tcp import TcpFrameStream, open_tcp_frame_stream, serve_tcp_frame_streams
from .peer import LoopbackPeer, Peer, PeerClosedError
from .portal import Portal, ThreadPool
from .refs import PENDING, ObjectEntry, ObjectRef
from .serialization import dumps, loads, loads_error, system_error

if TYPE_CHECKING:
    from .executor import Executor
    from .handles import ActorHandle

__all__ = ["Runtime", "current_runtime", "runtime_or_none", "set_current_runtime"]

log = logging.getLogger("actorgrid.runtime")

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


def _in_trio() -> bool:
    return trio.lowlevel.in_trio_run()


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


class _CountDown:
    __slots__ = ("event", "left")

    def __init__(self, n: int, event: threading.Event | trio.Event) -> None:
        self.left = n
        self.event = event

    def set(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.event.set()


class Runtime:
    def __init__(
        self,
        *,
        kind: str,
        secret: bytes,
        head_address: str | None,
        host: str = "127.0.0.1",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.kind = kind
        self.secret = secret
        self.head_address = head_address
        self.host = host
        self.max_message_bytes = max_message_bytes
        self.address = ""
        self.placement = Placement()
        self.peers: dict[str, Peer] = {}
        self.head: Peer | None = None
        self.objects: weakref.WeakValueDictionary[ObjectId, ObjectEntry] = (
            weakref.WeakValueDictionary()
        )
        self.pinned: dict[ObjectId, ObjectEntry] = {}
        self.names: dict[tuple[str, str], ActorInfo] = {}
        # Bumped when the head says named actors ended: a name reply that was in flight
        # meanwhile may be older than that news, so it is used but not cached.
        self._names_epoch = 0
        self.executor: Executor | None = None
        self.membership_changed = trio.Event()
        self._worker_at: dict[str, WorkerId] = {}
        self._handlers: dict[type, Callable[[Peer, Any], Any]] = {
            TaskResult: self._on_result,
            FetchObject: self._on_fetch,
            DeliveryFailed: self._on_delivery_failed,
            ActorEnded: self._on_actor_ended,
            WorkerJoined: self._on_worker_joined,
            WorkerLeft: self._on_worker_left,
            Shutdown: self._on_shutdown,
        }
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
            self.pool = ThreadPool(self.portal)
            try:
                self.address = await nursery.start(
                    serve_tcp_frame_streams,
                    self._accept,
                    self.host,
                    0,
                    self.secret,
                )
                self.hello = Hello(self.kind, self.address, os.getpid())
                loopback = LoopbackPeer(self.address, self._handle, local_hello=self.hello)
                self.peers[self.address] = loopback
                nursery.start_soon(loopback.run_loopback)
                if self.executor is not None:
                    self._handlers.update(self.executor.handlers())
                    await nursery.start(self.executor.serve)
                if self.head_address is not None:
                    await self._connect_head(self.head_address)
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.pool.close()

    async def _connect_head(self, address: str) -> None:
        assert self._nursery is not None
        stream = await open_tcp_frame_stream(
            address, self.secret, max_message_bytes=self.max_message_bytes
        )
        head = Peer(address, self._handle, local_hello=self.hello)
        self.head = head
        self._nursery.start_soon(head.run, stream)
        reply = await head.request(SubscribeMembership)
        assert isinstance(reply, Membership)
        for info in reply.workers:
            self._add_worker(info)

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
            peer = Peer(address, self._handle, local_hello=self.hello)
            peer.wake_threadsafe = self._waker(peer)
            peer.on_closed.append(self._peer_closed)
            self.peers[address] = peer
            self.nursery.start_soon(self._dial, peer)
        return peer

    async def _dial(self, peer: Peer) -> None:
        try:
            stream = await open_tcp_frame_stream(
                peer.address, self.secret, max_message_bytes=self.max_message_bytes
            )
        except (OSError, ActorgridError) as exc:
            peer.close(f"could not connect: {exc}")
            return
        await peer.run(stream)

    async def _accept(self, stream: TcpFrameStream) -> None:
        peer = Peer(stream.peer, self._handle, local_hello=self.hello)
        peer.wake_threadsafe = self._waker(peer)
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
        for entry, counted in list(inflight.values()):
            if counted and wid is not None:
                self.placement.finished(wid)
            entry.set_error(
                WorkerDiedError(
                    f"the worker at {peer.address} went away before answering ({peer.close_reason})"
                )
            )

    # --- membership ----------------------------------------------------------------------------

    def _add_worker(self, info: Any) -> None:
        self.placement.add(info)
        self._worker_at[info.address] = info.worker_id
        self.membership_changed.set()
        self.membership_changed = trio.Event()

    def _on_worker_joined(self, peer: Peer, msg: WorkerJoined) -> None:
        self._add_worker(msg.worker)

    def _on_worker_left(self, peer: Peer, msg: WorkerLeft) -> None:
        info = self.placement.workers.get(msg.worker_id)
        self.placement.remove(msg.worker_id)
        if info is not None:
            self._worker_at.pop(info.address, None)
            for key in [k for k, a in self.names.items() if a.address == info.address]:
                del self.names[key]
            self._names_epoch += 1
        self.membership_changed.set()
        self.membership_changed = trio.Event()

    def _on_shutdown(self, peer: Peer, msg: Shutdown) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown(msg.reason)

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
                "fetch it; raise max_message_bytes in ag.init() or pass the data another way "
                "(e.g. a file path)"
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
        if _in_trio():
            raise RuntimeError(
                "ag.get() blocks, and it was called from a thread running a Trio loop; "
                "use `await ref` or `await ag.get_async(refs)` there instead"
            )
        single = isinstance(refs, ObjectRef)
        items: list[ObjectRef[Any]] = [refs] if single else list(refs)
        for ref in items:
            if not isinstance(ref, ObjectRef):
                raise TypeError(f"ag.get() takes ObjectRefs, got {type(ref).__name__}")
        pending = [r._entry for r in items if r._entry.state == PENDING]
        if pending:
            event = threading.Event()
            countdown = _CountDown(0, event)
            for entry in pending:
                if entry.owner != self.address and not entry.fetching:
                    self.on_loop(self._ensure_fetch, entry)
                countdown.left += 1
                if not entry.add_waiter(countdown):
                    countdown.left -= 1
            if countdown.left > 0:
                from .executor import blocking_section

                with blocking_section():
                    done = event.wait(timeout)
                if not done:
                    left = sum(1 for r in items if r._entry.state == PENDING)
                    raise GetTimeoutError(
                        f"ag.get() timed out after {timeout} s with {left} of {len(items)} "
                        "refs still pending"
                    )
        values = [r._entry.value() for r in items]
        return values[0] if single else values

    async def get_async(self, refs: Any, timeout: float | None = None) -> Any:
        if not self.portal.in_loop_thread():
            # Awaited from another Trio loop than the runtime's (e.g. trio.run after
            # ag.init()): wait in a thread instead of touching the runtime's loop state.
            return await trio.to_thread.run_sync(self.get_sync, refs, timeout)
        single = isinstance(refs, ObjectRef)
        items: list[ObjectRef[Any]] = [refs] if single else list(refs)
        with trio.move_on_after(float("inf") if timeout is None else timeout) as scope:
            for ref in items:
                entry = ref._entry
                if entry.state == PENDING:
                    self._ensure_fetch(entry)
                    event = trio.Event()
                    if entry.add_waiter(event):
                        await event.wait()
        if scope.cancelled_caught:
            raise GetTimeoutError(f"timed out after {timeout} s waiting for {len(items)} refs")
        values = [r._entry.value() for r in items]
        return values[0] if single else values

    def wait_sync(
        self, refs: Sequence[ObjectRef[Any]], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
        if _in_trio():
            raise RuntimeError(
                "ag.wait() blocks; in Trio code use `await ag.wait_async(...)` instead"
            )
        self._check_wait_args(refs, num_returns)
        ready = sum(1 for r in refs if r._entry.state != PENDING)
        if ready < num_returns:
            event = threading.Event()
            self._arm_countdown(refs, num_returns - ready, event)
            from .executor import blocking_section

            with blocking_section():
                event.wait(timeout)
        return self._split_ready(refs, num_returns)

    async def wait_async(
        self, refs: Sequence[ObjectRef[Any]], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
        if not self.portal.in_loop_thread():
            return await trio.to_thread.run_sync(self.wait_sync, refs, num_returns, timeout)
        self._check_wait_args(refs, num_returns)
        ready = sum(1 for r in refs if r._entry.state != PENDING)
        if ready < num_returns:
            event = trio.Event()
            self._arm_countdown(refs, num_returns - ready, event)
            with trio.move_on_after(float("inf") if timeout is None else timeout):
                await event.wait()
        return self._split_ready(refs, num_returns)

    @staticmethod
    def _check_wait_args(refs: Sequence[ObjectRef[Any]], num_returns: int) -> None:
        if not all(isinstance(r, ObjectRef) for r in refs):
            raise TypeError("ag.wait() takes a list of ObjectRefs")
        if len(set(refs)) != len(refs):
            raise ValueError("ag.wait() got the same ObjectRef twice")
        if not 0 <= num_returns <= len(refs):
            raise ValueError(f"num_returns must be between 0 and {len(refs)}, not {num_returns}")

    def _arm_countdown(
        self, refs: Iterable[ObjectRef[Any]], n: int, event: threading.Event | trio.Event
    ) -> None:
        countdown = _CountDown(n, event)
        for ref in refs:
            entry = ref._entry
            if entry.state == PENDING:
                if entry.owner != self.address:
                    self.on_loop(self._ensure_fetch, entry)
                entry.add_waiter(countdown)

    @staticmethod
    def _split_ready(
        refs: Sequence[ObjectRef[Any]], num_returns: int
    ) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
        ready: list[ObjectRef[Any]] = []
        not_ready: list[ObjectRef[Any]] = []
        for ref in refs:
            if len(ready) < num_returns and ref._entry.state != PENDING:
                ready.append(ref)
            else:
                not_ready.append(ref)
        return ready, not_ready

    # --- calls ---------------------------------------------------------------------------------

    def check_size(self, payload: Payload, label: str) -> None:
        if payload.nbytes > self.max_message_bytes:
            raise ValueError(
                f"the arguments of {label} serialize to {payload.nbytes} bytes, over "
                f"max_message_bytes={self.max_message_bytes}; raise it in ag.init() or pass "
                "the data another way (e.g. a file path)"
            )

    def send_task(
        self,
        entry: ObjectEntry,
        function_id: bytes,
        blob: Callable[[], bytes],
        payload: Payload,
        num_cpus: float,
        actor: ActorInfo | None,
    ) -> None:
        """Loop: place a task (unless it is an actor with a place already) and send it."""
        if actor is not None:
            address, wid = actor.address, self._worker_at.get(actor.address)
        else:
            try:
                worker = self.placement.choose_for_task(num_cpus)
            except NoWorkerError as exc:
                entry.set_error(exc)
                return
            address, wid = worker.address, worker.worker_id
            self.placement.started(wid)
        peer = self.peer_for(address)
        code = None
        if function_id not in peer.sent_code:
            code = blob()
            peer.sent_code.add(function_id)
        peer.inflight[entry.object_id] = (entry, actor is None)
        entry.where = peer
        peer.send(SubmitTask(entry.object_id, function_id, code, payload, num_cpus, actor))

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
        peer.inflight[entry.object_id] = (entry, False)
        peer.send(CreateActor(entry.object_id, info, class_id, code, payload, max_concurrency))

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
        peer.inflight[entry.object_id] = (entry, False)
        entry.where = peer
        if peer.send_threadsafe(CallActor(entry.object_id, info.actor_id, method, payload)):
            if peer.closed:
                # Closed meanwhile: the close may have missed this entry; fail it here.
                error = WorkerDiedError(f"the worker at {peer.address} went away")
                self.on_loop(entry.set_error, error)
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
        peer = self.peer_for(info.address)
        peer.inflight[entry.object_id] = (entry, False)
        entry.where = peer
        peer.send(CallActor(entry.object_id, info.actor_id, method, payload))

    def _on_result(self, peer: Peer, msg: TaskResult) -> None:
        item = peer.inflight.pop(msg.task_id, None)
        if item is None:
            return
        entry, counted = item
        if counted:
            wid = self._worker_at.get(peer.address)
            if wid is not None:
                self.placement.finished(wid)
        entry.where = None
        if msg.ok:
            entry.set_value(msg.value)
        else:
            entry.set_error(msg.value)

    def cancel(self, entry: ObjectEntry) -> None:
        """Loop: ask the worker running the call to cancel it."""
        from .._protocol.messages import CancelTask

        peer = entry.where
        if entry.state == PENDING and isinstance(peer, Peer):
            peer.send(CancelTask(entry.object_id))

    # --- names and actors ----------------------------------------------------------------------

    def new_actor_info(
        self,
        kind: str,
        label: str,
        num_cpus: float,
        name: str | None,
        namespace: str | None,
        methods: tuple[str, ...] = (),
    ) -> ActorInfo:
        """Any thread: place a new actor and describe it."""
        worker = self.placement.choose_for_actor(num_cpus)
        ns = (namespace or DEFAULT_NAMESPACE) if name else namespace
        return ActorInfo(new_actor_id(), worker.address, kind, label, name, ns, methods)

    def _head(self) -> Peer:
        if self.head is None or self.head.closed:
            raise NotInitializedError(
                "this process is not connected to a cluster head, so names are unavailable"
            )
        return self.head

    def register_name_nowait(self, info: ActorInfo, get_if_exists: bool) -> Any:
        """Loop: queue the name claim now (ordered before anything sent after it)."""
        pending = self._head().request_nowait(lambda rid: RegisterName(rid, info, get_if_exists))
        return pending, self._names_epoch

    async def finish_register(self, pending: Any) -> ActorInfo:
        """Loop: wait for a name claim; the actor now holding the name (ours or existing)."""
        request, epoch = pending
        reply = await self._head().wait_reply(request)
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
        reply = await self._head().request(lambda rid: LookupName(rid, name, key[0]))
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
            await peer.send_wait(Deliver(0, info.actor_id, payload), flush=True)
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

    def _on_delivery_failed(self, peer: Peer, msg: DeliveryFailed) -> None:
        self.forget_actor(msg.actor_id)
        log.warning("a message to actor %s was not delivered: %s", short(msg.actor_id), msg.reason)


def _describe(info: ActorInfo) -> str:
    return repr(info.name) if info.name else f"{info.label}#{short(info.actor_id)}"
