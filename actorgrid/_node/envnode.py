"""A node agent's part in runtime environments: packages, node hooks, workers per env.

``EnsureEnv`` (from the head): fetch each package the node lacks from the head (chunked, on
the node's own authenticated link), unpack it once into the node's session folder (removed
when the node stops), run ``node_setup`` once in a process of its own, then start workers
for the environment: separate processes, their current directory the ``working_dir``, the
packages on their ``PYTHONPATH``, ``env_vars`` set, each running ``worker_setup`` before it
joins. The Ack waits until they are ready; a hook that fails is an error naming the hook and
this node, with its output, and its workers are not used (nor started again).

``ReleaseEnv`` (the environment's last driver left), and the node's own stop: the
environment's workers are closed and ``node_cleanup`` runs once.

Environments are independent: a second ``EnsureEnv`` of a ready one is answered at once.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from .._env.packing import unpack
from .._protocol.envmessages import (
    EnsureEnv,
    EnvsHeld,
    PackageData,
    PackageFetch,
    ReleaseEnv,
    RuntimeEnvSpec,
)
from .._protocol.ids import NodeId, short
from .._protocol.messages import Ack, Message
from .._runtime.peer import Peer
from .envhead import SessionFolder
from .envworker import SETUP_FAILED
from .spawn import SECRET_ENV_VARS

__all__ = ["ENV_START_TIMEOUT_S", "NODE_HOOK_TIMEOUT_S", "EnvLaunch", "EnvNode"]

# How long an environment's workers have to become ready (worker_setup included).
ENV_START_TIMEOUT_S = 120.0
# How long a node_setup or node_cleanup hook may run before it is killed (and has failed).
NODE_HOOK_TIMEOUT_S = 120.0
# How often the readiness of an environment's new workers is looked at while it starts.
_READY_POLL_S = 0.05
_TAIL_LINES = 12


@attrs.frozen
class EnvLaunch:
    """How a node starts the workers of one environment."""

    key: str
    cwd: str | None
    environ: dict[str, str]
    worker_setup: bytes | None
    label: str

    def worker_config(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "worker_setup": None if self.worker_setup is None else self.worker_setup.hex(),
        }


class _Agent(Protocol):
    node_id: NodeId
    num_workers: int
    head: Peer | None

    async def start_env_slots(self, launch: EnvLaunch, count: int) -> list[Any]: ...

    def close_env_slots(self, key: str) -> None: ...


class _Env:
    __slots__ = ("error", "launch", "lock", "ready", "spec")

    def __init__(self, spec: RuntimeEnvSpec) -> None:
        self.spec = spec
        self.lock = trio.Lock()
        self.ready = False
        self.error: str | None = None
        self.launch: EnvLaunch | None = None


class EnvNode:
    def __init__(self, agent: _Agent, hostname: str) -> None:
        self._agent = agent
        self._hostname = hostname
        self.session = SessionFolder("actorgrid-node-")
        self._envs: dict[str, _Env] = {}

    def __repr__(self) -> str:
        return f"<EnvNode envs={len(self._envs)}>"

    def accepts(self, message: Message) -> bool:
        return isinstance(message, EnsureEnv | ReleaseEnv)

    async def handle(self, peer: Peer, message: Message) -> None:
        if isinstance(message, EnsureEnv):
            error = await self._ensure(peer, message.env)
            peer.send(Ack(message.rid, error))
        elif isinstance(message, ReleaseEnv):
            await self._release(message.key)

    def held(self) -> EnvsHeld:
        """What this node tells a head it rejoins: the environments it has workers of."""
        return EnvsHeld(tuple(env.spec for env in self._envs.values() if env.ready))

    def _where(self) -> str:
        return f"node {short(self._agent.node_id)} ({self._hostname})"

    async def _ensure(self, peer: Peer, spec: RuntimeEnvSpec) -> str | None:
        env = self._envs.setdefault(spec.key, _Env(spec))
        async with env.lock:
            if env.ready:
                return None
            try:
                error = await self._prepare(peer, env)
            except Exception as exc:
                error = (
                    f"runtime_env ({spec.label}) could not be prepared on {self._where()}: {exc}"
                )
            if error is not None:
                self._envs.pop(spec.key, None)
                if env.launch is not None:
                    self._agent.close_env_slots(spec.key)
            else:
                env.ready = True
            return error

    async def _prepare(self, peer: Peer, env: _Env) -> str | None:
        spec = env.spec
        folders: list[Path] = []
        for digest in (spec.working_dir, *spec.py_modules):
            if digest:
                folder = await self._package(peer, digest)
                if isinstance(folder, str):
                    return f"runtime_env ({spec.label}) on {self._where()}: {folder}"
                folders.append(folder)
        environ = dict(spec.env_vars)
        path = [str(f) for f in folders]
        if os.environ.get("PYTHONPATH"):
            path.append(os.environ["PYTHONPATH"])
        if path:
            environ["PYTHONPATH"] = os.pathsep.join(path)
        cwd = str(folders[0]) if spec.working_dir else None
        env.launch = EnvLaunch(spec.key, cwd, environ, spec.worker_setup, spec.label)
        if spec.node_setup is not None:
            failed = await self._run_hook("node_setup", spec.node_setup, env.launch)
            if failed is not None:
                return failed
        slots = await self._agent.start_env_slots(env.launch, self._agent.num_workers)
        with trio.move_on_after(ENV_START_TIMEOUT_S):
            while not all(s.ready for s in slots):
                broken = next((s for s in slots if s.over and not s.ready), None)
                if broken is not None:
                    return _worker_failure(spec, self._where(), list(broken.stderr_tail))
                await trio.sleep(_READY_POLL_S)
            return None
        return (
            f"runtime_env ({spec.label}): the workers on {self._where()} were not ready within "
            f"{ENV_START_TIMEOUT_S:g} s (a slow worker_setup?)"
        )

    async def _package(self, peer: Peer, digest: str) -> Path | str:
        cache = self.session.path / "packages"
        if (cache / digest).is_dir():
            return cache / digest
        data = bytearray()
        while True:
            fetch = functools.partial(PackageFetch, digest=digest, offset=len(data))
            reply = await peer.request(fetch)
            assert isinstance(reply, PackageData)
            if reply.error is not None:
                return f"package {digest[:12]} could not be fetched from the head: {reply.error}"
            data += reply.data
            if len(data) >= reply.size or not reply.data:
                break
        return await trio.to_thread.run_sync(unpack, bytes(data), digest, cache)

    async def _run_hook(self, name: str, blob: bytes, launch: EnvLaunch) -> str | None:
        environ = {k: v for k, v in os.environ.items() if k not in SECRET_ENV_VARS}
        environ.update(launch.environ)
        result: tuple[int, bytes] | None = None
        with trio.move_on_after(NODE_HOOK_TIMEOUT_S):
            result = await _run_captured(blob, launch.cwd, environ)
        if result is None:
            return (
                f"runtime_env {name} ({launch.label}) on {self._where()} did not finish within "
                f"{NODE_HOOK_TIMEOUT_S:g} s and was killed"
            )
        code, output = result
        if code != 0:
            lines = output.decode(errors="replace").strip().splitlines()[-_TAIL_LINES:]
            return f"runtime_env {name} failed on {self._where()}:\n" + "\n".join(lines)
        return None

    async def _release(self, key: str) -> None:
        env = self._envs.pop(key, None)
        if env is None:
            return
        async with env.lock:
            self._agent.close_env_slots(key)
            await self._cleanup(env)

    async def _cleanup(self, env: _Env) -> None:
        if env.ready and env.launch is not None and env.spec.node_cleanup is not None:
            failed = await self._run_hook("node_cleanup", env.spec.node_cleanup, env.launch)
            if failed is not None:
                print(failed, file=sys.stderr, flush=True)

    async def aclose(self) -> None:
        """The node stops (its workers already have): every environment's node_cleanup,
        then the session folder goes."""
        with trio.CancelScope(shield=True):
            envs, self._envs = list(self._envs.values()), {}
            for env in envs:
                await self._cleanup(env)
            self.session.remove()


async def _run_captured(blob: bytes, cwd: str | None, environ: dict[str, str]) -> tuple[int, bytes]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "actorgrid._node.envhook"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=environ,
    )
    output = bytearray()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        await proc.stdin.send_all(blob)
        await proc.stdin.aclose()
        while chunk := await proc.stdout.receive_some(65536):
            output += chunk
            del output[: max(0, len(output) - 65536)]
        return await proc.wait(), bytes(output)
    finally:
        if proc.returncode is None:
            with trio.CancelScope(shield=True):
                proc.kill()
                await proc.wait()


def _worker_failure(spec: RuntimeEnvSpec, where: str, tail: list[str]) -> str:
    """What to tell the driver about a worker of ``spec`` that ended before it was ready."""
    starts = [i for i, line in enumerate(tail) if line.startswith(SETUP_FAILED)]
    if starts:
        trace = "\n".join(tail[starts[-1] + 1 :])
        return (
            f"{SETUP_FAILED} on {where}, so that worker is not used; fix the hook (it ran "
            f"in a fresh worker process of the environment):\n{trace}"
        )
    lines = tail[-_TAIL_LINES:]
    output = "\n".join(lines) if lines else "(it wrote no error output)"
    return (
        f"runtime_env ({spec.label}): a worker on {where} ended before it was ready, so it "
        f"is not used. Its last error output:\n{output}"
    )
