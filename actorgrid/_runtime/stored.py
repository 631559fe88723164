"""The runtime's side of the node object stores: pulling values held on other nodes, freeing
them there, and re-running the task that made a value whose node died (lineage).

- A value held on another node is pulled straight from a process of that node (the one that
  wrote it: the locator names it) into this node's store as a cached copy (or into memory,
  for a process without a store: a driver that joined from elsewhere). Never through the
  owner nor the driver. One of ``BULK_MIN_BYTES`` or more comes on a connection of its own,
  authenticated like any other, its pieces received straight into the mapped segment
  (``_transport/bulk.py``): the kernel's copy out of the socket (with TLS: the decryption)
  is the only one. Smaller values come on the link to the holder in ``PULL_CHUNK_BYTES`` pieces with ``PULL_WINDOW`` asked
  ahead, each written into the segment by a thread.
- The holder tells each process that pulled a copy when the value is freed, and forgets a
  puller whose link closed; a free that overtakes its pull frees the copy once it is made
  (``_scheduler/pulls.py``).
- Async code (an ``async def`` task, an async actor method, a Trio-native driver) loads
  values on the loop, which cannot wait for a pull while it unpickles: ``localize`` pulls
  what an async task's arguments and an awaited ref locate before they are loaded.
- Lineage: the owner of a task's result keeps the task (its ``TaskSpec``: function, argument
  payload, placement) for as long as it keeps the result, when the task may be retried
  (``max_retries`` not 0; actor calls never). When the holder of the value is gone, a reader
  on the owner's side re-runs it (``rebuild``) and reads the new value; a borrower asks the
  owner to (``FetchObject.lost``). Without lineage the read raises ObjectLostError naming the
  object and its node.

Costs: nothing per small value; per large result, two dict entries on its owner until freed.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from .._exceptions import ActorgridError, ObjectLostError, ProtocolError
from .._protocol.codec import decode, encode
from .._protocol.messages import Payload, Pulse
from .._protocol.store import ChunkHead, FreeObjects, ObjectChunk, PullObject, chunk_head
from .._scheduler.pulls import Pullers, PullsUnderWay
from .._transport.bulk import BulkReceiver
from .._transport.tcp import TcpFrameStream
from .._transport.tls import TlsFrameStream
from . import segments
from .links import RuntimeLinks
from .peer import Peer, PeerClosedError
from .records import TaskSpec
from .refs import FAILED, PENDING, ObjectEntry
from .segments import Locator, StoreClient, describe
from .serialization import loads_error, system_error

__all__ = [
    "BULK_MIN_BYTES",
    "PULL_CHUNK_BYTES",
    "PULL_WINDOW",
    "RuntimeStored",
    "holder_lost_error",
]

PULL_CHUNK_BYTES = 8 << 20  # a pull asks for the object in pieces of this size
PULL_WINDOW = 4  # pieces asked for ahead of the one being written
# Values at least this large are pulled on a bulk connection of their own, straight into
# this node's store (without TLS); smaller ones on the link to their holder.
BULK_MIN_BYTES = 1 << 20
BULK_PIECE_BYTES = 64 << 20  # pieces of a bulk pull, all asked for at once
_PROBE_BYTES = 64 << 10  # a bulk pull's first piece, which tells the file's size

Sink = Callable[[int, memoryview, int], Awaitable[None]]  # (offset, bytes, file size)
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux: the pages mapped in one go, not faulted


class RuntimeStored(RuntimeLinks):
    """Pulls, frees and rebuilds of values held in node stores."""

    new_entry: Callable[..., ObjectEntry]  # objects.RuntimeObjects
    run_again: Callable[[ObjectEntry, TaskSpec], None]  # tasks.RuntimeTasks

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pulls: dict[str, trio.Event] = {}  # pulls and rebuilds under way, by name
        self.lineage: dict[str, TaskSpec] = {}  # result name -> the task that made it
        self.rebuilt: dict[str, Payload] = {}  # lost result name -> its new locator payload
        # Without a store: values pulled into memory by localize, until loaded (count of
        # loads to come).
        self._in_memory: dict[str, list[Any]] = {}
        # Values this process holds that other nodes pulled, by the links of the processes
        # that pulled them (each keeps a cached copy in its node's store until told the
        # value was freed); and this process's own pulls, which a free may overtake.
        self._pullers: Pullers[Peer] = Pullers()
        self._under_way = PullsUnderWay()

    def join_store(self, config: dict[str, Any] | None) -> None:
        """Use this node's object store (None: this process has none; values it makes stay
        inline, values it reads from stores are pulled into memory)."""
        segments.set_reader(self._read_remote)
        if config is None:
            segments.configure(None)
            return
        store = StoreClient(config, self.address)
        store.pull_sync = self._pull_sync
        store.free_remote = self._free_remote
        segments.configure(store)

    def leave_store(self) -> None:
        store = segments.client()
        if store is not None and store.address == self.address:
            segments.configure(None)
        segments.set_reader(None)

    def _store_handlers(self) -> dict[type, Callable[[Peer, Any], Any]]:
        return {PullObject: self._on_pull, FreeObjects: self._on_free_objects}

    # --- owned results ---------------------------------------------------------------------

    def adopt_result(self, payload: Payload, spec: TaskSpec | None) -> None:
        """Loop: the owner received a task's result: a value held in a store is freed when
        the owner's last copy of it goes, and its task is kept for a rebuild meanwhile."""
        locator = segments.locator_of(payload)
        if locator is None:
            return
        if spec is not None and spec.actor is None and spec.retries != 0:
            self.lineage[locator.name] = spec
        finalizer = weakref.finalize(payload, self._forget, locator)
        finalizer.atexit = False

    def _forget(self, locator: Locator) -> None:
        """Any thread: the owner's last copy of a stored result went."""
        self.lineage.pop(locator.name, None)
        self.rebuilt.pop(locator.name, None)  # its own finalizer frees the new copy
        store = segments.client()
        if store is not None:
            store.free(locator)
        else:
            self._free_remote(locator)

    # --- reading ---------------------------------------------------------------------------

    def _pull_sync(self, locator: Locator) -> str:
        """Any thread but the loop: the name under which this node's store holds the value
        (pulled, or rebuilt, first)."""
        self._not_on_loop(locator)
        name: str = self.portal.run(self.pull, locator)
        return name

    def _read_remote(self, locator: Locator) -> Payload:
        """Any thread but the loop, in a process without a store: the value, in memory (on
        the loop: the one ``localize`` pulled)."""
        if self.portal.in_loop_thread():
            kept = self._take_in_memory(locator.name)
            if kept is not None:
                return kept
        self._not_on_loop(locator)
        payload: Payload = self.portal.run(self._pull_to_memory, locator)
        return payload

    def _not_on_loop(self, locator: Locator) -> None:
        if self.portal.in_loop_thread():
            raise RuntimeError(
                f"{locator} is held on another node and must be pulled first, which the "
                "runtime's own thread cannot wait for; await the ref (or ag.get_async) instead"
            )

    def _current(self, locator: Locator) -> Locator:
        """The locator to read for ``locator``: its rebuilt value's, if it was rebuilt."""
        again = self.rebuilt.get(locator.name)
        return locator if again is None else segments.locator_of_checked(again)

    def localize(self, payloads: Iterable[Payload | None]) -> Awaitable[None] | None:
        """Loop: None if ``payloads`` are all readable here now; else an awaitable that makes
        the stored values they locate readable here without a wait (pulled into this node's
        store, or into memory for a process without one), so that loading them on the loop
        (an async task's arguments, ``await ref``) needs no pull, which the loop cannot wait
        for while it unpickles. One prefix comparison for an inline value. In a process
        without a store, each value pulled is kept until loaded once (``_read_remote``), so
        await it right before loading them."""
        is_stored = segments.is_stored
        stored = [p for p in payloads if p is not None and is_stored(p)]
        if not stored:
            return None
        locators = [segments.locator_of_checked(p) for p in stored]
        store = segments.client()
        if store is not None:
            locators = [loc for loc in locators if loc.node != store.node]
            if not locators:
                return None
        return self._localize(store, locators)

    async def _localize(self, store: StoreClient | None, locators: list[Locator]) -> None:
        held: list[str] = []
        try:
            for locator in locators:
                if store is not None:
                    await self.pull(locator)
                    continue
                kept = self._in_memory.get(locator.name)
                if kept is None:
                    pulled = await self._pull_to_memory(locator)
                    kept = self._in_memory.setdefault(locator.name, [pulled, 0])
                kept[1] += 1
                held.append(locator.name)
        except BaseException:
            for name in held:
                self._take_in_memory(name)
            raise

    def _take_in_memory(self, name: str) -> Payload | None:
        kept = self._in_memory.get(name)
        if kept is None:
            return None
        kept[1] -= 1
        if kept[1] <= 0:
            del self._in_memory[name]
        payload: Payload = kept[0]
        return payload

    async def pull(self, locator: Locator) -> str:
        """Loop: copy a value held on another node into this node's store, once however many
        readers ask at the same time; the name it has here (a rebuilt value's, when the owner
        re-ran its task). ObjectLostError if it cannot be had."""
        store = segments.client()
        assert store is not None
        current = self._current(locator)
        if current.node == store.node or os.path.exists(store.path(current.name)):
            return current.name
        running = self._pulls.get(current.name)
        if running is not None:
            await running.wait()
            return await self.pull(locator)
        done = self._pulls[current.name] = trio.Event()
        self._under_way.started(current.name)
        try:
            if current.size >= BULK_MIN_BYTES:
                await self._pull_bulk(store, current)
            else:
                await self._pull_file(store, current)
        except ObjectLostError:
            if locator.name not in self.lineage:
                raise
            await self.rebuild(locator, current.name)
            return await self.pull(locator)
        finally:
            if self._under_way.finished(current.name):
                store.tell(f"F {current.name}")  # freed while pulled: the copy goes now
            del self._pulls[current.name]
            done.set()
        return current.name

    async def _pull_bulk(self, store: StoreClient, locator: Locator) -> None:
        """Pull on a connection of its own, each piece received straight into the mapped
        segment of this node's store: the copy the kernel makes out of the socket is the
        only one (``_transport/bulk.py``)."""
        try:
            stream = await self._open_stream(locator.holder)
        except (OSError, TimeoutError, ActorgridError) as exc:
            raise holder_lost_error(locator, exc) from exc
        if not isinstance(stream, (TcpFrameStream, TlsFrameStream)):  # the link's way
            with trio.CancelScope(shield=True):
                await stream.aclose()
            await self._pull_file(store, locator)
            return
        bulk = BulkReceiver(stream, idle_s=self.monitor.timeout_s)
        name = locator.name
        tmp = store.path(f".{name}.pull-{os.getpid()}-{id(locator):x}")
        fd, claimed, segment = -1, "", None
        try:
            piece = min(BULK_PIECE_BYTES, self.max_message_bytes // 2)
            await bulk.send(
                [encode(self.hello), encode(PullObject(0, name, 0, _PROBE_BYTES, True))]
            )
            first = await self._bulk_next(bulk, locator)
            if first.rid != 0 or first.length > _PROBE_BYTES:
                raise ProtocolError(f"{locator.holder} answered the probe of a pull wrongly")
            probe = bytearray(first.length)
            await bulk.receive_into(memoryview(probe))
            total = first.total
            fd, claimed = store.open_segment(tmp, total)
            os.ftruncate(fd, total)  # a fresh file is empty until written
            segment = mmap.mmap(fd, total, flags=mmap.MAP_SHARED | _POPULATE)
            segment[: first.length] = probe[: first.length]
            offsets: dict[int, int] = {}
            asks = []
            for rid, at in enumerate(range(first.length, total, piece), start=1):
                offsets[rid] = at
                asks.append(encode(PullObject(rid, name, at, piece, True)))
            if asks:
                await bulk.send(asks)
            view = memoryview(segment)
            try:
                for _ in range(len(asks)):
                    head = await self._bulk_next(bulk, locator)
                    offset = offsets.pop(head.rid, -1)
                    if offset < 0 or head.total != total or offset + head.length > total:
                        raise ProtocolError(f"{locator.holder} sent a piece that was not asked for")
                    await bulk.receive_into(view[offset : offset + head.length])
            finally:
                view.release()
        except BaseException:
            if segment is not None:
                with contextlib.suppress(BufferError):  # a view in a traceback: GC closes it
                    segment.close()
            if fd >= 0:
                os.close(fd)
                os.unlink(tmp)
            with trio.CancelScope(shield=True):
                await bulk.aclose()
            raise
        segment.close()
        os.close(fd)
        with trio.CancelScope(shield=True):
            await bulk.aclose()
        os.rename(tmp, store.path(name))
        store.tell(f"C {name} {total} 0 0 {claimed}".rstrip())

    async def _bulk_next(self, bulk: BulkReceiver, locator: Locator) -> ChunkHead:
        """The head of the next piece of a bulk pull, its bytes not read yet; other frames
        (Hello, Pulse) are handled on the way, a lost value raised."""
        while True:
            try:
                start, rest = await bulk.receive_head()
            except (trio.BrokenResourceError, ProtocolError) as exc:
                raise holder_lost_error(locator, exc) from exc
            if rest == 0:
                message = decode(start)
                if isinstance(message, Pulse):
                    await bulk.send([encode(message)])  # heard by the holder's monitor
                elif isinstance(message, ObjectChunk) and not message.ok:
                    raise loads_error(message.data)
                continue
            head = chunk_head(memoryview(start)[4:])
            if head is None or not head.ok:
                raise ProtocolError(f"{locator.holder} sent an unexpected frame on a bulk pull")
            return head

    async def _pull_file(self, store: StoreClient, locator: Locator) -> None:
        """Pull into a segment of this node's store (a recycled one when its pool has one
        of the size class), written by a thread while the loop receives the next pieces."""
        name = locator.name
        tmp = store.path(f".{name}.pull-{os.getpid()}-{id(locator):x}")
        fd, claimed, total = -1, "", 0

        async def write(offset: int, data: memoryview, size: int) -> None:
            nonlocal fd, claimed, total
            if fd < 0:
                total = size
                fd, claimed = store.open_segment(tmp, size)
            await trio.to_thread.run_sync(_pwrite_all, fd, data, offset)

        try:
            await self._pull_chunks(locator, write)
        except BaseException:
            if fd >= 0:
                os.close(fd)
                os.unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, store.path(name))
        store.tell(f"C {name} {total} 0 0 {claimed}".rstrip())

    async def _pull_to_memory(self, locator: Locator) -> Payload:
        current = self._current(locator)
        buffer = bytearray()

        async def keep(offset: int, data: memoryview, size: int) -> None:
            nonlocal buffer
            if len(buffer) != size:
                buffer = bytearray(size)  # once, at the first piece: no temporary copy
            buffer[offset : offset + data.nbytes] = data

        try:
            await self._pull_chunks(current, keep)
        except ObjectLostError:
            if locator.name not in self.lineage:
                raise
            await self.rebuild(locator, current.name)
            return await self._pull_to_memory(locator)
        return segments.parse(memoryview(buffer))

    async def _pull_chunks(self, locator: Locator, sink: Sink) -> None:
        peer = self.peer_for(locator.holder)
        name = locator.name

        piece = min(PULL_CHUNK_BYTES, self.max_message_bytes // 2)  # frames stay under the cap

        def ask(offset: int) -> Any:
            return peer.request_nowait(lambda rid: PullObject(rid, name, offset, piece))

        try:
            first = await peer.wait_reply(ask(0))
            assert isinstance(first, ObjectChunk)
            if not first.ok:
                raise loads_error(first.data)
            await sink(0, first.data.buffers[0], first.total)
            offsets = list(range(piece, first.total, piece))
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
                await sink(offset, chunk.data.buffers[0], first.total)
        except PeerClosedError as exc:
            raise holder_lost_error(locator, exc) from exc

    # --- lineage ---------------------------------------------------------------------------

    async def rebuild(self, locator: Locator, lost: str) -> Payload:
        """Loop, owner: re-run the task that made ``locator``'s value, whose copy named
        ``lost`` (its own, or an earlier rebuild's) cannot be had; the new value's locator
        payload, kept until the original is freed. ObjectLostError without lineage."""
        again = self.rebuilt.get(locator.name)
        if again is not None and segments.locator_of_checked(again).name != lost:
            return again  # rebuilt meanwhile, for another reader
        spec = self.lineage.get(locator.name)
        if spec is None:
            raise holder_lost_error(locator, "and the task that made it cannot run again")
        running = self._pulls.get("rebuild:" + locator.name)
        if running is not None:
            await running.wait()
            return await self.rebuild(locator, lost)
        done = self._pulls["rebuild:" + locator.name] = trio.Event()
        try:
            entry = self.new_entry()
            self.run_again(entry, spec)
            finished = trio.Event()
            if entry.add_waiter(finished):
                await finished.wait()
        finally:
            del self._pulls["rebuild:" + locator.name]
            done.set()
        if entry.state == FAILED:
            raise ObjectLostError(
                f"object {describe(locator.name)} was lost with node {locator.node[:12]}, and "
                f"re-running the task that made it failed: {entry.error!r}",
                _object_id(locator.name),
            )
        assert entry.state != PENDING and entry.payload is not None
        self.rebuilt[locator.name] = entry.payload
        return entry.payload

    # --- serving other nodes ---------------------------------------------------------------

    def _free_remote(self, locator: Locator) -> None:
        """Any thread: tell the value's holder that its owner let go of it."""
        try:
            self.portal.call_soon(self._send_free, locator)
        except Exception:
            # This runtime has stopped: its node frees what it holds when it stops.
            store = segments.client()
            if store is not None and locator.node == store.node:
                store.tell(f"F {locator.name}")

    def _send_free(self, locator: Locator) -> None:
        if locator.holder == self.address:
            self._free_held((locator.name,))
            return
        peer = self.peers.get(locator.holder)
        if peer is not None and not peer.closed:
            peer.send(FreeObjects((locator.name,)))
            return
        store = segments.client()  # its holder is gone: the node frees what is left here
        if store is not None and locator.node == store.node:
            store.tell(f"F {locator.name}")

    def _free_held(self, names: Iterable[str]) -> None:
        """Loop: free values of this node's store, and the copies other nodes pulled of
        those this process holds (each puller frees its node's cached copy)."""
        store = segments.client()
        if store is None:
            return
        for name in names:
            store.tell(f"F {name}")
            store.pulled.discard(name)
            self._under_way.freed(name)  # a copy pulled now: freed once it is made
            for peer in self._pullers.freed(name):
                if not peer.closed:
                    peer.send(FreeObjects((name,)))

    def _puller_gone(self, peer: Peer) -> None:
        """Loop: a link of a process that pulled values of this one closed."""
        store = segments.client()
        for name in self._pullers.gone(peer):
            if store is not None:
                store.pulled.discard(name)

    def _on_pull(self, peer: Peer, msg: PullObject) -> None:
        store = segments.client()
        whole = None if store is None else store.map_file(msg.name)
        if whole is None:
            lost = ObjectLostError(
                f"object {describe(msg.name)} is no longer in the object store of the node of "
                f"{self.address}: it was freed, or that node restarted"
            )
            peer.send(ObjectChunk(msg.rid, False, 0, system_error(lost)))
            return
        if msg.offset == 0 and store is not None:  # a copy on the puller's node, to free
            link = peer
            if msg.bulk and peer.remote_hello is not None and peer.remote_hello.address:
                link = self.peer_for(peer.remote_hello.address)  # the bulk one closes soon
            if self._pullers.pulled(msg.name, link):
                link.on_closed.append(self._puller_gone)
            store.pulled.add(msg.name)
        piece = whole[msg.offset : msg.offset + msg.length]
        peer.send(ObjectChunk(msg.rid, True, whole.nbytes, Payload(b"", (piece,))))

    def _on_free_objects(self, peer: Peer, msg: FreeObjects) -> None:
        self._free_held(msg.names)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data.nbytes:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def holder_lost_error(locator: Locator, why: object) -> ObjectLostError:
    return ObjectLostError(
        f"object {describe(locator.name)} ({locator.size} bytes) was held in the object store of "
        f"node {locator.node[:12]} by {locator.holder}, which cannot be reached any more "
        f"({why}): that node died. A task's result is made again if it may be retried "
        "(max_retries) while its owner keeps the ref; put values again",
        _object_id(locator.name),
    )


def _object_id(name: str) -> bytes:
    try:
        return bytes.fromhex(name.split(".", 1)[0])
    except ValueError:
        return b""
