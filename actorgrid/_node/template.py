"""A template process that forks worker processes (Linux), so a worker starts in milliseconds.

A spawned worker pays for a fresh interpreter and for importing the runtime (most of a cold
start). The template pays that once: ``python -m actorgrid._node.templateproc`` imports
everything a worker runs, then forks a worker per request of its node agent. It is started
with the embedded cluster (``run_template``), in parallel with the head and the node agent,
and ``spawn.open_worker_process`` asks it for each base worker while it is there; otherwise
(another platform, a template that died or failed, runtime-env workers) workers are spawned.

The agent and the template talk over a unix SEQPACKET socket pair, one JSON object a message:

- agent -> template: ``{"id", "pulse_fd", "env", "cwd"}`` with four descriptors (SCM_RIGHTS):
  the worker's stdin, stdout, stderr and pulse pipe ends; the worker gets them as 0, 1, 2 and
  ``pulse_fd``, so it sees exactly what a spawned worker sees;
- template -> agent: ``{"id", "pid"}`` (or ``{"id", "error"}``) once it has forked, and
  ``{"exited", "code"}`` when it reaps a worker (``code`` as ``Popen.returncode``: negative
  for a signal). ``ForkedProcess`` stands for such a worker at the agent, as a
  ``trio.Process`` does for a spawned one.

No orphans: a forked worker dies with the template (``PR_SET_PDEATHSIG``, SIGKILL) and the
template exits when its socket reaches EOF, which the kernel gives it when the agent's
process dies however it dies; a worker's stdin reaches EOF then too. Each worker runs in a
session of its own, as a spawned one does, so a Ctrl-C in the terminal reaches the driver only.
"""

from __future__ import annotations

import array
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import trio

from .prestart import take_prestarted, template_supported

__all__ = [
    "ForkedProcess",
    "TemplateError",
    "WorkerTemplate",
    "current_template",
    "run_template",
    "template_supported",
]

log = logging.getLogger("actorgrid.node")

# The longest message either side sends: a fork request carries the worker's environment.
MAX_MESSAGE_BYTES = 1 << 20
# A template that will not exit once its socket is closed is killed after this long.
TEMPLATE_EXIT_S = 2.0

_current: WorkerTemplate | None = None


class TemplateError(RuntimeError):
    """The template process could not fork a worker (it died, or the fork failed)."""


def current_template() -> WorkerTemplate | None:
    """The template this process's node agent forks its workers from, if one is running."""
    return _current if _current is not None and _current.alive else None


class ForkedProcess:
    """A worker forked by the template, seen from its node agent: what ``trio.Process`` offers
    the agent (``pid``, ``returncode``, ``wait``, the three pipes), its exit reported by the
    template, which is its parent and reaps it."""

    def __init__(
        self,
        pid: int,
        stdin: trio.lowlevel.FdStream,
        stdout: trio.lowlevel.FdStream,
        stderr: trio.lowlevel.FdStream,
    ) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._exited = trio.Event()

    def __repr__(self) -> str:
        return f"<ForkedProcess pid={self.pid} returncode={self.returncode}>"

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def _exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set()


class _Waiting:
    """A fork request in flight: the agent's ends of the new worker's pipes, then its
    process or the template's error."""

    __slots__ = ("done", "error", "fds", "proc")

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds
        self.done = trio.Event()
        self.proc: ForkedProcess | None = None
        self.error = "the worker template process is gone"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class _Adopted:
    """A template process that ``prestart.py`` started with ``subprocess`` before Trio ran,
    seen as ``WorkerTemplate`` sees a ``trio.Process``: ``pid``, ``returncode``, ``kill``
    and an async ``wait`` (on a pidfd: the kernel says when it exits, no polling)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def kill(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()

    async def wait(self) -> int:
        if self._popen.poll() is None:
            pidfd = os.pidfd_open(self.pid)
            try:
                await trio.lowlevel.wait_readable(pidfd)
            finally:
                os.close(pidfd)
        return self._popen.wait()


class WorkerTemplate:
    """The agent's end of a template process: ``fork`` asks it for a worker."""

    def __init__(self, proc: trio.Process | _Adopted, sock: trio.socket.SocketType) -> None:
        self._proc = proc
        self._sock = sock
        self._ids = itertools.count()
        self._waiting: dict[int, _Waiting] = {}
        self._abandoned: set[int] = set()
        self._live: dict[int, ForkedProcess] = {}
        self.alive = True
        self.forked = 0

    def __repr__(self) -> str:
        state = "alive" if self.alive else "gone"
        return f"<WorkerTemplate pid={self._proc.pid} {state} forked={self.forked}>"

    async def fork(self, pulse_fd: int, env: dict[str, str]) -> ForkedProcess:
        """A new worker with ``pulse_fd`` (the write end of its pulse pipe) and ``env``."""
        if not self.alive:
            raise TemplateError("the worker template process is gone")
        rid = next(self._ids)
        pipes = [os.pipe() for _ in range(3)]  # stdin, stdout, stderr
        ours = [pipes[0][1], pipes[1][0], pipes[2][0]]
        theirs = [pipes[0][0], pipes[1][1], pipes[2][1], pulse_fd]
        waiting = _Waiting(ours)
        self._waiting[rid] = waiting
        try:
            request = {"id": rid, "pulse_fd": pulse_fd, "env": env, "cwd": os.getcwd()}
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", theirs))]
            try:
                await self._sock.sendmsg([json.dumps(request).encode()], rights)
            except OSError as exc:
                raise TemplateError(f"could not reach the worker template: {exc}") from exc
            finally:
                for fd in theirs[:3]:  # the template holds its own copies now
                    os.close(fd)
            await waiting.done.wait()
        except BaseException:
            if self._waiting.pop(rid, None) is not None:
                self._abandoned.add(rid)  # a worker forked for it anyway is killed
                for fd in ours:
                    os.close(fd)
            elif waiting.proc is not None:  # forked, but its caller is gone
                waiting.proc.kill()
                for stream in (waiting.proc.stdin, waiting.proc.stdout, waiting.proc.stderr):
                    stream.close()
            raise
        if waiting.proc is None:
            raise TemplateError(waiting.error)
        self.forked += 1
        return waiting.proc

    def _on_message(self, msg: dict[str, Any]) -> None:
        if "exited" in msg:
            proc = self._live.pop(int(msg["exited"]), None)
            if proc is not None:
                proc._exit(int(msg["code"]))
            return
        rid = int(msg["id"])
        waiting = self._waiting.pop(rid, None)
        if waiting is None:
            if "pid" in msg and rid in self._abandoned:
                self._abandoned.discard(rid)
                _kill(int(msg["pid"]))
            return
        if "pid" in msg:
            stdin, stdout, stderr = (trio.lowlevel.FdStream(fd) for fd in waiting.fds)
            waiting.proc = self._live[int(msg["pid"])] = ForkedProcess(
                int(msg["pid"]), stdin, stdout, stderr
            )
        else:
            waiting.error = str(msg.get("error", waiting.error))
            for fd in waiting.fds:
                os.close(fd)
        waiting.done.set()

    async def serve(self) -> None:
        """Read the template's replies and exit reports until it goes; then every worker it
        had is dead too (PR_SET_PDEATHSIG), and is reported so."""
        try:
            while True:
                data = await self._sock.recv(MAX_MESSAGE_BYTES)
                if not data:
                    return
                self._on_message(json.loads(data))
        except OSError:
            return
        finally:
            self.alive = False
            for waiting in self._waiting.values():
                for fd in waiting.fds:
                    os.close(fd)
                waiting.done.set()
            self._waiting.clear()
            for proc in self._live.values():
                proc._exit(-signal.SIGKILL)
            self._live.clear()

    async def aclose(self) -> None:
        """Close the socket (the template exits at its EOF) and reap the template."""
        self.alive = False
        self._sock.close()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(TEMPLATE_EXIT_S):
                await self._proc.wait()
            if self._proc.returncode is None:
                self._proc.kill()
                await self._proc.wait()


async def run_template(
    env: dict[str, str],
    *,
    task_status: trio.TaskStatus[WorkerTemplate | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Start a template process (with ``env``, the workers' environment) and make it this
    process's ``current_template`` until cancelled; started is None (and nothing runs) where
    templates are not supported or it could not be started."""
    global _current
    if not template_supported() or _current is not None:
        task_status.started(None)
        return
    prestarted = take_prestarted()  # ag.init started one before it imported the runtime
    if prestarted is not None:
        template = WorkerTemplate(
            _Adopted(prestarted[0]), trio.socket.from_stdlib_socket(prestarted[1])
        )
    else:
        started = await _start_template(env)
        if started is None:
            task_status.started(None)
            return
        template = started
    _current = template
    try:
        task_status.started(template)
        await template.serve()
        await trio.sleep_forever()  # gone early: workers are spawned from now on
    finally:
        if _current is template:
            _current = None
        await template.aclose()


async def _start_template(env: dict[str, str]) -> WorkerTemplate | None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "actorgrid._node.templateproc", str(theirs.fileno())],
            stdin=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),),
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        ours.close()
        log.warning("could not start the worker template (workers are spawned): %s", exc)
        return None
    finally:
        theirs.close()
    return WorkerTemplate(proc, trio.socket.from_stdlib_socket(ours))
