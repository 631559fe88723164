"""The I/O shell of admission.py around a listener: accept with back-off, a deadline and an
eviction scope for each handshake, rejections logged in bounded summaries; and the process's
open-file limit raised as far as it may go.

A :class:`ListenGate` serves one ``serve_tcp_frame_streams`` call (all its listening
sockets). Every decision is the :class:`~.admission.Admission`'s; this module only carries
them out: it cancels evicted handshakes, sleeps the back-off, and writes the log lines.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import trio

from .admission import EVICTED, Admission, ListenLimits

__all__ = ["ListenGate", "open_file_limit", "raise_open_file_limit"]

log = logging.getLogger("actorgrid.transport")

_raised = False


def open_file_limit() -> int | None:
    """This process's soft limit on open files, or None where it is unlimited or unknown."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit, once per process.

    Every cluster process calls it before it listens or dials: each peer and each spawned
    worker holds descriptors, and the common default soft limit (1,024) is far below the hard
    limit most systems allow. Failure is logged, never raised: the limit stays as it was.
    """
    global _raised
    if _raised:
        return
    _raised = True
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard:
            target = hard
            if hard == resource.RLIM_INFINITY:
                # Linux refuses an infinite RLIMIT_NOFILE; its ceiling is fs.nr_open.
                target = _nr_open()
            if soft != resource.RLIM_INFINITY and target > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning(
            "could not raise the open-file limit (%s); this process keeps its current limit, "
            "so a flood of connections fills it sooner: raise `ulimit -n` before starting it",
            exc,
        )


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20


class ListenGate:
    """Admission of the connections of one server, carried out with trio."""

    def __init__(self, limits: ListenLimits) -> None:
        self.limits = limits
        self.admission: Admission[int] = Admission(limits, open_file_limit())
        self._scopes: dict[int, trio.CancelScope] = {}
        self._next_key = 0

    def __repr__(self) -> str:
        return f"<ListenGate {self.admission!r}>"

    async def serve_log(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write each rejection summary when its window is due, until cancelled."""
        task_status.started()
        try:
            while True:
                # A tenth of the interval: a summary is at most that late, for a cheap wakeup.
                await trio.sleep(self.limits.log_interval_s / 10)
                self._log(self.admission.report(trio.current_time()))
        finally:
            self._log(self.admission.report(trio.current_time(), final=True))

    async def accept(self, listener: trio.SocketListener) -> trio.SocketStream:
        """The next connection; a failed accept (out of descriptors, say) backs off and tries
        again, and never raises."""
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                failure = self.admission.accept_failed(exc, trio.current_time())
                self._log(failure.log)
                if failure.evict is not None:
                    self._evict(failure.evict)
                await trio.sleep(failure.delay_s)
                continue
            self.admission.accept_succeeded()
            return stream

    @contextmanager
    def handshake(self, address: str) -> Iterator[trio.CancelScope]:
        """Admit a connection from ``address`` for the length of its handshake.

        The body may be cancelled to make room for a newer connection: then the returned
        scope's ``cancelled_caught`` is set, and the eviction is counted here. Any other
        failure is the caller's to report with :meth:`rejected`.
        """
        key = self._next_key
        self._next_key += 1
        for victim in self.admission.admit(key, address):
            self._evict(victim)
        scope = trio.CancelScope()
        self._scopes[key] = scope
        try:
            with scope:
                yield scope
        finally:
            del self._scopes[key]
            self.admission.done(key)
        if scope.cancelled_caught:
            self.rejected(address, EVICTED, f"{EVICTED} (more than {self.admission.cap} at once)")

    def rejected(self, address: str, reason: str, detail: str) -> None:
        """A connection from ``address`` failed its handshake: count it, log if it is due."""
        self._log(self.admission.rejected(address, reason, detail, trio.current_time()))

    def _evict(self, key: int) -> None:
        scope = self._scopes.get(key)
        if scope is not None:
            scope.cancel(reason="evicted: too many unauthenticated connections")

    @staticmethod
    def _log(lines: Iterable[str]) -> None:
        for line in lines:
            log.warning("%s", line)
