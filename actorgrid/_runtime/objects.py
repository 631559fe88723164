"""Objects this process owns or borrows: put, fetch, get and wait."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

from .._exceptions import NotInitializedError, ObjectLostError
from .._protocol.ids import new_object_id, short
from .._protocol.messages import ActorInfo, FetchObject, ObjectValue, Payload
from . import getting, segments
from .blocking import blocking_section
from .blocking import local as blocking_local
from .peer import Peer, PeerClosedError
from .refcounting import freed_error, owner_lost_error
from .refs import PENDING, ObjectEntry, ObjectRef
from .serialization import dumps, system_error
from .stored import RuntimeStored


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


class RuntimeObjects(RuntimeStored):
    """Owned and borrowed objects."""

    def new_entry(self, actor: ActorInfo | None = None) -> ObjectEntry:
        """Any thread: a pending object owned by this process."""
        entry = ObjectEntry(new_object_id(), self.address, actor)
        self.objects[entry.object_id] = entry
        return entry

    def put(self, value: Any) -> ObjectRef[Any]:
        entry = self.new_entry()
        payload = segments.place(dumps(value), owned=True, object_id=entry.object_id)
        if payload.nbytes > self.max_message_bytes:
            raise ValueError(
                f"ag.put() got a value that serializes to {payload.nbytes} bytes, over "
                f"max_message_bytes={self.max_message_bytes}, so no other process could ever "
                "fetch it; raise max_message_bytes (ag.init(), or `actorgrid up "
                "--max-message-bytes` for a cluster the CLI started) or pass the data another "
                "way (e.g. a file path)"
            )
        entry.set_value(payload)
        return ObjectRef._make(entry)

    def _ensure_fetch(self, entry: ObjectEntry) -> None:
        """Loop: start fetching a borrowed object from its owner, once."""
        if entry.state != PENDING or entry.fetching or entry.owner == self.address:
            return
        entry.fetching = True
        self.nursery.start_soon(self._fetch, entry)

    async def _fetch(self, entry: ObjectEntry) -> None:
        """Loop: the value of a borrowed ref, from its owner; one held in another node's
        store is pulled from there (and, if that node died, the owner is asked to make it
        again once)."""
        peer = self.peer_for(entry.owner)
        lost = ""
        while True:
            ask = functools.partial(FetchObject, object_id=entry.object_id, lost=lost)
            try:
                reply = await peer.request(ask)
            except PeerClosedError as exc:
                entry.set_error(owner_lost_error(entry.object_id, entry.owner, exc))
                return
            assert isinstance(reply, ObjectValue)
            if not reply.ok:
                entry.set_error(reply.value)
                return
            locator = segments.locator_of(reply.value)
            store = segments.client()
            try:
                if locator is not None and store is not None and locator.node != store.node:
                    await self.pull(locator)
            except ObjectLostError as exc:
                if lost or locator is None:
                    entry.set_error(exc)
                    return
                lost = locator.name  # ask the owner once to make it again
                continue
            except Exception as exc:
                entry.set_error(exc)
                return
            entry.set_value(reply.value)
            return

    def _on_fetch(self, peer: Peer, msg: FetchObject) -> None:
        entry = self.objects.get(msg.object_id) or self.refs.revive(msg.object_id)
        if entry is None:
            error = freed_error(msg.object_id, self.address)
            peer.send(ObjectValue(msg.rid, False, system_error(error)))
        elif entry.state == PENDING:
            self._ensure_fetch(entry)
            entry.add_waiter(_SendWhenReady(peer, msg.rid, entry, self.max_message_bytes))
        elif msg.lost:
            self.nursery.start_soon(self._answer_rebuilt, peer, msg)
        else:
            peer.send(_object_value(msg.rid, entry, self.max_message_bytes))

    async def _answer_rebuilt(self, peer: Peer, msg: FetchObject) -> None:
        """A borrower could not pull a value from its node: make it again (lineage)."""
        entry = self.objects.get(msg.object_id)
        payload = None if entry is None else entry.payload
        locator = None if payload is None else segments.locator_of(payload)
        if locator is None:
            error = freed_error(msg.object_id, self.address)
            peer.send(ObjectValue(msg.rid, False, system_error(error)))
            return
        try:
            payload = await self.rebuild(locator, msg.lost)
        except Exception as exc:
            peer.send(ObjectValue(msg.rid, False, system_error(exc)))
            return
        peer.send(ObjectValue(msg.rid, True, payload))

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
            if getattr(blocking_local, "hold", None) is None:  # not a task's thread: no CPUs
                return event.wait(timeout)
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
