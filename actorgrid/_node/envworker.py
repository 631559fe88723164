"""A worker's runtime environment, from its configuration: its key (it then sees only the
workers of that environment) and its ``worker_setup`` hook, run once before the worker joins
the cluster, so before its first task. A hook that raises ends the worker before it is
ready, with a message naming the hook and the node on stderr: its node agent reports that to
the driver and does not start that worker again."""

from __future__ import annotations

import os
import socket
import sys
import traceback
from typing import Any

import cloudpickle
import trio

__all__ = ["SETUP_FAILED", "env_key", "run_worker_setup"]


def env_key(config: dict[str, Any]) -> str:
    env = config.get("env")
    return str(env["key"]) if env else ""


# The first line a worker writes on stderr when its worker_setup raised; its traceback follows.
SETUP_FAILED = "runtime_env worker_setup failed"


def _setup(blob: bytes) -> str | None:
    """Run the hook; its traceback (its own frames only) if it raised."""
    hook = cloudpickle.loads(blob)
    try:
        hook()
    except Exception as exc:
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        return "".join(traceback.format_exception(type(exc), exc, tb))
    return None


async def run_worker_setup(config: dict[str, Any]) -> None:
    env = config.get("env")
    if not env or not env.get("worker_setup"):
        return
    # Off the loop: a slow hook must not stop this worker's pulses.
    trace = await trio.to_thread.run_sync(_setup, bytes.fromhex(env["worker_setup"]))
    if trace is not None:
        print(
            f"{SETUP_FAILED} in worker pid {os.getpid()} on {socket.gethostname()}:\n{trace}",
            file=sys.stderr,
            flush=True,
        )
        # Not ready, never registered: nothing to clean up, and no task may reach it.
        os._exit(1)
