"""Starting a worker process, and the pipes between it and its node agent.

- ``open_worker_process(pulse_fd)``: ``python -m actorgrid._node.worker`` in a session of its
  own, with its stdin and stderr piped to the agent, the write end of its pulse pipe, and the
  agent's environment *without* the cluster secret (``SECRET_ENV_VARS``): a worker gets the
  secret on stdin only, never in its environment or on its command line. Tests replace this
  function (by module attribute) to make workers that fail or die as they start.
- The pulse pipe carries ``PULSE_BYTE`` every pulse interval, ``READY_BYTE`` once the worker
  has registered with its head.
- ``copy_stderr``: copies a worker's error output to the agent's own stderr (from a thread,
  so a slow terminal never holds the agent's loop) and keeps its last lines, bounded in count
  and length, for crash-loop reports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import deque

import trio

__all__ = [
    "PULSE_BYTE",
    "READY_BYTE",
    "SECRET_ENV_VARS",
    "STDERR_TAIL_LINES",
    "WorkerStartError",
    "copy_stderr",
    "describe_exit",
    "open_env_worker_process",
    "open_worker_process",
    "send_command",
    "signal_process",
    "worker_environment",
]

# On the pulse pipe: a worker writes PULSE_BYTE every pulse, READY_BYTE instead once it has
# registered with the head.
PULSE_BYTE = b"."
READY_BYTE = b"!"
# Environment variables a worker must never inherit from its node agent.
SECRET_ENV_VARS = ("ACTORGRID_SECRET",)
# Lines of each worker's error output kept for reports, and the most kept of one line.
STDERR_TAIL_LINES = 20
STDERR_LINE_MAX_CHARS = 500


class WorkerStartError(RuntimeError):
    """A worker process could not be started, or kept exiting before it joined the cluster."""


async def open_worker_process(pulse_fd: int) -> trio.Process:
    """Start ``python -m actorgrid._node.worker`` (a module-level function: tests replace it
    to kill a worker at the instant it is spawned)."""
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", "actorgrid._node.worker"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(pulse_fd,),
        env=worker_environment(),
        # Own session: a Ctrl-C in the terminal reaches the driver, which decides.
        start_new_session=True,
    )


async def open_env_worker_process(
    pulse_fd: int, env_vars: dict[str, str], cwd: str | None
) -> trio.Process:
    """A worker of a runtime environment: as ``open_worker_process``, in ``cwd`` (its
    ``working_dir``) with ``env_vars`` (its own and its ``PYTHONPATH``) over the agent's."""
    environ = worker_environment()
    environ.update(env_vars)
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", "actorgrid._node.worker"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(pulse_fd,),
        env=environ,
        cwd=cwd,
        start_new_session=True,
    )


def worker_environment() -> dict[str, str]:
    """This process's environment without the cluster secret."""
    return {k: v for k, v in os.environ.items() if k not in SECRET_ENV_VARS}


def _write_stderr(data: bytes | bytearray) -> None:
    # In a thread: our stderr may be a slow pipe, and the agent's loop must not wait on it.
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(2, view) :]
    except OSError:
        pass


def _line(raw: bytes) -> str:
    return raw.decode(errors="replace").rstrip("\r")[:STDERR_LINE_MAX_CHARS]


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def send_command(proc: trio.Process, command: str) -> None:
    # The stdin pipe is ours alone and a command is a few bytes: it never blocks.
    if isinstance(proc.stdin, trio.lowlevel.FdStream):
        try:
            os.write(proc.stdin.fileno(), command.encode() + b"\n")
        except OSError:
            pass


def signal_process(proc: trio.Process, sig: int) -> None:
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


async def copy_stderr(stream: trio.abc.ReceiveStream, tail: deque[str], done: trio.Event) -> None:
    """Copy a worker's error output to ours until EOF, keeping its last lines in ``tail``;
    set ``done`` at the end."""
    partial = b""
    try:
        while chunk := await stream.receive_some(65536):
            await trio.to_thread.run_sync(_write_stderr, chunk, abandon_on_cancel=True)
            *lines, partial = (partial + chunk).split(b"\n")
            partial = partial[-STDERR_LINE_MAX_CHARS:]
            tail.extend(_line(b) for b in lines[-STDERR_TAIL_LINES:])
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        if partial:
            tail.append(_line(partial))
        done.set()
        with trio.CancelScope(shield=True):
            await stream.aclose()
