"""Lines a child process prints, read with a timeout.

A selector on ``proc.stdout`` followed by ``proc.stdout.readline()`` can wait in vain: when
two lines arrive together, the text wrapper's first read takes both, and the selector then
waits on an empty pipe for the line already in the wrapper's buffer. So lines are read here
off the pipe's file descriptor, and what a read took past the line is kept for the next call.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from typing import Any

# What each process wrote past the line last read from it.
_unread: dict[int, bytes] = {}


def read_line(proc: subprocess.Popen[Any], timeout: float) -> str | None:
    """The next line ``proc`` prints, newline included; "" when its stdout ended first (what
    it wrote last, without a newline, if anything); None if nothing came within ``timeout``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    got = _unread.pop(proc.pid, b"")
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in got:
            if not selector.select(timeout=max(deadline - time.monotonic(), 0)):
                _unread[proc.pid] = got
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            got += chunk
    line, newline, rest = got.partition(b"\n")
    _unread[proc.pid] = rest
    return (line + newline).decode()
