"""The template process: ``python -m actorgrid._node.templateproc FD`` (see template.py).

Importing this module imports everything a worker runs (``worker``), once, and what a
worker would import at its first connection (``encodings.idna``: trio encodes host names
with it), so that forked workers share those modules instead of each loading them; it also
builds the codec's hooks of the messages every worker exchanges when it joins and at its first
name lookup (``WORKER_MESSAGES``), which each worker otherwise built on their first use: ~0.7
ms for a lookup's two, up to 9 ms on a loaded machine, in the first send of a ring by name. ``main``
then forks a worker per request read from the socket ``FD`` and reports each one's pid, and each
exit it reaps, until the socket reaches EOF (its node agent is gone): then it exits, and its
workers die with it (each asked for SIGKILL at its parent's death, ``PR_SET_PDEATHSIG``).

A forked child takes its descriptors (stdin, stdout, stderr, the pulse pipe at the number its
agent gave), environment and working directory from the request, so it runs exactly as a
spawned worker would, then runs ``worker.main``. The template holds no threads and no Trio
loop, so forking it is safe.
"""

from __future__ import annotations

import ctypes
import encodings.idna  # noqa: F401  (see the module docstring)
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import Any

from .._protocol import codec
from .._protocol import messages as m
from . import worker
from .template import MAX_MESSAGE_BYTES

__all__ = ["main"]

PR_SET_PDEATHSIG = 1

# Messages every worker encodes or decodes when it joins and at its first lookup by name.
WORKER_MESSAGES = (
    m.Ack,
    m.Hello,
    m.LookupNames,
    m.Membership,
    m.NamesFound,
    m.RegisterWorker,
    m.SubscribeMembership,
    m.WorkerJoined,
)
codec.prepare(*WORKER_MESSAGES)


def _become_worker(fds: list[int], request: dict[str, Any], start_env: dict[str, str]) -> None:
    """In the forked child: the worker's descriptors in place, then the worker's main."""
    pulse_fd = int(request["pulse_fd"])
    # Out of the way of 0-2 and pulse_fd first: a received descriptor may hold either number.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(pulse_fd + 1, 3)) for fd in fds]
    for fd in fds:
        os.close(fd)
    for target, fd in zip((0, 1, 2, pulse_fd), high, strict=True):
        os.dup2(fd, target)  # inheritable, as in a spawned worker
        os.close(fd)
    env = dict(request["env"])
    os.environ.clear()
    os.environ.update(env)
    cwd = str(request["cwd"])
    if cwd != os.getcwd():
        os.chdir(cwd)
        sys.path[0] = cwd  # `python -m` puts its start directory first
    if env.get("PYTHONPATH") != start_env.get("PYTHONPATH"):  # changed since the template began
        sys.path[1:1] = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    worker.main()


def _child(
    fds: list[int], request: dict[str, Any], start_env: dict[str, str], own: list[Any], parent: int
) -> None:
    """In the forked child: never returns. ``own`` is what the template holds (its socket,
    selector and wake-up pipe), closed here; the rest is the worker's."""
    try:
        os.setsid()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the template died before the line above
            return
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for thing in own:
            if isinstance(thing, int):
                os.close(thing)
            else:
                thing.close()
        _become_worker(fds, request, start_env)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(1)


def main(fd: int) -> None:
    """The template: import what a worker runs, then fork one per request until EOF."""
    # No gc.freeze() before forking, tempting as shared pages are: a worker whose collector
    # skipped what the template had made kept objects alive past their lease
    # (tests/_runtime/test_owner_lease.py failed with it).
    start_env = dict(os.environ)
    sock = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    me = os.getpid()
    try:
        _serve(sock, selector, wake_r, wake_w, start_env, me)
    finally:  # EOF: its agent is gone; the socket closed, not left to the collector
        selector.close()
        sock.close()


def _serve(
    sock: socket.socket,
    selector: selectors.BaseSelector,
    wake_r: int,
    wake_w: int,
    start_env: dict[str, str],
    me: int,
) -> None:
    """Fork a worker per request read from ``sock``, reporting pids and exits, until EOF."""

    def send(msg: dict[str, Any]) -> None:
        try:
            sock.send(json.dumps(msg).encode())
        except OSError:
            pass

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            send({"exited": pid, "code": os.waitstatus_to_exitcode(status)})

    while True:
        for key, _ in selector.select():
            if key.fileobj == wake_r:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                reap()
                continue
            try:
                data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE_BYTES, 4)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                return
            if not data:
                return  # the agent is gone: exiting takes the workers along (PDEATHSIG)
            request = json.loads(data)
            try:
                pid = os.fork()
            except OSError as exc:
                send({"id": request["id"], "error": f"fork failed: {exc}"})
            else:
                if pid == 0:
                    _child(fds, request, start_env, [selector, sock, wake_r, wake_w], me)
                send({"id": request["id"], "pid": pid})
            for fd in fds:
                os.close(fd)


if __name__ == "__main__":
    main(int(sys.argv[1]))
