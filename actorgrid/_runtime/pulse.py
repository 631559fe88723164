"""Pulses on every link, and zombie detection from their absence.

Each process runs one :class:`PulseMonitor`. Every ``interval_s`` it sends a :class:`Pulse`
on each of its open connections and feeds what it heard since the last tick to a
:class:`FailureDetector`. A peer silent for ``ZOMBIE_AFTER_INTERVALS`` intervals is a zombie:
hung, stopped (SIGSTOP) or cut off. Its connection is aborted, which fails or retries the
calls in flight on it, and a result it sends later can never be delivered: the link it would
arrive on is gone (fencing by the receiver).

A process that was itself stalled (SIGSTOP, a blocked loop, swapping) could read nothing while
it was, so the silence it measured then says nothing about its peers: a tick that comes more
than ``STALLED_AFTER_INTERVALS`` intervals late gives every peer a fresh window instead of
condemning them all (a peer that really died meanwhile is found one window later).

The hot path pays one attribute store per received frame (``peer.heard = True``); all the
clock work is here, once per interval, O(open connections).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import trio

from .._protocol.messages import Message, Pulse
from .._scheduler.liveness import ZOMBIE_AFTER_INTERVALS, FailureDetector

__all__ = ["DEFAULT_PULSE_INTERVAL_S", "STALLED_AFTER_INTERVALS", "PulseMonitor", "Pulsed"]

# One second: a zombie is found within about 5 s, which is quick next to how long users wait
# on a hung worker, while a loaded 2-core machine (GC pauses, a CPU-bound thread competing for
# the GIL) stays far from a false alarm. Each pulse is a 12-byte frame per idle link.
DEFAULT_PULSE_INTERVAL_S = 1.0

# A tick this many intervals late means this process was stalled, not its peers.
STALLED_AFTER_INTERVALS = 2

_PULSE = Pulse()


class Pulsed(Protocol):
    """What the monitor needs of a link (``peer.Peer``, which sits above this module)."""

    heard: bool  # set by the link on every frame it reads, cleared here once per interval

    @property
    def closed(self) -> bool: ...

    @property
    def address(self) -> str: ...

    def send(self, message: Message) -> None: ...

    def abort(self, reason: str) -> None: ...

    def __hash__(self) -> int: ...


L = TypeVar("L", bound=Pulsed)


class PulseMonitor(Generic[L]):
    def __init__(self, interval_s: float = DEFAULT_PULSE_INTERVAL_S) -> None:
        if interval_s <= 0:
            raise ValueError(f"pulse_interval must be positive, not {interval_s}")
        self.interval_s = interval_s
        self._detector: FailureDetector[L] = FailureDetector(interval_s)
        self._peers: set[L] = set()
        self.on_zombie: list[Callable[[L, str], None]] = []
        self._last_tick: float | None = None

    def __repr__(self) -> str:
        return f"<PulseMonitor every {self.interval_s:g} s, watching {len(self._peers)}>"

    @property
    def timeout_s(self) -> float:
        return self._detector.timeout_s

    def watch(self, peer: L) -> None:
        """Loop: ``peer`` is connected; expect pulses from it from now on."""
        self._peers.add(peer)
        self._detector.add(peer, trio.current_time())

    def unwatch(self, peer: L) -> None:
        self._peers.discard(peer)
        self._detector.remove(peer)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.interval_s)
            self.tick(trio.current_time())

    def tick(self, now: float) -> None:
        detector = self._detector
        last, self._last_tick = self._last_tick, now
        stalled = last is not None and now - last > STALLED_AFTER_INTERVALS * self.interval_s
        for peer in list(self._peers):
            if peer.closed:
                self.unwatch(peer)
                continue
            if peer.heard or stalled:
                peer.heard = False
                detector.heard(peer, now)
            peer.send(_PULSE)
        for peer in detector.check(now):
            self._peers.discard(peer)
            reason = (
                f"no message or pulse from {peer.address} for more than "
                f"{ZOMBIE_AFTER_INTERVALS} pulse intervals ({self.timeout_s:g} s): the process "
                "is hung, stopped or cut off, and is treated as dead"
            )
            peer.abort(reason)
            for callback in self.on_zombie:
                callback(peer, reason)
