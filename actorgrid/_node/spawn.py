"""Starting a worker process, and the pipes between it and its node agent.

- ``open_worker_process(pulse_fd)``: a worker forked by the template process when one runs
  (``template.py``: milliseconds instead of an interpreter start and the runtime's imports),
  else ``python -m actorgrid._node.worker`` spawned; either way in a session of its
  own, with its stdin, stdout and stderr piped to the agent, the write end of its pulse pipe, and the
  agent's environment *without* the cluster secret (``SECRET_ENV_VARS``): a worker gets the
  secret on stdin only, never in its environment or on its command line. Tests replace this
  function (by module attribute) to make workers that fail or die as they start.
- The pulse pipe carries ``PULSE_BYTE`` every pulse interval, ``READY_BYTE`` once the worker
  has registered with its head.
- The output pipes are read by ``output.py`` (log files, lines for the drivers, the last
  lines of stderr kept for crash-loop reports, STDERR_TAIL_LINES of them).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import trio

from .prestart import SECRET_ENV_VARS as SECRET_ENV_VARS
from .prestart import worker_environment as worker_environment
from .template import ForkedProcess, TemplateError, current_template, run_template

__all__ = [
    "PULSE_BYTE",
    "READY_BYTE",
    "SECRET_ENV_VARS",
    "STDERR_TAIL_LINES",
    "WorkerProcess",
    "WorkerStartError",
    "describe_exit",
    "open_env_worker_process",
    "open_worker_process",
    "send_command",
    "serve_template",
    "signal_process",
    "worker_environment",
]

log = logging.getLogger("actorgrid.node")

# A worker process as its node agent sees it: spawned, or forked by the template.
WorkerProcess = trio.Process | ForkedProcess

# On the pulse pipe: a worker writes PULSE_BYTE every pulse, READY_BYTE instead once it has
# registered with the head.
PULSE_BYTE = b"."
READY_BYTE = b"!"
# Lines of each worker's error output kept for reports.
STDERR_TAIL_LINES = 20


class WorkerStartError(RuntimeError):
    """A worker process could not be started, or kept exiting before it joined the cluster."""


async def open_worker_process(pulse_fd: int) -> WorkerProcess:
    """A worker forked by this process's template (``template.py``) if one runs, else
    ``python -m actorgrid._node.worker`` spawned (a module-level function: tests replace it
    to kill a worker at the instant it is spawned)."""
    template = current_template()
    if template is not None:
        try:
            return await template.fork(pulse_fd, worker_environment())
        except TemplateError as exc:
            log.warning("the worker template could not fork a worker (%s); spawning one", exc)
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", "actorgrid._node.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,  # read by the agent: log files, output at the driver
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


async def serve_template(
    *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a template process for this process's workers (``template.py``) until cancelled;
    started with the head, so that it imports while the head and the node agent come up."""
    await run_template(worker_environment(), task_status=task_status)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def send_command(proc: WorkerProcess, command: str) -> None:
    # The stdin pipe is ours alone and a command is a few bytes: it never blocks.
    if isinstance(proc.stdin, trio.lowlevel.FdStream):
        try:
            os.write(proc.stdin.fileno(), command.encode() + b"\n")
        except OSError:
            pass


def signal_process(proc: WorkerProcess, sig: int) -> None:
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
