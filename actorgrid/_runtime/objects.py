"""Objects this process owns or borrows: put, fetch, get and wait."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import trio

from .._exceptions import NotInitializedError, ObjectLostError
from .._protocol.ids import new_object_id, short
from .._protocol.messages import ActorInfo, FetchObject, ObjectValue, Payload
from .._protocol.store import FreeObjects, ObjectChunk, PullObject
from . import getting, segments
from .blocking import blocking_section
from .links import RuntimeLinks
from .peer import Peer, PeerClosedError
from .refcounting import freed_error, owner_lost_error
from .refs import PENDING, ObjectEntry, ObjectRef
from .segments import Locator, StoreClient
from .serialization import dumps, loads_error, system_error

PULL_CHUNK_BYTES = 8 << 20  # a pull asks for the object in pieces of this size
PULL_WINDOW = 4  # pieces asked for ahead of the one being written


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


class RuntimeObjects(RuntimeLinks):
    """Owned and borrowed objects."""

    def new_entry(self, actor: ActorInfo | None = None) -> ObjectEntry:
        """Any thread: a pending object owned by this process."""
        entry = ObjectEntry(new_object_id(), self.address, actor)
        self.objects[entry.object_id] = entry
        return entry

    def put(self, value: Any) -> ObjectRef[Any]:
        payload = segments.place(dumps(value), owned=True)
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
            entry.set_error(owner_lost_error(entry.object_id, entry.owner, exc))
            return
        assert isinstance(reply, ObjectValue)
        if reply.ok:
            locator = segments.locator_of(reply.value)
            store = segments.client()
            if locator is not None and store is not None and locator.node != store.node:
                try:
                    await self.pull(locator)
                except Exception as exc:
                    entry.set_error(exc)
                    return
            entry.set_value(reply.value)
        else:
            entry.set_error(reply.value)

    def _on_fetch(self, peer: Peer, msg: FetchObject) -> None:
        entry = self.objects.get(msg.object_id) or self.refs.revive(msg.object_id)
        if entry is None:
            error = freed_error(msg.object_id, self.address)
            peer.send(ObjectValue(msg.rid, False, system_error(error)))
        elif entry.state == PENDING:
            self._ensure_fetch(entry)
            entry.add_waiter(_SendWhenReady(peer, msg.rid, entry, self.max_message_bytes))
        else:
            peer.send(_object_value(msg.rid, entry, self.max_message_bytes))

    # --- the node's object store (segments.py) -------------------------------------------

    def join_store(self, config: dict[str, Any] | None) -> None:
        """Use this node's object store (None: keep every value inline)."""
        if config is None:
            segments.configure(None)
            return
        store = StoreClient(config, self.address)
        store.pull_sync = self._pull_sync
        store.free_remote = self._free_remote
        segments.configure(store)
        self._pulls: dict[str, trio.Event] = {}

    def leave_store(self) -> None:
        store = segments.client()
        if store is not None and store.pull_sync == self._pull_sync:
            segments.configure(None)

    def _store_handlers(self) -> dict[type, Callable[[Peer, Any], Any]]:
        return {PullObject: self._on_pull, FreeObjects: self._on_free_objects}

    def _pull_sync(self, locator: Locator) -> None:
        if self.portal.in_loop_thread():
            raise RuntimeError(
                f"{locator} is held on another node and must be pulled first, which this "
                "thread (the runtime's loop) cannot wait for; await the ref (or ag.get_async) "
                "instead of loading it in place"
            )
        self.portal.run(self.pull, locator)

    def _free_remote(self, locator: Locator) -> None:
        try:
            self.portal.call_soon(self._send_free, locator)
        except Exception:
            pass  # the runtime has stopped: the holder's node frees it when it stops

    def _send_free(self, locator: Locator) -> None:
        peer = self.peers.get(locator.holder)
        if peer is not None and not peer.closed:
            peer.send(FreeObjects((locator.name,)))

    async def pull(self, locator: Locator) -> None:
        """Loop: copy a value held on another node into this node's store (once, however
        many readers ask at the same time). ObjectLostError if its holder is gone."""
        store = segments.client()
        assert store is not None
        if os.path.exists(store.path(locator.name)):
            return
        running = self._pulls.get(locator.name)
        if running is not None:
            await running.wait()
            return
        done = self._pulls[locator.name] = trio.Event()
        try:
            await self._pull(store, locator)
        finally:
            del self._pulls[locator.name]
            done.set()

    async def _pull(self, store: StoreClient, locator: Locator) -> None:
        peer = self.peer_for(locator.holder)
        name = locator.name

        def ask(offset: int) -> Any:
            return peer.request_nowait(lambda rid: PullObject(rid, name, offset, PULL_CHUNK_BYTES))

        try:
            first = await peer.wait_reply(ask(0))
            assert isinstance(first, ObjectChunk)
            if not first.ok:
                raise loads_error(first.data)
            tmp = store.path(f".{name}.pull-{id(first):x}")
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            try:
                os.pwrite(fd, first.data.buffers[0], 0)
                offsets = list(range(PULL_CHUNK_BYTES, first.total, PULL_CHUNK_BYTES))
                asked = [(o, ask(o)) for o in offsets[:PULL_WINDOW]]
                following = offsets[PULL_WINDOW:]
                while asked:
                    offset, reply = asked.pop(0)
                    if following:
                        asked.append((following[0], ask(following.pop(0))))
                    chunk = await peer.wait_reply(reply)
                    assert isinstance(chunk, ObjectChunk)
                    if not chunk.ok:
                        raise loads_error(chunk.data)
                    os.pwrite(fd, chunk.data.buffers[0], offset)
            finally:
                os.close(fd)
        except PeerClosedError as exc:
            raise owner_lost_error_for(locator, exc) from exc
        os.rename(tmp, store.path(name))
        store.tell(f"C {name} {first.total} 0 0")

    def _on_pull(self, peer: Peer, msg: PullObject) -> None:
        store = segments.client()
        whole = None if store is None else store.map_file(msg.name)
        if whole is None:
            lost = lost_here(msg.name, self.address)
            peer.send(ObjectChunk(msg.rid, False, 0, system_error(lost)))
            return
        piece = whole[msg.offset : msg.offset + msg.length]
        peer.send(ObjectChunk(msg.rid, True, whole.nbytes, Payload(b"", (piece,))))

    def _on_free_objects(self, peer: Peer, msg: FreeObjects) -> None:
        store = segments.client()
        if store is not None:
            for name in msg.names:
                store.tell(f"F {name}")

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

    def _wait_blocking(self, event: threading.Event, timeout: float | None) -> bool:
        """A user thread's blocking wait: lends its task's CPUs meanwhile; a driver's
        Ctrl-C here cancels all of its remote work before the KeyboardInterrupt goes on."""
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


def lost_here(name: str, address: str) -> ObjectLostError:
    return ObjectLostError(
        f"object {name[:12]} is no longer in the object store of the node of {address}: it "
        "was freed (its owner dropped its last reference) or that node restarted"
    )


def owner_lost_error_for(locator: Locator, why: object) -> ObjectLostError:
    return ObjectLostError(
        f"object {locator.name[:12]} ({locator.size} bytes) was held in the object store of "
        f"node {locator.node[:12]}, which cannot be reached any more ({why}): the node died. "
        "A task's result is made again when its owner still has the task; otherwise put it "
        "again"
    )
