"""FailureDetector, pulse-based liveness of many peers, as a plain object.

Worked examples of each rule, a Hypothesis state machine that checks the detector against a
dict of last-heard times (``check`` returns exactly the watched keys silent for more than
``timeout_s``, and never reports a key twice without it being added again), and a toy pulser
on Trio's autojump clock that shows the exact check at which a silent peer is flagged.
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actorgrid._scheduler.liveness import ZOMBIE_AFTER_INTERVALS, FailureDetector

# --- examples ---------------------------------------------------------------------------------


def test_timeout_is_intervals_times_interval() -> None:
    detector = FailureDetector[str](0.5)
    assert detector.timeout_s == 0.5 * ZOMBIE_AFTER_INTERVALS
    assert FailureDetector[str](0.25, max_silent_intervals=2).timeout_s == 0.5


def test_silent_for_exactly_the_timeout_is_alive_and_a_moment_more_is_a_zombie() -> None:
    detector = FailureDetector[str](1.0, max_silent_intervals=2)
    detector.add("a", 10.0)
    assert detector.silent_for("a", 12.0) == 2.0
    assert detector.check(12.0) == []
    assert "a" in detector
    assert detector.check(math.nextafter(12.0, math.inf)) == ["a"]
    assert "a" not in detector
    assert len(detector) == 0


def test_heard_resets_the_silence() -> None:
    detector = FailureDetector[str](1.0, max_silent_intervals=2)
    detector.add("a", 0.0)
    detector.add("b", 0.0)
    detector.heard("a", 1.5)
    assert detector.silent_for("a", 3.0) == 1.5
    assert detector.check(3.0) == ["b"]
    assert detector.check(3.5) == []
    assert detector.check(3.6) == ["a"]


def test_each_zombie_is_reported_once_and_in_the_order_added() -> None:
    detector = FailureDetector[int](1.0, max_silent_intervals=1)
    for key in (3, 1, 2):
        detector.add(key, 0.0)
    assert detector.check(5.0) == [3, 1, 2]
    assert detector.check(6.0) == []
    assert len(detector) == 0


def test_unknown_keys_are_ignored_by_heard_and_remove() -> None:
    detector = FailureDetector[str](1.0)
    detector.heard("ghost", 0.0)
    detector.remove("ghost")
    assert "ghost" not in detector
    assert len(detector) == 0


def test_a_late_frame_does_not_revive_a_reported_zombie() -> None:
    detector = FailureDetector[str](1.0, max_silent_intervals=1)
    detector.add("a", 0.0)
    assert detector.check(2.0) == ["a"]
    detector.heard("a", 2.5)
    assert "a" not in detector
    detector.add("a", 3.0)
    assert "a" in detector
    assert detector.check(4.5) == ["a"]


def test_removed_keys_are_never_reported() -> None:
    detector = FailureDetector[str](1.0, max_silent_intervals=1)
    detector.add("a", 0.0)
    detector.add("b", 0.0)
    detector.remove("a")
    assert detector.check(10.0) == ["b"]


def test_re_adding_a_watched_key_refreshes_it() -> None:
    detector = FailureDetector[str](1.0, max_silent_intervals=1)
    detector.add("a", 0.0)
    detector.add("a", 5.0)
    assert len(detector) == 1
    assert detector.check(5.5) == []


def test_silent_for_an_unknown_key_is_a_key_error_that_says_why() -> None:
    detector = FailureDetector[str](1.0)
    with pytest.raises(KeyError, match="not watched"):
        detector.silent_for("ghost", 0.0)


@pytest.mark.parametrize("interval_s", [0.0, -1.0, math.nan, math.inf])
def test_interval_must_be_positive_and_finite(interval_s: float) -> None:
    with pytest.raises(ValueError, match=r"^interval_s="):
        FailureDetector[str](interval_s)


@pytest.mark.parametrize("intervals", [0, -3])
def test_max_silent_intervals_must_be_at_least_one(intervals: int) -> None:
    with pytest.raises(ValueError, match=r"^max_silent_intervals="):
        FailureDetector[str](1.0, max_silent_intervals=intervals)


def test_repr_shows_state() -> None:
    detector = FailureDetector[str](0.5, max_silent_intervals=4)
    detector.add("a", 0.0)
    assert repr(detector) == "<FailureDetector watching=1 interval_s=0.5 timeout_s=2>"


# --- stateful ---------------------------------------------------------------------------------

KEYS = st.integers(0, 4)


class FailureDetectorMachine(RuleBasedStateMachine):
    """The detector against a dict from each watched key to when it was last heard."""

    def __init__(self) -> None:
        super().__init__()
        self.setup(1.0, ZOMBIE_AFTER_INTERVALS, 0.0)

    def setup(self, interval_s: float, intervals: int, now: float) -> None:
        self.detector = FailureDetector[int](interval_s, intervals)
        self.timeout_s = interval_s * intervals
        self.now = now
        self.last_heard: dict[int, float] = {}
        self.reported_since_added: set[int] = set()

    @initialize(
        interval_s=st.floats(0.001, 10.0),
        intervals=st.integers(1, 6),
        start=st.floats(-1e6, 1e6),
    )
    def choose_detector(self, interval_s: float, intervals: int, start: float) -> None:
        self.setup(interval_s, intervals, start)

    @rule(timeouts=st.one_of(st.just(0.0), st.floats(0.0, 0.5), st.floats(0.0, 3.0)))
    def advance(self, timeouts: float) -> None:
        self.now += timeouts * self.timeout_s

    @rule(key=KEYS)
    def advance_to_the_edge(self, key: int) -> None:
        if key in self.last_heard:
            self.now = max(self.now, self.last_heard[key] + self.timeout_s)

    @rule(key=KEYS)
    def add(self, key: int) -> None:
        self.detector.add(key, self.now)
        self.last_heard[key] = self.now
        self.reported_since_added.discard(key)

    @rule(key=KEYS)
    def heard(self, key: int) -> None:
        self.detector.heard(key, self.now)
        if key in self.last_heard:
            self.last_heard[key] = self.now

    @rule(key=KEYS)
    def remove(self, key: int) -> None:
        self.detector.remove(key)
        self.last_heard.pop(key, None)

    @rule()
    def check(self) -> None:
        zombies = self.detector.check(self.now)
        expected = [k for k, t in self.last_heard.items() if self.now - t > self.timeout_s]
        assert zombies == expected
        assert len(set(zombies)) == len(zombies)
        assert not self.reported_since_added & set(zombies)
        for key in zombies:
            del self.last_heard[key]
        self.reported_since_added.update(zombies)

    @invariant()
    def watches_exactly_the_model(self) -> None:
        assert len(self.detector) == len(self.last_heard)
        for key in range(5):
            assert (key in self.detector) == (key in self.last_heard)
            if key in self.last_heard:
                assert self.detector.silent_for(key, self.now) == self.now - self.last_heard[key]
        assert self.detector.timeout_s == self.timeout_s


TestFailureDetector = FailureDetectorMachine.TestCase
TestFailureDetector.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


# --- under Trio's clock -----------------------------------------------------------------------

INTERVAL_S = 0.2
STOPS_AFTER_PULSES = 5


async def test_a_peer_that_stops_pulsing_is_flagged_at_the_first_check_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    detector = FailureDetector[str](INTERVAL_S)
    t0 = trio.current_time()
    detector.add("steady", t0)
    detector.add("quitter", t0)

    # Ticks are ``t0 + k * INTERVAL_S`` rather than repeated ``sleep(INTERVAL_S)``, so the
    # loops do not drift and a tick lands exactly on 1.0 and 2.0.
    pulsed_at: dict[str, list[float]] = {"steady": [], "quitter": []}

    async def pulse(key: str, pulses: float) -> None:
        k = 0
        while k < pulses:
            k += 1
            await trio.sleep_until(t0 + k * INTERVAL_S)
            detector.heard(key, trio.current_time())
            pulsed_at[key].append(trio.current_time() - t0)

    checks: list[tuple[float, list[str]]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pulse, "steady", math.inf)
        nursery.start_soon(pulse, "quitter", STOPS_AFTER_PULSES)
        while not any(zombies for _, zombies in checks):
            await trio.sleep_until(t0 + (len(checks) + 1) * INTERVAL_S)
            checks.append((trio.current_time() - t0, detector.check(trio.current_time())))
        nursery.cancel_scope.cancel(reason="the quitter was flagged")

    assert detector.timeout_s == 1.0
    assert pulsed_at["quitter"][-1] == 1.0
    # The quitter's last pulse was at 1.0. At the check at 2.0 it has been silent for exactly
    # the timeout, which is still alive; the next check, at 2.2, flags it.
    assert [t for t, _ in checks[9:]] == [2.0, 11 * INTERVAL_S]
    assert all(found == [] for _, found in checks[:-1])
    assert checks[-1][1] == ["quitter"]
    assert checks[-1][0] == pytest.approx(2.2)
    assert "steady" in detector
    assert "quitter" not in detector
