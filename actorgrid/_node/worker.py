"""A worker process: ``python -m actorgrid._node.worker``, started by a node agent.

Reads its configuration (with the cluster secret) as one JSON line on stdin, then serves
until the head tells it to stop (or refuses it back after losing it: ``rejoin.py``), or stdin
reaches EOF (its node agent died). A lost head is dialled again while the calls here go on. Blocking user code runs on threads; the switch interval is lowered so that a
CPU-bound thread cannot hold the loop off for more than about a millisecond at a time.

Talking to its node agent:

- a byte (PULSE_BYTE) on the pulse pipe every pulse interval, written by the Trio loop itself,
  so a hung loop or a stopped process goes silent and is found; READY_BYTE once it has
  registered with the head: from then on an exit is a worker stopped from outside, before it
  one that cannot start (a crash loop, which its agent backs off);
- SIGTERM: stop gracefully. Running work is interrupted (async code is cancelled, sync code
  gets KeyboardInterrupt) and has ``grace_s`` to finish; then the process exits;
- ``drain`` on stdin: finish the calls already here, then exit (``Cluster.close_worker``);
  ``yield_gpus``: the same once nothing holds its resources (``gpuworker.py``), whose use it
  tells with its pulses when it offers GPUs or custom resources.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

import trio

from .._protocol.ids import NodeId, WorkerId
from .._protocol.messages import RegisterWorker, WorkerInfo
from .._runtime.core import Runtime, set_current_runtime
from .._runtime.executor import Executor
from .._runtime.gcpause import install as install_gc_pause
from .._runtime.gcyoung import raise_young_threshold
from .._runtime.holdings import Holdings, set_gpu_ids
from .._runtime.output import capture_worker_output
from .._transport.tcp import ListenLimits
from .._transport.tls import TLSConfig
from .envworker import env_key, run_worker_setup
from .gpuworker import (
    GPU_BUSY_BYTE,
    GPU_FREE_BYTE,
    YIELD_GPUS,
    gpus_busy,
    offers_units,
    wait_gpus_free,
)
from .logs import configure_logging
from .rejoin import rejoin_worker
from .shares import WorkerShare
from .spawn import PULSE_BYTE, READY_BYTE

__all__ = ["main", "serve_worker"]

SWITCH_INTERVAL_S = 0.001


log = logging.getLogger("actorgrid.worker")


async def _watch_stdin(scope: trio.CancelScope, executor: Executor, poll_s: float) -> None:
    stream = trio.lowlevel.FdStream(os.dup(0))
    buffered = b""
    try:
        while chunk := await stream.receive_some(4096):
            buffered += chunk
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                if line.strip() == b"drain":
                    await executor.wait_idle()
                    await executor.runtime.finished_reports.flush_before_exit()
                    return
                if line.strip() == YIELD_GPUS.encode():
                    await wait_gpus_free(executor.holdings, poll_s)
                    await executor.wait_idle()
                    await executor.runtime.finished_reports.flush_before_exit()
                    return
    finally:
        executor.stopping = True
        scope.cancel()
        await stream.aclose()


async def _pulse(fd: int, interval_s: float, ready: trio.Event, executor: Executor | None) -> None:
    os.set_blocking(fd, False)
    while True:
        try:
            # Every pulse after registration says "ready", so one lost to a full pipe is not;
            # a worker with GPUs (``executor``) says whether they are in use too.
            pulse = READY_BYTE if ready.is_set() else PULSE_BYTE
            if executor is not None:
                pulse += GPU_BUSY_BYTE if gpus_busy(executor.holdings) else GPU_FREE_BYTE
            os.write(fd, pulse)
        except BlockingIOError:
            pass  # the node agent is behind; a full pipe already says we are alive
        except OSError:
            return  # the node agent is gone; stdin EOF ends this process
        await trio.sleep(interval_s)


async def _stop_on_sigterm(scope: trio.CancelScope, executor: Executor, grace_s: float) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            executor.stopping = True
            await executor.interrupt_all("the worker is stopping (SIGTERM)")
            with trio.move_on_after(grace_s):
                await executor.wait_idle()
                await executor.wait_stop_told(grace_s)
                await executor.runtime.finished_reports.flush_before_exit()
            scope.cancel()
            return


async def serve_worker(config: dict[str, Any]) -> None:
    interval_s = float(config["pulse_interval_s"])
    grace_s = float(config["grace_s"])
    rt = Runtime(
        kind="worker",
        secret=bytes.fromhex(config["secret"]),
        head_address=config["head"],
        max_message_bytes=int(config["max_message_bytes"]),
        pulse_interval_s=interval_s,
        host=config["host"],
        tls=TLSConfig.from_dict(config["tls"]) if config.get("tls") else None,
        listen_limits=ListenLimits(**limits) if (limits := config.get("listen_limits")) else None,
    )
    rt.env_key = env_key(config)
    num_cpus = float(config["num_cpus"])
    executor = rt.executor = Executor(rt, num_cpus, grace_s=grace_s)
    share = WorkerShare(config)
    share.adopt()
    set_gpu_ids(list(share.gpu_ids))
    executor.holdings = Holdings(dict(share.resources))
    set_current_runtime(rt)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_stdin, nursery.cancel_scope, executor, interval_s)
        nursery.start_soon(_stop_on_sigterm, nursery.cancel_scope, executor, grace_s)
        ready = trio.Event()
        with_gpus = executor if offers_units(share.resources) else None
        nursery.start_soon(_pulse, int(config["pulse_fd"]), interval_s, ready, with_gpus)
        await nursery.start(rt.serve)
        assert rt.headlink is not None
        rt.join_store(config.get("store"))  # its node's object store

        # A lost head is dialled again (HeadLink) while the calls here go on: see rejoin.py.
        def stop(_: str) -> None:
            executor.stopping = True
            nursery.cancel_scope.cancel()

        rt.on_shutdown = stop
        info = WorkerInfo(
            WorkerId(bytes.fromhex(config["worker_id"])),
            NodeId(bytes.fromhex(config["node_id"])),
            rt.address,
            os.getpid(),
            socket.gethostname(),
            num_cpus,
            share.resources,
            share.labels,
            share.gpu_ids,
            env=rt.env_key,
        )
        rt.observe.worker_id, rt.observe.node_id = info.worker_id, info.node_id
        rt.observe.hostname = info.hostname
        rt.link_node_workers(info.node_id)  # the first message to a sibling waits for no dial
        await run_worker_setup(config)  # before it joins, so before its first task
        rt.headlink.on_reconnected.append(functools.partial(rejoin_worker, executor, info, stop))
        await rt.headlink.request(lambda rid: RegisterWorker(rid, info))
        ready.set()
        try:
            os.write(int(config["pulse_fd"]), READY_BYTE)  # now, not at the next pulse
        except OSError:
            pass  # a full pipe: the next pulse says it; a closed one: stdin EOF ends us


def main() -> None:
    capture_worker_output()  # before logging binds sys.stderr
    configure_logging("worker")
    config = json.loads(sys.stdin.readline())
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    install_gc_pause()  # a full collection over 100,000 agents stops the loop: gcpause.py
    raise_young_threshold()  # fewer collections per call in flight: gcyoung.py
    code = 0
    try:
        trio.run(serve_worker, config)
    except BaseException as exc:  # said on stderr and in the exit code
        if not _interrupted(exc):
            # Said here, not by the interpreter: os._exit below would swallow it, and the
            # node would see a clean exit of a worker that crashed.
            log.critical("the worker's loop failed", exc_info=exc)
            code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # Threads still running abandoned user code must not keep the process alive.
        os._exit(code)


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C alone (bare, or the only thing in Trio's groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(lambda e: not isinstance(e, KeyboardInterrupt)) is None
    return isinstance(exc, KeyboardInterrupt)


if __name__ == "__main__":
    main()
