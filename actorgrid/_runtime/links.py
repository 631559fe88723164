"""The runtime's base: its state, its lifecycle, and its links to peers and the head.

The rest of Runtime is layered on this class, one module per responsibility (lowest first):
membership (under it: the workers it may place calls on), links, objects, tasks, actors,
names, core. See core.py for the whole picture."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from .._exceptions import (
    ActorDiedError,
    ActorgridError,
    NotInitializedError,
    ProtocolError,
    TaskCancelledError,
    WorkerDiedError,
)
from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES
from .._protocol.ids import ActorId, ObjectId, WorkerId, short
from .._protocol.messages import (
    ActorInfo,
    Credit,
    DeliveryFailed,
    Event,
    EventHistory,
    FetchObject,
    FinishedSends,
    Hello,
    Message,
    NamesEnded,
    Payload,
    Shutdown,
    StreamItem,
    SubscribeEvents,
    TaskResult,
    TaskResults,
    TasksCancelled,
    WorkerInfo,
    WorkerJoined,
    WorkerLeft,
    WorkerState,
)
from .._scheduler.backlog import DEFAULT_PENDING_WARNING_S
from .._scheduler.names import NameCache
from .._scheduler.placement import Placement
from .._scheduler.relink import Relinks
from .._scheduler.tasktree import TaskTree
from .._scheduler.topics import Subscriptions
from .._transport.tcp import ListenLimits
from .._transport.tls import TLSConfig
from .confirms import FinishedReports, report_lost
from .generators import CallerStreams
from .headlink import EventFeed, HeadLink, reown
from .hosted import HostedExecutor
from .observe import Observer
from .peer import LoopbackPeer, Peer
from .portal import Portal
from .pulse import DEFAULT_PULSE_INTERVAL_S, PulseMonitor
from .records import OwnedActor, Sent, TaskSpec, _describe
from .refcounting import RefCounts
from .refs import PENDING, EntryTable, ObjectEntry
from .relinking import RuntimeRelinking
from .seams import Pool, Seams, default_seams
from .waiting import WorkerWait

if TYPE_CHECKING:
    from .._transport.base import FrameStream

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


class RuntimeLinks(RuntimeRelinking):
    """State, lifecycle and peer links of the per-process runtime."""

    # Defined by the layers above (objects, tasks, actors, names), which this class's message
    # handlers and failover call; declared here so that each layer type-checks on its own.
    _on_fetch: Callable[[Peer, FetchObject], None]
    _on_result: Callable[[Peer, TaskResult], None]
    _on_results: Callable[[Peer, TaskResults], None]  # tasks.py: a worker's batch of answers
    _on_names_ended: Callable[[Peer, NamesEnded], None]
    _send_spec: Callable[[ObjectEntry, TaskSpec], None]
    _retry_task: Callable[..., None]
    tasks_lost: Callable[..., int]
    calls_dropped: Callable[[str, tuple[ObjectId, ...], str], int]
    follow: Callable[..., bool]
    owner_decides: Callable[[Sent], bool]
    _restart_coroutine_actor: Callable[[ObjectEntry, TaskSpec, str], None]
    _restart_owned_at: Callable[[str, str], None]
    _send_call_info: Callable[[ActorInfo, ObjectEntry, str, Payload, int], None]
    _register_owned: Callable[[ActorInfo], None]
    _new_incarnation: Callable[[ActorInfo, str], Awaitable[ActorInfo | None]]
    _wait_blocking: Callable[[threading.Event, float | None], bool]
    interrupt_all: Callable[[], None]
    _store_handlers: Callable[[], dict[type, Callable[[Peer, Any], Any]]]

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
        listen_limits: ListenLimits | None = None,
        seams: Seams | None = None,
    ) -> None:
        self.kind = kind
        self.seams = seams or default_seams()  # its network and threads (a simulation's own)
        self.tls = tls
        self.listen_limits = listen_limits
        self.monitor: PulseMonitor[Peer] = PulseMonitor(pulse_interval_s)
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
        self.objects = EntryTable()  # held weakly (refs.py)
        self.refs = RefCounts(self)  # reference counting of objects whose refs left
        self.names = NameCache()
        # Bumped when the head says named actors ended: a name reply that was in flight
        # meanwhile may be older than that news, so it is used but not cached.
        self._names_epoch = 0
        # Refs of coroutine actors reached with get_if_exists: resolved when that actor ends.
        self.end_watchers: dict[ActorId, list[ObjectEntry]] = {}
        self.topics = Subscriptions()  # this process's agents subscribed to topics
        self.executor: HostedExecutor | None = None
        # Fire-and-forget messages reported undelivered (DeliveryFailed), since start.
        self.undelivered = 0
        # Quiet calls and fire-and-forget messages lost with their worker (confirms.py).
        self.lost_sends = 0
        # Keyed agents' flow-control ids (virtual.key_id) this process sent fire-and-forget
        # messages to, and their names, for those reports: one entry per key, not per message.
        self.key_labels: dict[ActorId, str] = {}
        self.finished_reports = FinishedReports()  # a worker's confirmations of them
        self.membership_changed = trio.Event()
        # Other runtime_envs this process's calls use (.options(runtime_env=)): their workers
        # join its placement for those calls alone; workers of envs it does not use wait
        # aside (O(1) each) until it does.
        self.envs_used: set[str] = set()
        self._env_aside: dict[WorkerId, WorkerInfo] = {}
        self._worker_at: dict[str, WorkerId] = {}
        # Workers taken out of placement when their link died, until the head's WorkerLeft.
        self._unplaced: dict[WorkerId, WorkerInfo | None] = {}
        # Links to live workers that dropped: redialled before their worker counts as dead
        # (_scheduler/relink.py); the dropped link of each redial under way, by address.
        self.relinks = Relinks()
        self._relinking: dict[str, Peer] = {}
        self.streams = CallerStreams(self)  # remote generators this process consumes
        self._handlers: dict[type, Callable[[Peer, Any], Any]] = {
            TaskResult: self._on_result,
            TaskResults: self._on_results,
            TasksCancelled: self._on_tasks_cancelled,
            FetchObject: self._on_fetch,
            DeliveryFailed: self._on_delivery_failed,
            Credit: self._on_credit,
            FinishedSends: self._on_finished,
            NamesEnded: self._on_names_ended,  # names.py
            WorkerJoined: self._membership_news(self._on_worker_joined),
            WorkerLeft: self._membership_news(self._on_worker_left),
            WorkerState: self._membership_news(self._on_worker_state),
            Event: self._on_event,
            Shutdown: self._on_shutdown,
            StreamItem: self.streams.on_item,
            **self.refs.handlers(),
        }
        self.observe = Observer()  # task events, timeline spans, worker output shown here
        self._handlers.update(self.observe.handlers(self.event_feed))
        self._handlers.update(self._store_handlers())  # pulls and frees of stored objects
        self.on_shutdown: Callable[[str], None] | None = None
        self._nursery: trio.Nursery | None = None
        self.portal: Portal
        self.pool: Pool

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
            self.pool = self.seams.make_pool(self.portal)
            await nursery.start(self.monitor.serve)
            try:
                self.address = await nursery.start(
                    functools.partial(
                        self.seams.transport.serve,
                        self._accept,
                        self.host,
                        0,
                        self.secret,
                        max_message_bytes=self.max_message_bytes,
                        tls=self.tls,
                        limits=self.listen_limits,
                    )
                )
                self.hello = Hello(self.kind, self.address, os.getpid())
                loopback = LoopbackPeer(self.address, self._handle, local_hello=self.hello)
                self.peers[self.address] = loopback
                nursery.start_soon(loopback.run_loopback)
                if self.executor is not None:
                    self._handlers.update(self.executor.handlers())
                    reports = self.finished_reports
                    loopback.sends.on_first_done = functools.partial(reports.note, loopback)
                    nursery.start_soon(reports.serve, self.on_loop)
                    await nursery.start(self.executor.serve)
                if self.head_address is not None:
                    self.headlink = HeadLink(
                        self.head_address,
                        dial=functools.partial(self._open_stream, self.head_address),
                        make_peer=self._head_peer,
                        on_connected=self._on_head_connected,
                        wait_s=HEAD_WAIT_S,
                    )
                    owned = self.owned.values()
                    self.headlink.on_reconnected.append(
                        lambda head: reown(head, [o.info for o in owned])
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
            return await self.seams.transport.open(
                address, self.secret, max_message_bytes=self.max_message_bytes, tls=self.tls
            )
        raise TimeoutError(
            f"could not connect to {address} within {self.dial_timeout_s:g} s: the process "
            "there is hung, stopped or cut off"
        )

    async def _dial(self, peer: Peer) -> None:
        try:
            stream = await self._open_stream(peer.address)
        except trio.Cancelled:
            if peer.address in self._relinking:  # its dropped link's calls are answered
                peer.close("this process stopped while it redialled")
            raise
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
        dropped = self._relinking.pop(peer.address, None)
        if dropped is not None:
            # A redial: the process there shook hands with the cluster's secret on the address
            # only it listens on, so it is alive, and only the link had dropped.
            self.relinks.redialled(peer.address, True)
            self._link_dropped(dropped)
        await peer.run(stream)

    async def _accept(self, stream: FrameStream) -> None:
        peer = Peer(stream.peer, self._handle, local_hello=self.hello, monitor=self.monitor)
        peer.wake_threadsafe = self._waker(peer)
        if self.executor is not None:
            peer.on_closed.append(self.executor.caller_gone)
            peer.sends.on_first_done = functools.partial(self.finished_reports.note, peer)
        await peer.run(stream)

    def _waker(self, peer: Peer) -> Callable[[], None]:
        return lambda: self.portal.call_soon(peer.flush)

    def on_message(self, cls: type, handler: Callable[[Peer, Any], Any]) -> None:
        """Handle messages of ``cls`` with ``handler`` (for layers above: job output)."""
        self._handlers[cls] = handler

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
        dropped = self._relinking.pop(peer.address, None)
        if dropped is not None:
            # The redial of a dropped link failed (or the head declared its worker dead while
            # it dialled): the worker is gone; the dropped link's calls were sent first.
            self.relinks.redialled(peer.address, False)
            self._link_gone(dropped)
        elif self._redial(peer):
            return
        self._link_gone(peer)

    def _link_gone(self, peer: Peer) -> None:
        """Loop: the link ``peer`` closed for good (its worker died, or this process stops)."""
        self.relinks.worker_left(peer.address)
        inflight, peer.inflight = peer.inflight, {}
        wid = self._worker_at.get(peer.address)
        lost = not self._closing and peer.address != self.address
        if (
            lost
            and wid is not None
            and wid in self.placement.workers
            and (inflight or peer.address in self.owned_at)
        ):
            # The link to a worker died under calls: it is dead to us (the head confirms,
            # and its WorkerLeft still ends the borrows of that process: _unplaced). Not
            # again for a failed redial's link, nor after the head's WorkerLeft (its abort).
            self._unplaced[wid] = self.placement.workers.get(wid)
            self.placement.remove(wid)
        why = f"the worker at {peer.address} went away before answering ({peer.close_reason})"
        if lost:
            report_lost(self, peer, f"its worker at {peer.address} went away", self._label_of)
            self._restart_owned_at(peer.address, why)
        else:
            peer.sends.take_unconfirmed()  # (this process stops: nobody is left to tell)
            why = f"the call was abandoned: {peer.close_reason}"
        retried = 0
        for sent in list(inflight.values()):
            if sent.counted and wid is not None:
                self.placement.finished(wid)
            if sent.entry.state != PENDING:
                continue
            spec = sent.spec
            if spec is not None and spec.actor is None:
                continue  # a task: its owner state decides, in tasks_lost below
            if lost and not peer.connected and spec and spec.actor is None and not sent.cancelled:
                # Never written to a socket, so it never ran: place it again, and it spends
                # no retry (a dead worker still listed is not the task's fault).
                self._send_spec(sent.entry, spec)
                retried += 1
                continue
            retried += self._lost(sent, why, lost=lost, written=peer.connected)
        retried += self.tasks_lost(peer.address, peer.connected, why, retry=lost)
        if retried:
            self.publish(Event("task_retried", time.time(), detail=f"{retried} tasks: {why}"))

    def _label_of(self, actor_id: ActorId) -> str:
        owned = self.owned.get(actor_id)
        info = owned.info if owned is not None else self.names.info_of(actor_id)
        if info is not None:
            return _describe(info)
        return self.key_labels.get(actor_id) or short(actor_id)

    def _missed_by_close(self, peer: Peer, object_id: ObjectId) -> None:
        """Loop: a call was put in flight on ``peer`` as it closed, after the close had
        handled what was in flight: handle it the same way now."""
        if self._relinking.get(peer.address) is peer:
            return  # it stays with the link's other calls until the redial answers
        sent = peer.inflight.pop(object_id, None)
        if sent is not None and sent.entry.state == PENDING:
            why = f"the worker at {peer.address} went away ({peer.close_reason})"
            self._lost(sent, why, lost=not self._closing)

    def _lost(self, sent: Sent, why: str, *, lost: bool, written: bool = True) -> bool:
        """A call's link died before its answer (``lost``: the peer died, rather than this
        process stopping): retry it (True), restart its actor, re-send it to its restarted
        actor, or fail it."""
        if self.owner_decides(sent):
            return False  # a call to an actor this process created: WorkerGone decides
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
            if not self._closing:  # the owner state decides (CoroutineLost)
                self._restart_coroutine_actor(entry, spec, why)
            else:
                entry.set_error(ActorDiedError(f"actor {_describe(spec.actor)} died: {why}"))
        elif not (lost and self.follow(sent, why, written=written)):
            label = _describe(actor) if actor is not None else "the actor"
            entry.set_error(ActorDiedError(f"actor {label} died: {why}"))
        return False

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

    # --- objects -------------------------------------------------------------------------------

    def head_lost(self) -> str | None:
        """What happened to the link to the head while it is being reconnected, else None."""
        return self.headlink.lost if self.headlink is not None else None

    def _link(self) -> HeadLink:
        if self.headlink is None:
            raise NotInitializedError(
                "this process is not connected to a cluster head, so names are unavailable"
            )
        return self.headlink

    def forget_actor(self, actor_id: bytes) -> None:
        self.names.forget_actor(ActorId(actor_id))

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

    def _on_tasks_cancelled(self, peer: Peer, msg: TasksCancelled) -> None:
        # A stopping worker's batch (_protocol/agentstop.py): each as its own TaskResult.
        for task_id in msg.task_ids:
            self._on_result(peer, TaskResult(task_id, False, msg.value))

    def _on_delivery_failed(self, peer: Peer, msg: DeliveryFailed) -> None:
        # A fire-and-forget message found its actor gone: counted, and reported as an event
        # (Cluster.events(), kind "message_undelivered") as well as logged.
        label = self._label_of(msg.actor_id)  # (before it is forgotten, with its name)
        self.forget_actor(msg.actor_id)
        peer.sends.confirmed(msg.actor_id, 1)  # told here, not counted as lost with its worker
        self.undelivered += 1
        detail = f"a message to actor {label} was not delivered: {msg.reason}"
        log.warning("%s", detail)
        self.publish(Event("message_undelivered", time.time(), pid=os.getpid(), detail=detail))

    def _on_finished(self, peer: Peer, msg: FinishedSends) -> None:
        peer.sends.on_finished(msg)
        # With the credits the worker held back for these actors (confirms.py, flow.py).
        for actor_id, n in zip(msg.actor_ids, msg.credits, strict=False):
            if n:
                self._on_credit(peer, Credit(actor_id, n))

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
