"""A worker process: ``python -m actorgrid._node.worker``, started by a node agent.

Reads its configuration (with the cluster secret) as one JSON line on stdin, then serves
until the head tells it to stop, its head connection ends, or stdin reaches EOF (its node
agent died). Blocking user code runs on threads; the switch interval is lowered so that a
CPU-bound thread cannot hold the loop off for more than about a millisecond at a time.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from typing import Any

import trio

from .._protocol.ids import NodeId, WorkerId
from .._protocol.messages import RegisterWorker, WorkerInfo
from .._runtime.core import Runtime, set_current_runtime
from .._runtime.executor import Executor

SWITCH_INTERVAL_S = 0.001


async def _watch_stdin(scope: trio.CancelScope) -> None:
    stream = trio.lowlevel.FdStream(os.dup(0))
    try:
        while await stream.receive_some(4096):
            pass
    finally:
        scope.cancel()
        await stream.aclose()


async def serve_worker(config: dict[str, Any]) -> None:
    rt = Runtime(
        kind="worker",
        secret=bytes.fromhex(config["secret"]),
        head_address=config["head"],
        max_message_bytes=int(config["max_message_bytes"]),
    )
    num_cpus = float(config["num_cpus"])
    rt.executor = Executor(rt, num_cpus)
    set_current_runtime(rt)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_stdin, nursery.cancel_scope)
        await nursery.start(rt.serve)
        assert rt.head is not None
        rt.head.on_closed.append(lambda _: nursery.cancel_scope.cancel())
        rt.on_shutdown = lambda _: nursery.cancel_scope.cancel()
        info = WorkerInfo(
            WorkerId(bytes.fromhex(config["worker_id"])),
            NodeId(bytes.fromhex(config["node_id"])),
            rt.address,
            os.getpid(),
            socket.gethostname(),
            num_cpus,
        )
        await rt.head.request(lambda rid: RegisterWorker(rid, info))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="actorgrid worker: %(message)s")
    config = json.loads(sys.stdin.readline())
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        trio.run(serve_worker, config)
    except KeyboardInterrupt:
        pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # Threads still running abandoned user code must not keep the process alive.
        os._exit(0)


if __name__ == "__main__":
    main()
