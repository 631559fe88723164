"""The head's part in runtime environments: the package store and the fan-out to nodes.

- Packages arrive from drivers in chunks (``PackagePut``) and are kept as files in the
  head's session folder (removed when the head stops); node agents fetch them from there
  (``PackageFetch``), each package once per node, and check each against its digest before
  they use it.
- ``EnsureEnv`` from a driver goes to every node agent; the driver's Ack waits for all of
  them and carries every node's error, each naming its node. A node that joins later gets
  the environments in use (``node_joined``).
- The head counts the drivers of each environment; when the last one's link ends, every
  node gets ``ReleaseEnv`` (its workers stop, ``node_cleanup`` runs).
- A restarted head knows no environment: the processes that reconnect ship theirs again
  (``_runtime/envship.py``), detached actors hold theirs again as their workers rejoin, and
  each node that rejoins reports the ones it has workers of (``EnvsHeld``); one that nobody
  uses ``ORPHAN_ENV_GRACE_S`` later (its drivers left while the head was away) is released.

Costs: a package chunk is O(chunk); EnsureEnv and ReleaseEnv are O(nodes), once per driver
and environment, never per call.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from .._env.packing import max_package_bytes
from .._protocol.envmessages import (
    PACKAGE_CHUNK_BYTES,
    EnsureEnv,
    EnvsHeld,
    PackageData,
    PackageFetch,
    PackageHave,
    PackagePut,
    PackageQuery,
    ReleaseEnv,
    RuntimeEnvSpec,
)
from .._protocol.messages import Ack
from .._runtime.peer import Peer, PeerClosedError

__all__ = ["ORPHAN_ENV_GRACE_S", "EnvHost", "SessionFolder"]

log = logging.getLogger("actorgrid.head")

# How long after a node reports an environment to a restarted head the head waits for a user
# of it to reconnect before it releases it. A user that comes later ships it again.
ORPHAN_ENV_GRACE_S = 10.0


class SessionFolder:
    """A private temporary folder made on first use and removed by ``remove()``."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._path: Path | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = Path(tempfile.mkdtemp(prefix=self._prefix))
        return self._path

    def remove(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


class _Upload:
    __slots__ = ("data", "hasher")

    def __init__(self) -> None:
        self.data = bytearray()
        self.hasher = hashlib.sha256()


class EnvHost:
    def __init__(
        self,
        node_peers: Callable[[], list[Peer]],
        background: Callable[..., None],
        session: SessionFolder,
    ) -> None:
        self._node_peers = node_peers
        self._background = background
        self._session = session
        self._packages: dict[str, Path] = {}  # digest -> its zip in the session folder
        self._uploads: dict[tuple[Peer, str], bytearray] = {}
        self._specs: dict[str, RuntimeEnvSpec] = {}
        # env key -> who uses it: drivers (and workers) by their link, detached actors by id
        self._users: dict[str, set[object]] = {}
        self._used_by: dict[object, set[str]] = {}
        self._orphans: set[str] = set()  # reported by rejoining nodes, no user yet

    def __repr__(self) -> str:
        return f"<EnvHost packages={len(self._packages)} envs={len(self._specs)}>"

    def handlers(self) -> dict[type, Callable[[Peer, Any], None]]:
        return {
            PackageQuery: self._on_query,
            PackagePut: self._on_put,
            PackageFetch: self._on_fetch,
            EnsureEnv: self._on_ensure,
            EnvsHeld: self._on_held,
        }

    def package_path(self, digest: str) -> Path | None:
        return self._packages.get(digest)

    # --- packages --------------------------------------------------------------------------

    def _on_query(self, peer: Peer, msg: PackageQuery) -> None:
        path = self._packages.get(msg.digest)
        peer.send(PackageHave(msg.rid, path.stat().st_size if path is not None else -1))

    def _on_put(self, peer: Peer, msg: PackagePut) -> None:
        slot = (peer, msg.digest)
        data = self._uploads.setdefault(slot, bytearray())
        if msg.offset != len(data) or len(data) + len(msg.data) > 2 * max_package_bytes():
            self._uploads.pop(slot, None)
            peer.send(Ack(msg.rid, f"package {msg.digest[:12]}: a chunk out of order or too big"))
            return
        data += msg.data
        if not msg.last:
            peer.send(Ack(msg.rid))
            return
        del self._uploads[slot]
        path = self._session.path / "packages" / f"{msg.digest}.zip"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            peer.send(Ack(msg.rid, f"the head could not store package {msg.digest[:12]}: {exc}"))
            return
        self._packages[msg.digest] = path
        peer.send(Ack(msg.rid))

    def _on_fetch(self, peer: Peer, msg: PackageFetch) -> None:
        path = self._packages.get(msg.digest)
        if path is None:
            peer.send(PackageData(msg.rid, b"", -1, f"the head has no package {msg.digest[:12]}"))
            return
        try:
            with path.open("rb") as f:
                f.seek(msg.offset)
                chunk = f.read(PACKAGE_CHUNK_BYTES)
                size = path.stat().st_size
        except OSError as exc:
            peer.send(PackageData(msg.rid, b"", -1, f"reading package {msg.digest[:12]}: {exc}"))
            return
        peer.send(PackageData(msg.rid, chunk, size))

    # --- environments ----------------------------------------------------------------------

    def _on_ensure(self, peer: Peer, msg: EnsureEnv) -> None:
        key = msg.env.key
        self._specs[key] = msg.env
        self._users.setdefault(key, set()).add(peer)
        self._used_by.setdefault(peer, set()).add(key)
        self._background("making a runtime_env ready", self._ensure_everywhere, peer, msg)

    async def _ensure_everywhere(self, peer: Peer, msg: EnsureEnv) -> None:
        nodes = self._node_peers()
        if not nodes:
            peer.send(Ack(msg.rid, "no node is connected to the cluster to run it"))
            return
        errors: list[str] = []
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(_ensure_on, node, msg.env, errors)
        peer.send(Ack(msg.rid, "\n".join(errors) if errors else None))

    def _on_held(self, peer: Peer, msg: EnvsHeld) -> None:
        for spec in msg.envs:
            self._specs.setdefault(spec.key, spec)
            if spec.key not in self._users and spec.key not in self._orphans:
                self._orphans.add(spec.key)
                self._background("releasing an unused runtime_env", self._release_orphan, spec)

    async def _release_orphan(self, spec: RuntimeEnvSpec) -> None:
        await trio.sleep(ORPHAN_ENV_GRACE_S)
        self._orphans.discard(spec.key)
        if spec.key in self._users:
            return
        log.info("releasing runtime_env %s: nobody uses it since the head restarted", spec.label)
        self._specs.pop(spec.key, None)
        for node in self._node_peers():
            node.send(ReleaseEnv(spec.key))

    def node_joined(self, node: Peer) -> None:
        """A new node gets every environment in use: O(environments), once per node."""
        for spec in self._specs.values():
            self._background("making a runtime_env ready on a new node", _ensure_logged, node, spec)

    def hold(self, key: str, holder: object) -> None:
        """``holder`` (a detached actor's id) keeps environment ``key`` in use, as a driver
        does, until ``drop(holder)``. O(1)."""
        self._users.setdefault(key, set()).add(holder)
        self._used_by.setdefault(holder, set()).add(key)

    def drop(self, holder: object) -> None:
        """``holder`` no longer uses its environments: the last user's going releases one."""
        for key in self._used_by.pop(holder, ()):
            users = self._users.get(key)
            if users is None:
                continue
            users.discard(holder)
            if not users:
                del self._users[key]
                self._specs.pop(key, None)
                for node in self._node_peers():
                    node.send(ReleaseEnv(key))

    def process_gone(self, peer: Peer) -> None:
        self._uploads = {k: v for k, v in self._uploads.items() if k[0] is not peer}
        self.drop(peer)


async def _ensure_on(node: Peer, spec: RuntimeEnvSpec, errors: list[str]) -> None:
    try:
        reply = await node.request(lambda rid: EnsureEnv(rid, spec))
    except PeerClosedError as exc:
        errors.append(f"a node went away while it prepared the runtime_env: {exc}")
        return
    if isinstance(reply, Ack) and reply.error:
        errors.append(reply.error)


async def _ensure_logged(node: Peer, spec: RuntimeEnvSpec) -> None:
    errors: list[str] = []
    await _ensure_on(node, spec, errors)
    for error in errors:
        log.warning("%s", error)
