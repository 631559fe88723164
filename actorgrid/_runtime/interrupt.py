"""Raising KeyboardInterrupt inside sync user code running on a pool thread.

A sync task or sync actor method runs on a pool thread. To cancel it while it runs (``ag.cancel``,
a driver's Ctrl-C, a worker stopping) the runtime raises ``KeyboardInterrupt`` in that thread
with ``PyThreadState_SetAsyncExc``: a CPU-bound Python loop sees it at its next bytecode, as
it would see a Ctrl-C. Code blocked inside C (``time.sleep``, a long numpy call) sees it only
when it returns to Python, which is why the caller also keeps a grace timer and kills the
worker process when user code outlives it.

Invariant: an interrupt is raised only into a thread while it runs the very item it was meant
for. ``Running.run`` publishes its thread under the item's own lock before user code starts
and retracts it, clearing any interrupt still pending, under the same lock after user code
ends; an interrupt that lands between the two is caught inside ``run`` and reported as the
outcome. The lock is per item, so concurrent calls on different threads share nothing.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Running"]

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class Running:
    """A slot for the sync user call of one task or actor call, so it can be interrupted."""

    __slots__ = ("_lock", "_thread", "interrupted")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: int | None = None
        self.interrupted = False

    @property
    def running(self) -> bool:
        return self._thread is not None

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """Call ``fn``; ``(True, value)`` or ``(False, exception)``. Never raises."""
        try:
            try:
                with self._lock:
                    if self.interrupted:
                        raise KeyboardInterrupt("interrupted before it started")
                    self._thread = threading.get_ident()
                return True, fn(*args, **kwargs)
            finally:
                with self._lock:
                    if self._thread is not None and self.interrupted:
                        _set_async_exc(self._thread, ctypes.py_object())  # clear a pending one
                    self._thread = None
        except BaseException as exc:  # user code may raise anything; it is the outcome
            return False, exc

    def interrupt(self) -> bool:
        """Any thread: raise KeyboardInterrupt in the user code now running, once.

        True if user code was running and was interrupted; later calls do nothing.
        """
        with self._lock:
            if self.interrupted:
                return False
            self.interrupted = True
            thread = self._thread
            if thread is None:
                return False
            return bool(_set_async_exc(thread, ctypes.py_object(KeyboardInterrupt)))
