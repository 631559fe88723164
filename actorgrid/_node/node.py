"""The node agent: starts this machine's worker processes and stops them, always.

Workers get the cluster secret on stdin, never on the command line or in the environment, and
keep that pipe open: when the agent's process dies, however it dies, each worker reads EOF
and exits, so no worker outlives its node.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

import trio

from .._protocol.ids import NodeId, new_node_id, new_worker_id

__all__ = ["NodeAgent", "WorkerStartError"]

log = logging.getLogger("actorgrid.node")

STOP_GRACE_S = 3.0


class WorkerStartError(RuntimeError):
    """A worker process exited before it joined the cluster."""


class NodeAgent:
    def __init__(
        self,
        head_address: str,
        secret: bytes,
        *,
        num_workers: int,
        num_cpus_per_worker: float = 1.0,
        max_message_bytes: int,
    ) -> None:
        self.head_address = head_address
        self.node_id: NodeId = new_node_id()
        self._secret = secret
        self.num_workers = num_workers
        self._num_cpus = num_cpus_per_worker
        self._max = max_message_bytes
        self.processes: list[trio.Process] = []
        self.failure: str | None = None
        self.failed = trio.Event()
        self._stopping = False

    def __repr__(self) -> str:
        alive = sum(1 for p in self.processes if p.returncode is None)
        return f"<NodeAgent workers={alive}/{self.num_workers} head={self.head_address}>"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.num_workers):
                proc = await self._spawn()
                self.processes.append(proc)
                nursery.start_soon(self._watch, proc)
            task_status.started()

    async def _spawn(self) -> trio.Process:
        config = {
            "head": self.head_address,
            "secret": self._secret.hex(),
            "worker_id": new_worker_id().hex(),
            "node_id": self.node_id.hex(),
            "num_cpus": self._num_cpus,
            "max_message_bytes": self._max,
        }
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "actorgrid._node.worker"],
            stdin=subprocess.PIPE,
            # Own session: a Ctrl-C in the terminal reaches the driver, which decides.
            start_new_session=True,
        )
        assert proc.stdin is not None
        await proc.stdin.send_all(json.dumps(config).encode() + b"\n")
        return proc

    async def _watch(self, proc: trio.Process) -> None:
        code = await proc.wait()
        if not self._stopping:
            self.failure = f"worker pid {proc.pid} exited with code {code}"
            log.warning("%s", self.failure)
            self.failed.set()

    async def aclose(self) -> None:
        """Stop every worker: SIGTERM, then SIGKILL after STOP_GRACE_S. Idempotent."""
        self._stopping = True
        with trio.CancelScope(shield=True):
            for proc in self.processes:
                if proc.stdin is not None:
                    await proc.stdin.aclose()
                if proc.returncode is None:
                    _signal(proc, signal.SIGTERM)
            with trio.move_on_after(STOP_GRACE_S):
                for proc in self.processes:
                    await proc.wait()
            for proc in self.processes:
                if proc.returncode is None:
                    _signal(proc, signal.SIGKILL)
                    await proc.wait()


def _signal(proc: trio.Process, sig: int) -> None:
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
