"""RestartTracker, short backoff after a run, crash-loop backoff before one, and opt-in
Erlang-style restart intensity, as a plain object.

Worked examples of each rule, a Hypothesis state machine that checks the tracker against a
reference model that remembers every restart it granted (so no window of ``window_s`` ever
holds more than ``max_restarts`` of them, and every delay follows the backoff formulas), and
toy supervisors on Trio's autojump clock that show, to the virtual instant, a crash loop given
up under an explicit limit, a default slot killed from outside over and over that never gives
up, and a crash loop that backs off to its cap and ends once the cause is fixed.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actorgrid._scheduler.restart import (
    GiveUp,
    Restart,
    RestartPolicy,
    RestartTracker,
    _backoff_saturates_at,
)

# Delays and times are powers of two and their sums, so the examples compare floats with ==.
BINARY = RestartPolicy(
    max_restarts=3, window_s=4.0, backoff_initial_s=0.25, backoff_max_s=1.5, backoff_factor=2.0
)


def delays(tracker: RestartTracker, exit_times: list[float]) -> list[float]:
    results = [tracker.on_exit(t) for t in exit_times]
    assert all(isinstance(r, Restart) for r in results)
    return [r.delay_s for r in results if isinstance(r, Restart)]


# --- examples ---------------------------------------------------------------------------------


def test_first_restart_is_immediate() -> None:
    tracker = RestartTracker(RestartPolicy())
    assert tracker.on_exit(10.0) == Restart(delay_s=0.0, attempt=1)
    assert tracker.restarts == 1
    assert not tracker.given_up


def test_backoff_doubles_then_caps() -> None:
    tracker = RestartTracker(attrs.evolve(BINARY, max_restarts=-1))
    assert [tracker.on_exit(0.0) for _ in range(7)] == [
        Restart(0.0, 1),
        Restart(0.25, 2),
        Restart(0.5, 3),
        Restart(1.0, 4),
        Restart(1.5, 5),
        Restart(1.5, 6),
        Restart(1.5, 7),
    ]


def test_factor_one_keeps_the_delay_constant() -> None:
    tracker = RestartTracker(attrs.evolve(BINARY, max_restarts=-1, backoff_factor=1.0))
    assert delays(tracker, [0.0] * 4) == [0.0, 0.25, 0.25, 0.25]


def test_gives_up_when_intensity_is_exceeded_within_the_window() -> None:
    tracker = RestartTracker(RestartPolicy(max_restarts=3, window_s=5.0))
    assert [tracker.on_exit(t) for t in (0.0, 1.0, 2.0)] == [
        Restart(0.0, 1),
        Restart(0.05, 2),
        Restart(0.1, 3),
    ]
    result = tracker.on_exit(4.5)
    assert isinstance(result, GiveUp)
    assert result.restarts == 3
    assert result.reason.startswith("4 exits within 5 s exceeds max_restarts=3")
    assert "max_restarts" in result.reason
    assert "window_s" in result.reason
    assert tracker.given_up
    assert tracker.restarts == 3


def test_restarts_are_allowed_again_once_old_exits_leave_the_window() -> None:
    tracker = RestartTracker(BINARY)
    for t in (0.0, 1.0, 2.0):
        assert isinstance(tracker.on_exit(t), Restart)
    # At 4.0 the restart granted at 0.0 is exactly window_s old: out of the window.
    assert tracker.on_exit(4.0) == Restart(0.5, 4)
    inside = RestartTracker(BINARY)
    for t in (0.0, 1.0, 2.0):
        inside.on_exit(t)
    assert isinstance(inside.on_exit(math.nextafter(4.0, 0.0)), GiveUp)


def test_backoff_restarts_from_zero_after_a_quiet_window() -> None:
    tracker = RestartTracker(BINARY)
    assert delays(tracker, [0.0, 0.0, 0.0]) == [0.0, 0.25, 0.5]
    assert tracker.on_exit(100.0) == Restart(0.0, 4)
    assert tracker.on_exit(100.0) == Restart(0.25, 5)


def test_zero_means_never_restart() -> None:
    tracker = RestartTracker(RestartPolicy(max_restarts=0))
    result = tracker.on_exit(0.0)
    assert isinstance(result, GiveUp)
    assert result.restarts == 0
    assert "max_restarts=0" in result.reason
    assert tracker.restarts == 0


def test_minus_one_means_restart_forever_in_bounded_memory() -> None:
    policy = RestartPolicy(max_restarts=-1, window_s=1e9)
    tracker = RestartTracker(policy)
    results = [tracker.on_exit(float(t)) for t in range(10_000)]
    assert all(isinstance(r, Restart) for r in results)
    assert results[-1] == Restart(policy.backoff_max_s, 10_000)
    assert not tracker.given_up
    assert len(tracker._recent) == _backoff_saturates_at(policy) == 7


def test_a_large_window_count_does_not_overflow_the_backoff() -> None:
    policy = RestartPolicy(max_restarts=5_000, window_s=1e9, backoff_factor=10.0)
    tracker = RestartTracker(policy)
    results = [tracker.on_exit(0.0) for _ in range(5_001)]
    assert results[4_999] == Restart(policy.backoff_max_s, 5_000)
    assert isinstance(results[5_000], GiveUp)


def test_given_up_is_sticky() -> None:
    tracker = RestartTracker(attrs.evolve(BINARY, max_restarts=1))
    tracker.on_exit(0.0)
    first = tracker.on_exit(0.5)
    assert isinstance(first, GiveUp)
    for t in (0.5, 10.0, 1e6):
        assert tracker.on_exit(t) is first
    assert tracker.given_up
    assert tracker.restarts == 1


def test_the_default_never_gives_up_on_a_worker_killed_after_it_was_ready() -> None:
    policy = RestartPolicy()
    tracker = RestartTracker(policy)
    # Killed every 200 ms for a minute: always back, never later than backoff_max_s.
    results = [tracker.on_exit(0.2 * i, ready=True) for i in range(300)]
    assert all(isinstance(r, Restart) and r.crash_loop == 0 for r in results)
    assert max(r.delay_s for r in results if isinstance(r, Restart)) == policy.backoff_max_s
    assert not tracker.given_up


def test_exits_before_ready_back_off_to_the_crash_loop_cap() -> None:
    tracker = RestartTracker(RestartPolicy())
    results = [tracker.on_exit(100.0 * i, ready=False) for i in range(9)]
    assert [(r.delay_s, r.crash_loop) for r in results if isinstance(r, Restart)] == [
        (0.5, 1),
        (1.0, 2),
        (2.0, 3),
        (4.0, 4),
        (8.0, 5),
        (16.0, 6),
        (32.0, 7),
        (60.0, 8),
        (60.0, 9),
    ]
    assert tracker.crash_loop == 9
    assert "crash loop 9" in repr(tracker)
    tracker.on_ready()
    assert tracker.crash_loop == 0
    # The next failure before ready starts a new loop from the beginning.
    assert tracker.on_exit(2000.0, ready=False) == Restart(0.5, 10, 1)


def test_a_ready_run_ends_a_crash_loop() -> None:
    tracker = RestartTracker(RestartPolicy())
    tracker.on_exit(0.0, ready=False)
    tracker.on_exit(10.0, ready=False)
    assert tracker.on_exit(20.0, ready=True) == Restart(0.0, 3, 0)
    assert tracker.crash_loop == 0


def test_an_explicit_limit_counts_exits_before_ready_too() -> None:
    tracker = RestartTracker(RestartPolicy(max_restarts=2, window_s=1e9))
    tracker.on_exit(0.0, ready=False)
    tracker.on_exit(1.0, ready=True)
    assert isinstance(tracker.on_exit(2.0, ready=False), GiveUp)


def test_time_going_backwards_is_refused() -> None:
    tracker = RestartTracker(RestartPolicy())
    tracker.on_exit(5.0)
    with pytest.raises(ValueError, match="monotonic clock"):
        tracker.on_exit(4.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_restarts", -2),
        ("window_s", 0.0),
        ("window_s", -1.0),
        ("window_s", math.nan),
        ("backoff_initial_s", -0.1),
        ("backoff_initial_s", math.inf),
        ("backoff_max_s", -1.0),
        ("backoff_max_s", math.nan),
        ("backoff_factor", 0.5),
        ("backoff_factor", math.inf),
        ("crash_loop_initial_s", -1.0),
        ("crash_loop_max_s", math.nan),
    ],
)
def test_policy_validation_names_the_field(field: str, value: float) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=f"^{field}="):
        RestartPolicy(**kwargs)


def test_policy_edge_values_are_accepted() -> None:
    RestartPolicy(max_restarts=-1)
    RestartPolicy(max_restarts=0, window_s=math.inf)
    RestartPolicy(backoff_initial_s=0.0, backoff_max_s=0.0, backoff_factor=1.0)


def test_repr_shows_state() -> None:
    tracker = RestartTracker(RestartPolicy(max_restarts=1))
    tracker.on_exit(0.0)
    assert "restarts=1 1 in window" in repr(tracker)
    tracker.on_exit(0.0)
    assert "given up" in repr(tracker)


# --- stateful ---------------------------------------------------------------------------------

POLICIES = st.builds(
    RestartPolicy,
    max_restarts=st.integers(-1, 5),
    window_s=st.floats(0.01, 10.0),
    backoff_initial_s=st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    backoff_max_s=st.floats(0.0, 5.0),
    backoff_factor=st.one_of(st.just(1.0), st.floats(1.0, 4.0)),
    crash_loop_initial_s=st.floats(0.0, 2.0),
    crash_loop_max_s=st.floats(0.0, 100.0),
)


class RestartMachine(RuleBasedStateMachine):
    """The tracker against a model that keeps every restart it granted, forever."""

    def __init__(self) -> None:
        super().__init__()
        self.setup(RestartPolicy())

    def setup(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.tracker = RestartTracker(policy)
        self.now = 0.0
        self.granted: list[float] = []
        self.gave_up: GiveUp | None = None
        self.failures = 0  # exits in a row before ready

    @initialize(policy=POLICIES, start=st.floats(-1e6, 1e6))
    def choose_policy(self, policy: RestartPolicy, start: float) -> None:
        self.setup(policy)
        self.now = start

    @rule(dt=st.one_of(st.just(0.0), st.floats(0.0, 0.5), st.floats(0.0, 20.0)))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def advance_to_window_edge(self) -> None:
        if self.granted:
            self.now = max(self.now, self.granted[0] + self.policy.window_s)

    @rule()
    def ready(self) -> None:
        self.tracker.on_ready()
        self.failures = 0

    @rule(ready=st.booleans())
    def exit(self, ready: bool) -> None:
        result = self.tracker.on_exit(self.now, ready=ready)
        if self.gave_up is not None:
            assert result == self.gave_up
            return
        policy = self.policy
        k = sum(1 for t in self.granted if self.now - t < policy.window_s)
        if policy.max_restarts == 0 or 0 < policy.max_restarts <= k:
            assert isinstance(result, GiveUp)
            assert result.restarts == len(self.granted)
            self.gave_up = result
            return
        if ready:
            self.failures = 0
            delay = (
                0.0
                if k == 0
                else min(
                    policy.backoff_max_s,
                    policy.backoff_initial_s * policy.backoff_factor ** (k - 1),
                )
            )
        else:
            self.failures += 1
            delay = min(
                policy.crash_loop_max_s,
                policy.crash_loop_initial_s * policy.backoff_factor ** (self.failures - 1),
            )
        assert result == Restart(delay, len(self.granted) + 1, self.failures)
        self.granted.append(self.now)

    @invariant()
    def counts_match(self) -> None:
        assert self.tracker.restarts == len(self.granted)
        assert self.tracker.given_up == (self.gave_up is not None)
        assert self.tracker.crash_loop == self.failures

    @invariant()
    def only_an_explicit_limit_gives_up(self) -> None:
        if self.policy.max_restarts == -1:
            assert self.gave_up is None

    @invariant()
    def no_window_holds_more_than_max_restarts(self) -> None:
        limit = self.policy.max_restarts
        if limit < 0:
            return
        for i, start in enumerate(self.granted):
            in_window = sum(1 for t in self.granted[i:] if t - start < self.policy.window_s)
            assert in_window <= limit

    @invariant()
    def memory_is_bounded(self) -> None:
        limit = self.policy.max_restarts
        bound = limit if limit >= 0 else _backoff_saturates_at(self.policy)
        assert len(self.tracker._recent) <= bound


TestRestartTracker = RestartMachine.TestCase
TestRestartTracker.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


# --- under Trio's clock -----------------------------------------------------------------------

CHILD_LIFETIME_S = 0.125


async def crashing_child() -> None:
    await trio.sleep(CHILD_LIFETIME_S)
    raise RuntimeError("the child crashed")


async def test_toy_supervisor_gives_up_on_a_crash_loop_at_the_exact_instant(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tracker = RestartTracker(
        RestartPolicy(max_restarts=3, window_s=5.0, backoff_initial_s=0.0625, backoff_factor=2.0)
    )
    t0 = trio.current_time()
    started_at: list[float] = []
    decisions: list[Restart | GiveUp] = []
    while not tracker.given_up:
        started_at.append(trio.current_time() - t0)
        with pytest.raises(RuntimeError, match="crashed"):
            await crashing_child()
        decision = tracker.on_exit(trio.current_time())
        decisions.append(decision)
        if isinstance(decision, Restart):
            await trio.sleep(decision.delay_s)
    # Crashes at 0.125, 0.25, 0.4375 and 0.6875: waits of 0, 0.0625 and 0.125 between them.
    assert started_at == [0.0, 0.125, 0.3125, 0.5625]
    assert decisions[:3] == [Restart(0.0, 1), Restart(0.0625, 2), Restart(0.125, 3)]
    assert isinstance(decisions[3], GiveUp)
    assert decisions[3].restarts == 3
    assert trio.current_time() - t0 == 0.6875


async def test_toy_supervisor_never_gives_up_on_a_child_killed_after_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A child that is ready at once and killed 0.2 s later, 100 times in a row, under the
    # default policy: it always comes back, after at most backoff_max_s.
    policy = RestartPolicy()
    tracker = RestartTracker(policy)
    t0 = trio.current_time()
    for _ in range(100):
        tracker.on_ready()
        await trio.sleep(0.2)
        decision = tracker.on_exit(trio.current_time(), ready=True)
        assert isinstance(decision, Restart)
        assert decision.delay_s <= policy.backoff_max_s
        await trio.sleep(decision.delay_s)
    assert not tracker.given_up
    # Exits 0.2 s apart keep 5 s windows full: the backoff reaches its cap and stays there,
    # so 100 runs take at most 100 * (0.2 + 2.0) s.
    assert trio.current_time() - t0 <= 100 * (0.2 + policy.backoff_max_s)


async def test_toy_supervisor_backs_off_a_crash_loop_until_the_cause_is_fixed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tracker = RestartTracker(RestartPolicy())
    fixed_at = 200.0  # the operator fixes the import error at this virtual instant
    t0 = trio.current_time()
    started_at: list[float] = []
    while True:
        started_at.append(trio.current_time() - t0)
        await trio.sleep(0.125)  # the child runs this long, then fails or is ready
        if trio.current_time() - t0 >= fixed_at:
            tracker.on_ready()
            break
        decision = tracker.on_exit(trio.current_time(), ready=False)
        assert isinstance(decision, Restart)
        await trio.sleep(decision.delay_s)
    # Waits of 0.5, 1, 2, ..., 32, then 60 s (the cap): each start 0.125 s after the failure.
    gaps = [b - a for a, b in itertools.pairwise(started_at)]
    assert gaps == [0.125 + d for d in (0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60)]
    assert tracker.crash_loop == 0
    assert not tracker.given_up
