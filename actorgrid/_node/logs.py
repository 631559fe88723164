"""Logging shared by the cluster processes: one line format, rate-limited errors, and
supervised background tasks.

- ``log_format(role)``: every line carries a timestamp, the pid and the role of the process
  (``head``, ``node``, ``worker``, ``driver``), so the lines of many processes merged in one
  terminal or file can be told apart. ``configure_logging(role)`` installs it.
- ``RateLimitedLog``: at most one line per key per interval; the lines held back are counted
  and the count is shown on the next line for that key, so a flood (a failing psutil call on
  every pulse, a peer reconnecting in a loop) costs a few lines, not a full disk.
- ``keep_running(what, fn, errors, ...)``: runs a background task of the head or a node agent so that
  no exception in it can end the process: the exception is logged (rate-limited) and the
  task starts again after a pause. ``trio.Cancelled`` and other ``BaseException`` pass.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import trio

__all__ = [
    "RESTART_DELAY_S",
    "RateLimitedLog",
    "configure_logging",
    "keep_running",
    "log_errors",
    "log_format",
]

# A background task that failed starts again after this pause.
RESTART_DELAY_S = 1.0
# By default, one line per key in this many seconds.
DEFAULT_LOG_INTERVAL_S = 10.0


def log_format(role: str) -> str:
    """The ``logging`` format of an actorgrid process in ``role`` (head, node, worker, ...)."""
    return f"%(asctime)s {role}[%(process)d] %(levelname)s %(name)s: %(message)s"


def configure_logging(
    role: str, level: int = logging.WARNING, stream: TextIO | None = None
) -> None:
    """Log to ``stream`` (stderr) in ``log_format(role)``; for a process's entry point only."""
    logging.basicConfig(level=level, format=log_format(role), stream=stream or sys.stderr)


class RateLimitedLog:
    """``logger`` calls, at most one per key every ``interval_s`` seconds."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = DEFAULT_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        # key -> (time of the last line logged, lines held back since). Keys are a few fixed
        # strings per process (one per kind of failure), so this stays small.
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, key: str, msg: str, *args: Any, exc_info: bool = False) -> bool:
        """Log unless a line for ``key`` was logged less than ``interval_s`` ago; True if
        logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self._interval_s:
            self._last[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            msg += f" ({last[1]} more like this in the last {now - last[0]:.0f} s)"
        self._last[key] = (now, 0)
        self._logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def exception(self, key: str, msg: str, *args: Any) -> bool:
        """An error with the traceback of the exception being handled."""
        return self.log(logging.ERROR, key, msg, *args, exc_info=True)


async def keep_running(
    what: str, fn: Callable[..., Awaitable[object]], errors: RateLimitedLog, *args: Any
) -> None:
    """Run ``fn(*args)`` until it returns; each exception is logged as a failure of ``what``
    and ``fn`` starts again after RESTART_DELAY_S."""
    while True:
        try:
            await fn(*args)
            return
        except Exception:
            errors.exception(what, "%s failed; starting it again in %g s", what, RESTART_DELAY_S)
        await trio.sleep(RESTART_DELAY_S)


async def log_errors(
    what: str, fn: Callable[..., Awaitable[object]], errors: RateLimitedLog, *args: Any
) -> None:
    """Run ``fn(*args)`` once; an exception is logged as a failure of ``what``, not raised
    (a one-off background job that must not end the process that runs it)."""
    try:
        await fn(*args)
    except Exception:
        errors.exception(what, "%s failed", what)
