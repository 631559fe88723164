"""The node agent's object store: it owns the node's shared-memory folder and keeps its
accounts.

- Folder: ``/dev/shm/actorgrid-<pid>-<node>/`` (one file per object, written by the process
  that made the value, see ``_runtime/segments.py``), and a spill folder under the system's
  temporary folder. Both are the agent's: it removes them when it stops, and at start it
  removes those of agents that died without doing so (their pid is gone), so neither a
  killed worker nor a killed node leaves anything behind for long.
- Accounts: processes of the node send one line per object written (``C name size primary
  owner_pid [pool file it reused]``), read (``R name``) and freed (``F name``), and ``X
  pool_file`` for a recycled segment a writer took but could not reuse, on a connection to the folder's
  ``.accounts`` socket (a stream: a burst never blocks a sender nor loses a line);
  the pure :class:`StoreState` decides what to spill, evict and delete, and this shell does it
  (spills in a thread: a copy to disk, then the unlink).
- ``/dev/shm`` missing or smaller than ``object_store_memory``: the folder goes under the
  temporary folder instead (file-backed mappings: slower, but working), with a warning.

- Free pool: a freed object's file in shared memory goes to the ``.pool`` folder for the next
  writer of its size class instead of being removed (``_scheduler/recycling.py`` keeps the
  accounts, bounded by ``capacity / POOL_FRACTION``), as long as memory is not short.

Costs: one line per large object created, read or freed; nothing per small value.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile

import attrs
import psutil
import trio

from .._protocol.ids import NodeId
from .._runtime.segments import INLINE_BYTES
from .._scheduler.recycling import (
    POOL_MIN_BYTES,
    Claimed,
    Offered,
    Recycle,
    Remove,
    SegmentPool,
    Shrink,
)
from .._scheduler.store import (
    Command,
    Created,
    Delete,
    Event,
    Evict,
    Freed,
    OwnerGone,
    Read,
    Spill,
    SpillDone,
    StoreState,
    StoreStatistics,
)

__all__ = ["DEFAULT_STORE_FRACTION", "NodeStore", "default_store_memory", "sweep_dead_folders"]

log = logging.getLogger("actorgrid.store")

SHM_ROOT = "/dev/shm"
FOLDER_PREFIX = "actorgrid-"
DEFAULT_STORE_FRACTION = 0.3  # of the machine's memory, as Ray's default
MIN_SHM_BYTES = 64 * 2**20  # a /dev/shm with less room than this is not used by default
_READ_BYTES = 1 << 16
POOL_FRACTION = 8  # the free pool of segments holds at most this fraction of the capacity
POOL_MAX_BYTES = 2 << 30


def default_store_memory() -> int:
    return int(psutil.virtual_memory().total * DEFAULT_STORE_FRACTION)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_folders(root: str) -> None:
    """Remove store folders left by node agents that died without cleaning up."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        if not name.startswith(FOLDER_PREFIX):
            continue
        pid = name[len(FOLDER_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


class NodeStore:
    def __init__(
        self,
        node_id: NodeId,
        capacity: int | None = None,
        *,
        threshold: int = INLINE_BYTES,
        shm_root: str = SHM_ROOT,
    ) -> None:
        if capacity is None:  # the default fits what /dev/shm has (a container's is small)
            capacity = default_store_memory()
            with contextlib.suppress(OSError):
                room = int(shutil.disk_usage(shm_root).free * 0.9)
                if room >= MIN_SHM_BYTES:
                    capacity = min(capacity, room)
        self.capacity = int(capacity)
        self.threshold = threshold
        self.node = node_id.hex()[:16]
        tag = f"{FOLDER_PREFIX}{os.getpid()}-{self.node}"
        temp = tempfile.gettempdir()
        root = shm_root
        why = _unfit(shm_root, self.capacity)
        if why:
            log.warning(
                "%s, so this node's object store maps files under %s instead (slower: the "
                "kernel may write them to disk). Give the machine a larger /dev/shm (for "
                "Docker: --shm-size) or a smaller object_store_memory",
                why,
                temp,
            )
            root = temp
        self.state = StoreState(self.capacity)
        self.pool = SegmentPool(min(self.capacity // POOL_FRACTION, POOL_MAX_BYTES))
        self._doomed = 0  # large files renamed to be unlinked in a thread, so far
        self.file_backed = root != shm_root
        for where in {root, temp}:
            sweep_dead_folders(where)
        self.folder = os.path.join(root, tag)
        self.spill_folder = os.path.join(temp, tag + "-spill")
        os.makedirs(self.folder, mode=0o700)
        os.makedirs(self.spill_folder, mode=0o700)
        self.pool_folder = os.path.join(self.folder, ".pool")
        os.makedirs(self.pool_folder, mode=0o700)
        self._sock: trio.socket.SocketType | None = None  # made by serve(), in the loop
        self._sock_path = os.path.join(self.folder, ".accounts")
        self._closed = False
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        s = self.state.statistics()
        return f"<NodeStore {self.folder} used={s.used}/{s.capacity} spilled={s.spilled}>"

    def config(self) -> dict[str, object]:
        """What a process of this node needs to use the store (``segments.StoreClient``)."""
        return {
            "node": self.node,
            "folder": self.folder,
            "spill_folder": self.spill_folder,
            "pool_folder": self.pool_folder,
            "threshold": self.threshold,
        }

    def owner_gone(self, pid: int) -> None:
        """A process of this node exited: the values it owned go (their refs died with it)."""
        if self._nursery is not None:
            self._run(self._nursery, self.state.handle(OwnerGone(pid)))

    def statistics(self) -> StoreStatistics:
        return attrs.evolve(
            self.state.statistics(), pooled=len(self.pool), pooled_bytes=self.pool.bytes
        )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = self._sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(self._sock_path)
        sock.listen(64)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                try:
                    conn, _ = await sock.accept()
                except trio.ClosedResourceError:
                    # aclose_nowait() closed it: the node is stopping, its store is gone.
                    nursery.cancel_scope.cancel()
                    return
                nursery.start_soon(self._read_accounts, nursery, trio.SocketStream(conn))

    async def _read_accounts(self, nursery: trio.Nursery, stream: trio.SocketStream) -> None:
        """One process's account lines, until it closes its end (or exits)."""
        rest = b""
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(_READ_BYTES)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                *lines, rest = (rest + data).split(b"\n")
                for line in lines:
                    event, claimed = _parse(line)
                    if claimed:
                        self.pool.handle(Claimed(claimed))
                    if event is not None:
                        self._run(nursery, self.state.handle(event))

    def _run(self, nursery: trio.Nursery, commands: list[Command]) -> None:
        if any(isinstance(command, Spill) for command in commands):
            # Memory is short: pooled files go first.
            self._recycle(nursery, self.pool.handle(Shrink()))
        for command in commands:
            if isinstance(command, Spill):
                nursery.start_soon(self._spill, nursery, command.name)
            elif isinstance(command, Evict | Delete):
                self._remove(nursery, command.name, disk=isinstance(command, Delete))

    def _remove(self, nursery: trio.Nursery, name: str, *, disk: bool) -> None:
        if disk:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.spill_folder, name))
        try:
            size = os.stat(os.path.join(self.folder, name)).st_size
        except FileNotFoundError:
            return
        self._recycle(nursery, self.pool.handle(Offered(name, size)), size)

    def _recycle(
        self, nursery: trio.Nursery, commands: list[Recycle | Remove], size: int = POOL_MIN_BYTES
    ) -> None:
        """Do the pool's commands; ``size``: of the object file offered (pooled files are
        all at least ``POOL_MIN_BYTES``)."""
        for command in commands:
            path = os.path.join(self.folder, command.name)
            if isinstance(command, Recycle):
                try:
                    os.rename(path, os.path.join(self.pool_folder, command.pooled))
                    continue
                except OSError:
                    self.pool.handle(Claimed(command.pooled))  # not pooled after all
            elif command.pooled:
                path = os.path.join(self.pool_folder, command.pooled)
            if size < POOL_MIN_BYTES:
                _unlink(path)
                continue
            # Unlinking the last name of a file frees its pages, which takes a while for a
            # large one (seconds for gigabytes): not on the loop, which pulses for the node.
            # Renamed first, so that the name is free at once (a copy pulled again reuses it).
            self._doomed += 1
            doomed = os.path.join(self.pool_folder, f".doomed-{self._doomed}")
            try:
                os.rename(path, doomed)
            except FileNotFoundError:
                continue  # a writer claimed the pooled file meanwhile
            nursery.start_soon(trio.to_thread.run_sync, _unlink, doomed)

    async def _spill(self, nursery: trio.Nursery, name: str) -> None:
        ok = True
        try:
            await trio.to_thread.run_sync(self._copy_to_disk, name)
        except OSError as exc:
            log.warning("could not spill object %s to %s: %s", name[:12], self.spill_folder, exc)
            ok = False
        self._run(nursery, self.state.handle(SpillDone(name, ok)))

    def _copy_to_disk(self, name: str) -> None:
        # The copy is complete under its final name before the memory copy goes, so a reader
        # always finds one of them; one that mapped the memory copy keeps it.
        source = os.path.join(self.folder, name)
        tmp = os.path.join(self.spill_folder, f".{name}.tmp")
        shutil.copyfile(source, tmp)
        os.rename(tmp, os.path.join(self.spill_folder, name))
        os.unlink(source)

    def aclose_nowait(self) -> None:
        """Remove both folders (idempotent): every object of this node goes."""
        if self._closed:
            return
        self._closed = True
        if self._sock is not None:
            self._sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        shutil.rmtree(self.spill_folder, ignore_errors=True)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _unfit(root: str, capacity: int) -> str:
    """Why ``root`` cannot hold the store ("" if it can)."""
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return f"{root} is missing"
    if free < capacity:
        return (
            f"{root} has {free / 2**20:.0f} MiB free, less than object_store_memory="
            f"{capacity / 2**20:.0f} MiB"
        )
    return ""


def _parse(data: bytes) -> tuple[Event | None, str]:
    """The store event an account line tells, and the pool file it says a writer claimed
    ("" if none)."""
    parts = data.decode(errors="replace").split()
    try:
        if parts[0] == "C":
            claimed = parts[5] if len(parts) > 5 else ""
            return Created(parts[1], int(parts[2]), parts[3] == "1", int(parts[4])), claimed
        if parts[0] == "R":
            return Read(parts[1]), ""
        if parts[0] == "F":
            return Freed(parts[1]), ""
        if parts[0] == "X":  # claimed, but a reader still mapped it: removed
            return None, parts[1]
    except (IndexError, ValueError):
        pass
    log.debug("ignored a malformed store account line %r", data[:80])
    return None, ""
