"""When to start a supervised thing again: short backoff after a run, crash-loop backoff
before one, and (only when asked) Erlang-style restart intensity.

A supervisor feeds ``RestartTracker.on_exit(now, ready=...)`` the time each incarnation ended,
and whether it had become ready (a worker: registered with its head) before it ended, and gets
back what to do: ``Restart(delay_s, attempt, crash_loop)`` (wait, then start the next
incarnation) or ``GiveUp(reason, restarts)`` (stop restarting and report the reason).
``on_ready()`` says the current incarnation became ready. Times come from the caller's
monotonic clock; the tracker never reads one.

Two kinds of exit, as Kubernetes tells a killed container from one in CrashLoopBackOff:

- an incarnation that had become ready and then ended was most likely stopped from outside
  (the OOM killer, an operator, a chaos test, a task that crashed its process): it comes back
  with a *short* backoff, ``0`` for the first exit in the window and at most ``backoff_max_s``
  (a few seconds) however often it happens;
- an incarnation that ended before it became ready cannot start (an import error, a failing
  setup, a bad environment): that is a *crash loop*, which backs off exponentially up to
  ``crash_loop_max_s`` (about a minute) and keeps trying, so fixing the cause brings the
  thing back without restarting its supervisor.

Invariants:

- a restart granted at ``t`` is *in the window* at ``now`` while ``now - t < window_s``;
- with ``max_restarts == -1`` (the default) the tracker never gives up; ``0`` gives up on the
  first exit; ``max_restarts >= 1`` (opt-in intensity) never lets a window of ``window_s``
  seconds hold more than ``max_restarts`` granted restarts: the exit that would make it
  ``max_restarts + 1`` is a ``GiveUp``;
- after a ready incarnation, with ``k`` restarts already in the window, the delay is ``0`` for
  ``k == 0`` and ``min(backoff_max_s, backoff_initial_s * backoff_factor ** (k - 1))``
  otherwise, and ``crash_loop`` is ``0``;
- after ``n`` exits in a row before ready (``crash_loop == n``), the delay is
  ``min(crash_loop_max_s, crash_loop_initial_s * backoff_factor ** (n - 1))``; a ready
  incarnation (``on_ready`` or ``on_exit(ready=True)``) ends the loop;
- ``GiveUp`` is final: every later ``on_exit`` returns the same ``GiveUp``;
- memory is bounded: at most ``max_restarts`` timestamps, or for ``-1`` at most as many as it
  takes for the short backoff to reach ``backoff_max_s``.
"""

from __future__ import annotations

import collections
import math

import attrs

__all__ = ["GiveUp", "Restart", "RestartPolicy", "RestartTracker"]


@attrs.frozen
class RestartPolicy:
    """How a worker slot is restarted (``ag.init(worker_restarts=...)``).

    ``max_restarts``: -1 (default) restarts for ever, 0 never restarts, ``N >= 1`` gives up
    after N restarts within ``window_s`` seconds (the slot then stays empty). A worker that
    was ready waits ``0``, then ``backoff_initial_s`` growing by ``backoff_factor`` per
    restart in the window, at most ``backoff_max_s``; one that fails before it is ready is in
    a crash loop and waits ``crash_loop_initial_s`` growing by ``backoff_factor`` per failure
    in a row, at most ``crash_loop_max_s``.
    """

    max_restarts: int = -1
    window_s: float = 5.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0
    backoff_factor: float = 2.0
    crash_loop_initial_s: float = 0.5
    crash_loop_max_s: float = 60.0

    def __attrs_post_init__(self) -> None:
        if self.max_restarts < -1:
            raise ValueError(
                f"max_restarts={self.max_restarts} is not a restart count; use a number >= 1 "
                "to allow that many restarts per window, 0 to never restart, or -1 to always "
                "restart"
            )
        if math.isnan(self.window_s) or self.window_s <= 0:
            raise ValueError(
                f"window_s={self.window_s} must be a positive number of seconds: it is the "
                "span in which at most max_restarts restarts are allowed (e.g. window_s=5.0)"
            )
        for field in (
            "backoff_initial_s",
            "backoff_max_s",
            "crash_loop_initial_s",
            "crash_loop_max_s",
        ):
            value = getattr(self, field)
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"{field}={value} must be a finite number of seconds >= 0; use 0 for no "
                    "backoff delay"
                )
        if not math.isfinite(self.backoff_factor) or self.backoff_factor < 1:
            raise ValueError(
                f"backoff_factor={self.backoff_factor} must be a finite number >= 1: each "
                "restart in a crash loop waits that many times longer than the one before "
                "(1 keeps the delay constant)"
            )

    def backoff_s(self, k: int) -> float:
        """The delay before a restart when ``k`` restarts are already in the window."""
        if k <= 0:
            return 0.0
        return min(self.backoff_max_s, _grown(self.backoff_initial_s, self.backoff_factor, k - 1))

    def crash_loop_backoff_s(self, n: int) -> float:
        """The delay before a restart after ``n`` exits in a row before ready."""
        if n <= 0:
            return 0.0
        return min(
            self.crash_loop_max_s, _grown(self.crash_loop_initial_s, self.backoff_factor, n - 1)
        )


def _grown(initial: float, factor: float, n: int) -> float:
    """``initial * factor ** n``, or infinity where that overflows a float."""
    try:
        return initial * factor**n
    except OverflowError:
        return math.inf


def _backoff_saturates_at(policy: RestartPolicy) -> int:
    """The least ``k >= 1`` from which ``policy.backoff_s(k)`` is ``backoff_max_s`` for good.

    Past it the count of restarts in the window no longer changes the delay, so a tracker that
    never gives up need not remember more of them than this.
    """
    initial, cap, factor = policy.backoff_initial_s, policy.backoff_max_s, policy.backoff_factor
    if initial == 0 or factor == 1 or initial >= cap:
        return 1
    k = 1 + math.ceil((math.log(cap) - math.log(initial)) / math.log(factor))
    while _grown(initial, factor, k - 1) < cap:
        k += 1
    while k > 1 and _grown(initial, factor, k - 2) >= cap:
        k -= 1
    return k


@attrs.frozen
class Restart:
    """Wait ``delay_s``, then start the next incarnation."""

    delay_s: float
    attempt: int  # 1 for the first restart ever, 2 for the second, ...: the total count
    crash_loop: int = 0  # exits in a row before ready; 0 when the last run had been ready


@attrs.frozen
class GiveUp:
    """Stop restarting; ``reason`` says why, for the error the supervisor reports."""

    reason: str
    restarts: int  # restarts granted before giving up


class RestartTracker:
    """``on_exit(now, ready=...) -> Restart | GiveUp`` for one supervised thing (a worker
    slot)."""

    def __init__(self, policy: RestartPolicy) -> None:
        self._policy = policy
        # Times of the restarts granted that may still be in the window, oldest first; never
        # longer than ``self._keep``.
        self._recent: collections.deque[float] = collections.deque()
        self._keep = (
            policy.max_restarts if policy.max_restarts >= 0 else _backoff_saturates_at(policy)
        )
        self._restarts = 0
        self._crash_loop = 0  # exits in a row before ready
        self._last_exit_at = -math.inf
        self._gave_up: GiveUp | None = None

    def __repr__(self) -> str:
        state = "given up" if self._gave_up is not None else f"{len(self._recent)} in window"
        if self._crash_loop:
            state += f" crash loop {self._crash_loop}"
        return f"<RestartTracker restarts={self._restarts} {state} policy={self._policy!r}>"

    @property
    def policy(self) -> RestartPolicy:
        return self._policy

    @property
    def restarts(self) -> int:
        """Total restarts granted."""
        return self._restarts

    @property
    def given_up(self) -> bool:
        """True once ``on_exit`` has returned a ``GiveUp``; it then always does."""
        return self._gave_up is not None

    @property
    def crash_loop(self) -> int:
        """Exits in a row before ready, since the last ready incarnation (0: not looping)."""
        return self._crash_loop

    def on_ready(self) -> None:
        """The current incarnation became ready: whatever crash loop there was is over."""
        self._crash_loop = 0

    def on_exit(self, now: float, *, ready: bool = True) -> Restart | GiveUp:
        """The current incarnation ended at ``now``, after becoming ready or before: restart
        it or not."""
        if now < self._last_exit_at:
            raise ValueError(
                f"on_exit(now={now}) is earlier than the previous exit at "
                f"{self._last_exit_at}; pass times from one monotonic clock "
                "(e.g. trio.current_time())"
            )
        self._last_exit_at = now
        if self._gave_up is not None:
            return self._gave_up
        policy = self._policy
        while self._recent and now - self._recent[0] >= policy.window_s:
            self._recent.popleft()
        in_window = len(self._recent)
        if policy.max_restarts == 0:
            return self._give_up(
                "restarts are disabled (max_restarts=0), so the first exit is final; "
                "set max_restarts >= 1 or -1 to restart it"
            )
        if 0 < policy.max_restarts <= in_window:
            return self._give_up(
                f"{in_window + 1} exits within {policy.window_s:g} s exceeds "
                f"max_restarts={policy.max_restarts}; it is crashing in a loop, so fix the "
                "cause of the exits (see the errors above), or allow more with a larger "
                "max_restarts or a shorter window_s"
            )
        if ready:
            self._crash_loop = 0
            delay_s = policy.backoff_s(in_window)
        else:
            self._crash_loop += 1
            delay_s = policy.crash_loop_backoff_s(self._crash_loop)
        self._recent.append(now)
        if len(self._recent) > self._keep:
            self._recent.popleft()
        self._restarts += 1
        return Restart(delay_s, self._restarts, self._crash_loop)

    def _give_up(self, reason: str) -> GiveUp:
        self._gave_up = GiveUp(reason, self._restarts)
        return self._gave_up
