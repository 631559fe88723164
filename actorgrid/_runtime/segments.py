"""This process's side of its node's object store: write large values into shared memory,
map them back without a copy.

A value whose serialized size reaches the node's threshold (``INLINE_BYTES`` by default) is
written once into a file of the node's store folder (``/dev/shm/actorgrid-<node>/``, see
``_node/objectstore.py``, which owns the folder and tells each process where it is), and
travels as a *locator*: a tiny pickle that, loaded, maps the file and unpickles the value with
its pickle protocol 5 buffers as read-only views of the mapping. A numpy array read on the
same node therefore shares the pages of the store: no copy in the reader's process.

The node agent keeps the accounts (``_scheduler/store.py``): each process tells it what it
wrote (``C``), read (``R``) and freed (``F``) in one line on its connection to the store's
socket; it spills, evicts and deletes. A file that is unlinked while a reader has it mapped
stays readable by that reader, so no reader needs to pin anything.

Copies: a value's pickle protocol 5 buffers (numpy arrays; large ``bytes`` and ``bytearray``
too, see ``serialization._OutOfBand``) are written straight from the value into the file, the
one copy of a write. A large ``bytes`` value is read without a copy either: its buffer sits
where a new bytes object of its length has its data (modulo a page), and the reader maps the
file's pages there (``serialization.load_bytes``); it stays a real ``bytes``. A freed file goes to the node's free pool (``_scheduler/recycling.py``)
and the next writer of its size class writes into its existing pages (no page allocation,
zeroing or freeing). A reader holds a shared ``flock`` on the file for as long as its mapping
lives (the lock goes with the mapping, not the descriptor), and a writer reuses a pooled file
only if it gets the exclusive lock at once; the header carries the object's tag, so a reader
that opened a file just before it was recycled sees that its object was freed.

Lifetimes: the locator of an owned value (``ag.put``, a call's arguments, a task's result
once its owner has it) carries a ``weakref.finalize`` that frees the object when the owner's
last copy of the locator goes, that is when reference counting lets go of its entry.

A process without a store (a driver that joined a cluster from elsewhere) keeps every value
inline, as before.
"""

from __future__ import annotations

import fcntl
import io
import logging
import mmap
import os
import pickle
import socket
import struct
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .._exceptions import ObjectLostError
from .._protocol.ids import new_object_id
from .._protocol.records import Payload
from .._scheduler.recycling import POOL_MIN_BYTES, size_class

__all__ = [
    "INLINE_BYTES",
    "Locator",
    "StoreClient",
    "locator_of",
    "open_stored",
    "place",
]

log = logging.getLogger("actorgrid.store")

INLINE_BYTES = 100 * 1024  # values smaller than this travel inline (Ray's 100 KB)

_MAGIC = b"AGOBJ001"
# magic, buffer count, the object's tag (its name's suffix), length of the pickle data
_HEAD = struct.Struct("<8sIIQ")
_SPAN = struct.Struct("<QQ")  # one out-of-band buffer: offset, length
_ALIGN = 64  # buffers start on a cache line (numpy and SIMD code like aligned data)
_WRITE_CHUNK = 1 << 30  # writev moves at most ~2 GiB per call
# A large ``bytes`` buffer starts in its file where a new bytes object of its length has its
# data, modulo a page: past the allocator's chunk header (glibc's two size_t) and the object's
# own header. A reader then maps the file's pages into that object (``serialization.
# load_bytes``) instead of copying them; a mismatch only costs that copy.
SHARE_MIN_BYTES = 4 << 20
BYTES_PAGE_OFFSET = (2 * struct.calcsize("N") + bytes.__basicsize__ - 1) % mmap.PAGESIZE
# id of a large buffer view of a mapped object file -> (a descriptor of the file, the
# buffer's offset in it), while the view lives (``shared_source``).
_sources: dict[int, tuple[int, int]] = {}


class Locator:
    """Where a stored value is: its node, its file's name, a process there that serves it."""

    __slots__ = ("holder", "name", "node", "size")

    def __init__(self, node: str, name: str, holder: str, size: int) -> None:
        self.node, self.name, self.holder, self.size = node, name, holder, size

    def __reduce__(self) -> tuple[Any, ...]:
        return open_stored, (self.node, self.name, self.holder, self.size)

    def __repr__(self) -> str:
        return f"<Locator {self.name[:12]} on node {self.node[:12]} ({self.size} bytes)>"


# Locators are pickled with protocol 2, which has no frame header, so every one starts with
# these bytes: telling a locator from a value costs one prefix comparison.
_PREFIX = b"\x80\x02cactorgrid._runtime.segments\nopen_stored\n"


def is_stored(payload: Payload) -> bool:
    """Whether a payload is the locator of a value in a node's store (not an inline value)."""
    return not payload.buffers and payload.data.startswith(_PREFIX)


def locator_of(payload: Payload) -> Locator | None:
    """The locator a payload is, or None for an inline value."""
    if payload.buffers or not payload.data.startswith(_PREFIX):
        return None
    locator = _LocatorReader(io.BytesIO(payload.data)).load()
    assert isinstance(locator, Locator)
    return locator


class _LocatorReader(pickle.Unpickler):
    """Reads a locator without opening what it locates."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == (__name__, "open_stored"):
            return Locator
        raise pickle.UnpicklingError(f"not a locator: it refers to {module}.{name}")


class StoreClient:
    """The node store as seen from one process; set with :func:`configure`."""

    def __init__(self, config: dict[str, Any], address: str = "") -> None:
        self.node = str(config["node"])
        self.folder = str(config["folder"])
        self.spill_folder = str(config["spill_folder"])
        self.pool_folder = str(config.get("pool_folder", ""))  # recycled segments (if any)
        self.threshold = int(config.get("threshold", INLINE_BYTES))
        # Where this process serves pulls of the values it wrote. A stored value of any size
        # is pulled in pieces under max_message_bytes, so that cap bounds only inline values.
        self.address = address
        self._socket_path = os.path.join(self.folder, ".accounts")
        self._sock: socket.socket | None = None  # connected on the first line
        self._closed = False  # closed: lines told later (a late free) are dropped
        self._lock = threading.Lock()
        # Set by the runtime: pull a value held on another node into this node's store (or
        # have its owner make it again); the name it has here.
        self.pull_sync: Callable[[Locator], str] | None = None
        # Set by the runtime: free a value through its holder (a process of this node or of
        # another), which has the nodes that pulled a copy free theirs too.
        self.free_remote: Callable[[Locator], None] | None = None
        # Names of values this process holds that another node pulled (set by the runtime on
        # its loop; read by ``free`` from any thread).
        self.pulled: set[str] = set()

    def __repr__(self) -> str:
        return f"<StoreClient node={self.node[:12]} folder={self.folder}>"

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def tell(self, line: str) -> None:
        """Any thread: one account line to the node agent, on this process's connection
        to it (the kernel buffers a burst of thousands). An agent that is gone loses it:
        then its node is stopping, and its folder goes with it."""
        data = (line + "\n").encode()
        with self._lock:
            if self._closed:
                return
            for _ in range(2):  # a broken connection is made again once
                try:
                    if self._sock is None:
                        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        sock.settimeout(5.0)
                        sock.connect(self._socket_path)
                        self._sock = sock
                    self._sock.sendall(data)
                    return
                except OSError as exc:
                    if self._sock is not None:
                        self._sock.close()
                        self._sock = None
                    error = exc
            log.debug("could not tell the node store %r: %s", line, error)

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def spilled_path(self, name: str) -> str:
        return os.path.join(self.spill_folder, name)

    def write(self, name: str, payload: Payload, *, owned: bool) -> None:
        """Write ``payload`` as object ``name`` (atomically: readers see all or nothing).
        ``owned``: by this process, so the node frees it if this process dies. The bytes
        are copied once, from the value's own buffers into the segment."""
        parts, size = _layout(payload, _tag(name))
        tmp = self.path(f".{name}.tmp")
        fd, claimed = self.open_segment(tmp, size)
        try:
            _write_all(fd, parts)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, self.path(name))
        self.tell(f"C {name} {size} 1 {os.getpid() if owned else 0} {claimed}".rstrip())

    def open_segment(self, tmp: str, size: int) -> tuple[int, str]:
        """A new file ``tmp`` of ``size`` bytes open for writing at offset 0: a recycled
        segment of the node's pool when one of its size class is free (its pages exist, so
        writing costs the copy alone), else a fresh one. Also the pool file's name ("" for a
        fresh file), which the writer tells the node agent with the object's creation."""
        if size >= POOL_MIN_BYTES and self.pool_folder:
            prefix = f"{size_class(size)}-"
            try:
                pooled = [n for n in os.listdir(self.pool_folder) if n.startswith(prefix)]
            except OSError:
                pooled = []
            for name in pooled:
                try:
                    os.rename(os.path.join(self.pool_folder, name), tmp)
                except OSError:
                    continue  # another writer took it, or the agent removed it
                fd = os.open(tmp, os.O_RDWR)  # read too: a pull maps it
                try:
                    # Readers of the object it held hold a shared lock while they map it.
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    os.unlink(tmp)  # the reader keeps its pages; the pool loses this file
                    self.tell(f"X {name}")
                    continue
                os.ftruncate(fd, size)
                return fd, name
        return os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600), ""

    def map(self, name: str) -> Payload | None:
        """The stored payload, its data and buffers views of a read-only mapping; None if
        this node has no copy (never had, evicted, or freed). Its large buffers are
        registered with the file they map (``shared_source``)."""
        mapped = self._map(name)
        if mapped is None:
            return None
        view, fd = mapped
        payload = _parse(view, _tag(name))
        shared = False
        for i, buffer in enumerate(() if payload is None else payload.buffers):
            if buffer.nbytes >= SHARE_MIN_BYTES:
                offset = _SPAN.unpack_from(view, _HEAD.size + _SPAN.size * i)[0]
                _sources[id(buffer)] = (fd, offset)
                weakref.finalize(buffer, _sources.pop, id(buffer), None).atexit = False
                shared = True
        if shared:  # the views keep the mapping alive, and it the descriptor
            weakref.finalize(view.obj, os.close, fd).atexit = False
        else:
            os.close(fd)
        return payload

    def map_file(self, name: str) -> memoryview | None:
        """The whole file of object ``name``, mapped read-only; None if this node has none.
        The mapping holds a shared lock on the file until it is unmapped, so the file is
        not recycled for another object meanwhile (``_scheduler/recycling.py``)."""
        mapped = self._map(name)
        if mapped is None:
            return None
        os.close(mapped[1])
        return mapped[0]

    def _map(self, name: str) -> tuple[memoryview, int] | None:
        """``map_file``'s mapping, and a descriptor of its file that the caller closes."""
        for path in (self.path(name), self.spilled_path(name)):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return None  # a writer claimed it for another object: this one was freed
            try:
                mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
            except BaseException:
                os.close(fd)
                raise
            self.tell(f"R {name}")
            return memoryview(mm), fd  # the lock lives on with the mapping
        return None

    def free(self, locator: Locator) -> None:
        """Any thread: the owner's last copy of the locator went. Its holder frees it, and
        has the nodes that pulled a copy of it free theirs (``stored.py``); a value this
        process holds and no other node pulled is freed here at once."""
        local = locator.node == self.node
        if local and locator.holder == self.address and locator.name not in self.pulled:
            self.tell(f"F {locator.name}")
        elif self.free_remote is not None:
            self.free_remote(locator)
        elif local:
            self.tell(f"F {locator.name}")


_client: StoreClient | None = None
# Set by the runtime of a process without a store: a value held in a store, pulled into memory.
_reader: Callable[[Locator], Payload] | None = None


def set_reader(reader: Callable[[Locator], Payload] | None) -> None:
    global _reader
    _reader = reader


def describe(name: str) -> str:
    """An object's file name as the object's short id (``ObjectRef`` reprs use the same)."""
    head = name.split(".", 1)[0]
    return head[:6] + head[-6:] if len(head) >= 12 else head


def configure(client: StoreClient | None) -> None:
    """Set this process's store (None: values stay inline)."""
    global _client
    old, _client = _client, client
    if old is not None and old is not client:
        old.close()


def client() -> StoreClient | None:
    return _client


def place(payload: Payload, *, owned: bool, object_id: bytes | None = None) -> Payload:
    """``payload`` itself if it is small or this process has no store; else written into the
    store, and its locator. ``owned``: the returned locator frees the object when it goes
    (the caller is its owner); otherwise its receiver does (``RuntimeStored.adopt_result``)."""
    store = _client
    if store is None or payload.nbytes < store.threshold:
        return payload
    name = f"{(object_id or new_object_id()).hex()}.{os.urandom(4).hex()}"
    store.write(name, payload, owned=owned)
    locator = Locator(store.node, name, store.address, payload.nbytes)
    stored = Payload(pickle.dumps(locator, protocol=2))
    if owned:
        _free_when_gone(stored, store, locator)
    return stored


def _free_when_gone(payload: Payload, store: StoreClient, locator: Locator) -> None:
    finalizer = weakref.finalize(payload, store.free, locator)
    finalizer.atexit = False


def open_stored(node: str, name: str, holder: str, size: int) -> Any:
    """Unpickling a locator: the value, mapped from this node's store (pulled there first
    when it is held on another node)."""
    store = _client
    if store is None:
        if _reader is None:
            raise ObjectLostError(
                f"object {describe(name)} ({size} bytes) is held in the object store of node "
                f"{node[:12]}, and this process is not connected to its cluster any more; "
                "call ag.init() before loading it"
            )
        payload: Payload | None = _reader(Locator(node, name, holder, size))
    else:
        payload = store.map(name)
        if payload is None and node != store.node and store.pull_sync is not None:
            payload = store.map(store.pull_sync(Locator(node, name, holder, size)))
    if payload is None:
        raise ObjectLostError(
            f"object {describe(name)} ({size} bytes) is no longer in the object store of node "
            f"{node[:12]}: it was freed"
        )
    return pickle.loads(payload.data, buffers=payload.buffers)


def shared_source(buffer: object) -> tuple[int, int] | None:
    """For a large buffer of an object file this process mapped (``StoreClient.map``): a
    descriptor of the file, open while the buffer lives, and the buffer's offset in it."""
    return _sources.get(id(buffer))


def _tag(name: str) -> int:
    """The tag in the header of object ``name``'s file: its name's random suffix. A reader
    that finds another tag opened a file recycled for another object meanwhile."""
    suffix = name.rpartition(".")[2]
    try:
        return int(suffix, 16) & 0xFFFFFFFF
    except ValueError:
        return 0


def _layout(payload: Payload, tag: int = 0) -> tuple[list[memoryview | bytes], int]:
    """The parts of an object file, in order, and its size."""
    buffers = [b.cast("B") if b.format != "B" or b.ndim != 1 else b for b in payload.buffers]
    head = _HEAD.size + _SPAN.size * len(buffers)
    parts: list[memoryview | bytes] = [b"", memoryview(payload.data)]
    offset = head + len(payload.data)
    spans = []
    for b in buffers:
        if type(b.obj) is bytes and b.nbytes >= SHARE_MIN_BYTES:
            pad = (BYTES_PAGE_OFFSET - offset) % mmap.PAGESIZE
        else:
            pad = -offset % _ALIGN
        if pad:
            parts.append(bytes(pad))
            offset += pad
        spans.append(_SPAN.pack(offset, b.nbytes))
        parts.append(b)
        offset += b.nbytes
    parts[0] = _HEAD.pack(_MAGIC, len(buffers), tag, len(payload.data)) + b"".join(spans)
    return parts, offset


def _write_all(fd: int, parts: list[memoryview | bytes]) -> None:
    views = [memoryview(p) for p in parts if len(p)]
    while views:
        batch, total = [], 0
        for view in views[:512]:
            batch.append(view)
            total += view.nbytes
            if total >= _WRITE_CHUNK:
                break
        written = os.writev(fd, batch)
        while written and written >= views[0].nbytes:
            written -= views.pop(0).nbytes
        if written:
            views[0] = views[0][written:]


def locator_of_checked(payload: Payload) -> Locator:
    locator = locator_of(payload)
    if locator is None:
        raise ValueError("expected the locator of a stored value, got an inline value")
    return locator


def parse(view: memoryview) -> Payload:
    """The payload in an object file's bytes."""
    payload = _parse(view, None)
    assert payload is not None
    return payload


def _parse(view: memoryview, tag: int | None) -> Payload | None:
    """The payload in an object file's bytes; None if its tag is not ``tag`` (the file was
    recycled for another object: the one asked for was freed)."""
    magic, count, found, data_len = _HEAD.unpack_from(view, 0)
    if magic != _MAGIC:
        raise ObjectLostError("an object store file is damaged (bad header)")
    if tag is not None and tag != found:
        return None
    at = _HEAD.size + _SPAN.size * count
    buffers = []
    for i in range(count):
        offset, length = _SPAN.unpack_from(view, _HEAD.size + _SPAN.size * i)
        buffers.append(view[offset : offset + length])
    return Payload(view[at : at + data_len], tuple(buffers))  # type: ignore[arg-type]
