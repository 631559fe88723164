"""Admission of unauthenticated connections, without sockets: eviction, accept back-off and
bounded rejection logs. The live listener is in test_tcp.py and tests/_node/test_hardening_listen.py.
"""

from __future__ import annotations

import errno
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actorgrid._transport.admission import (
    ACCEPT_BACKOFF_MAX_S,
    ACCEPT_BACKOFF_MIN_S,
    MAX_ADDRESSES_LOGGED,
    MAX_LINES_AT_ONCE,
    Admission,
    ListenLimits,
)

LIMITS = ListenLimits(max_unauthenticated=4, log_interval_s=10.0)


def emfile() -> OSError:
    return OSError(errno.EMFILE, "Too many open files")


# --- limits ----------------------------------------------------------------------------------


def test_the_cap_leaves_most_descriptors_to_authenticated_peers() -> None:
    limits = ListenLimits(max_unauthenticated=128)
    assert limits.cap(None) == 128
    assert limits.cap(1 << 20) == 128
    assert limits.cap(1024) == 128
    assert limits.cap(256) == 32
    assert limits.cap(4) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_unauthenticated", 0),
        ("max_unauthenticated", 1.5),
        ("handshake_timeout_s", 0),
        ("handshake_timeout_s", float("inf")),
        ("log_interval_s", -1.0),
    ],
)
def test_limits_that_make_no_sense_are_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"ListenLimits {field}="):
        ListenLimits(**{field: value})


# --- eviction --------------------------------------------------------------------------------


def test_under_the_cap_nobody_is_evicted() -> None:
    admission: Admission[int] = Admission(LIMITS)
    assert [admission.admit(k, "10.0.0.1") for k in range(4)] == [[], [], [], []]
    assert len(admission) == 4


def test_a_full_table_evicts_the_oldest_of_a_single_address() -> None:
    admission: Admission[int] = Admission(LIMITS)
    for k in range(4):
        admission.admit(k, "10.0.0.1")
    assert admission.admit(4, "10.0.0.1") == [0]
    assert admission.admit(5, "10.0.0.1") == [1]
    assert 0 not in admission and 5 in admission
    assert admission.evicted == 2


def test_the_address_holding_most_slots_gives_one_up() -> None:
    admission: Admission[int] = Admission(LIMITS)
    admission.admit(0, "good")  # the oldest of all, but its address holds one slot
    for k in (1, 2, 3):
        admission.admit(k, "flood")
    assert admission.admit(4, "good") == [1]
    # good 2, flood 2: a tie goes to the address whose oldest connection is oldest.
    assert admission.admit(5, "other") == [0]
    assert admission.admit(6, "another") == [2]  # flood holds the most again
    assert [k in admission for k in range(7)] == [False, False, False, True, True, True, True]


def test_done_frees_the_slot_and_is_harmless_twice() -> None:
    admission: Admission[int] = Admission(LIMITS)
    for k in range(4):
        admission.admit(k, "a")
    admission.done(2)
    admission.done(2)
    admission.done(99)
    assert admission.admit(4, "a") == []
    assert len(admission) == 4


class EvictionModel(RuleBasedStateMachine):
    """Random admits and completions against a plain list: the table never exceeds the cap,
    and each victim is the oldest of an address holding the most slots."""

    def __init__(self) -> None:
        super().__init__()
        self.admission: Admission[int] = Admission(ListenLimits(max_unauthenticated=5))
        self.model: list[tuple[int, str]] = []  # oldest first
        self.next_key = 0

    @rule(address=st.sampled_from(["a", "b", "c", "d"]))
    def admit(self, address: str) -> None:
        key = self.next_key
        self.next_key += 1
        victims = self.admission.admit(key, address)
        if len(self.model) < 5:
            assert victims == []
        else:
            (victim,) = victims
            counts = {a: sum(1 for _, x in self.model if x == a) for _, a in self.model}
            most = max(counts.values())
            oldest_of_biggest = next(k for k, a in self.model if counts[a] == most)
            assert victim == oldest_of_biggest
            self.model = [(k, a) for k, a in self.model if k != victim]
        self.model.append((key, address))

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        key, _ = data.draw(st.sampled_from(self.model))
        self.admission.done(key)
        self.model = [(k, a) for k, a in self.model if k != key]

    @invariant()
    def table_matches_the_model(self) -> None:
        assert len(self.admission) == len(self.model) <= 5
        assert all(k in self.admission for k, _ in self.model)


TestEviction = EvictionModel.TestCase


# --- accept() failures -----------------------------------------------------------------------


def test_accept_failures_back_off_exponentially_and_reset_on_success() -> None:
    admission: Admission[int] = Admission(LIMITS)
    delays = [admission.accept_failed(emfile(), now=0.0).delay_s for _ in range(12)]
    assert delays[0] == ACCEPT_BACKOFF_MIN_S
    assert delays[1] == 2 * ACCEPT_BACKOFF_MIN_S
    assert delays[-1] == ACCEPT_BACKOFF_MAX_S
    assert delays == sorted(delays)
    admission.accept_succeeded()
    assert admission.accept_failed(emfile(), now=0.0).delay_s == ACCEPT_BACKOFF_MIN_S


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
def test_running_out_of_descriptors_evicts_the_oldest_handshake(code: int) -> None:
    admission: Admission[int] = Admission(LIMITS)
    admission.admit(7, "a")
    admission.admit(8, "b")
    failure = admission.accept_failed(OSError(code, "out of something"), now=0.0)
    assert failure.evict == 7
    assert 7 not in admission
    assert admission.accept_failed(OSError(code, "again"), now=0.0).evict == 8
    assert admission.accept_failed(OSError(code, "again"), now=0.0).evict is None


def test_other_accept_errors_evict_nobody() -> None:
    admission: Admission[int] = Admission(LIMITS)
    admission.admit(7, "a")
    assert admission.accept_failed(OSError(errno.EINVAL, "odd"), now=0.0).evict is None
    assert 7 in admission


def test_accept_failures_are_logged_once_then_counted() -> None:
    admission: Admission[int] = Admission(LIMITS)
    first = admission.accept_failed(emfile(), now=0.0)
    assert len(first.log) == 1
    assert "accept failed: EMFILE: Too many open files" in first.log[0]
    assert "ulimit -n" in first.log[0]
    assert "carries on" in first.log[0]
    assert all(admission.accept_failed(emfile(), now=1.0).log == () for _ in range(99))
    (summary,) = admission.report(now=10.0)
    assert summary.startswith("accept failed 100 times in the last 10 s: EMFILE")


# --- rejection logs --------------------------------------------------------------------------


def test_the_first_rejection_of_a_kind_is_logged_at_once_with_its_explanation() -> None:
    admission: Admission[int] = Admission(LIMITS)
    lines = admission.rejected("10.0.0.9", "wrong secret", "10.0.0.9:5 failed authentication", 0)
    assert lines == ["rejected a connection from 10.0.0.9: 10.0.0.9:5 failed authentication"]
    assert admission.rejected("10.0.0.9", "wrong secret", "again", 1.0) == []
    # Another kind from the same address is news.
    assert admission.rejected("10.0.0.9", "handshake timeout", "slow", 2.0) != []


def test_a_flood_is_summed_up_with_counts_per_address_and_reason() -> None:
    admission: Admission[int] = Admission(LIMITS)
    for i in range(1235):
        admission.rejected("127.0.0.1", "handshake timeout", "slow", now=i / 1000)
    for _ in range(3):
        admission.rejected("127.0.0.1", "wrong secret", "bad", now=2.0)
    admission.rejected("10.1.1.1", "wrong secret", "bad", now=3.0)
    assert admission.report(now=9.9) == []  # the window is not over yet
    assert admission.report(now=10.0) == [
        "rejected 1,236 more connections from 127.0.0.1 in the last 10 s: "
        "handshake timeout (1,234), wrong secret (2)"
    ]
    assert admission.report(now=20.0) == []  # nothing since
    assert admission.report(now=20.0, final=True) == []
    # A new window: news is logged at once again.
    assert admission.rejected("127.0.0.1", "handshake timeout", "slow", now=30.0) != []
    admission.rejected("127.0.0.1", "handshake timeout", "slow", now=30.5)
    # A listener that stops tells what it counted, however young the window.
    assert admission.report(now=31.0) == []
    assert admission.report(now=31.0, final=True) == [
        "rejected 1 more connection from 127.0.0.1 in the last 1 s: handshake timeout"
    ]


def test_many_addresses_cost_a_bounded_number_of_lines() -> None:
    admission: Admission[int] = Admission(LIMITS)
    at_once = []
    for i in range(5000):
        at_once += admission.rejected(f"10.0.{i // 250}.{i % 250}", "handshake timeout", "x", 1.0)
    summary = admission.report(now=11.0)
    assert len(at_once) == MAX_LINES_AT_ONCE
    assert len(summary) == MAX_ADDRESSES_LOGGED + 1
    assert summary[-1].startswith(
        f"rejected {5000 - MAX_LINES_AT_ONCE - MAX_ADDRESSES_LOGGED:,} connections from more "
        "than 980 other addresses in the last 10 s: handshake timeout"
    )


_COUNT = re.compile(r"^rejected (a|[\d,]+)( more)? connections? from")


@settings(deadline=None, max_examples=200)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "10.0.0.1"]),
            st.sampled_from(["handshake timeout", "wrong secret", "evicted"]),
            st.floats(min_value=0, max_value=5),
        ),
        max_size=300,
    )
)
def test_every_rejection_is_counted_exactly_once_in_few_lines(
    events: list[tuple[str, str, float]],
) -> None:
    admission: Admission[int] = Admission(ListenLimits(log_interval_s=10.0))
    lines = []
    now = 0.0
    for address, reason, step in events:
        now += step
        lines += admission.rejected(address, reason, "detail", now)
        lines += admission.report(now)
    lines += admission.report(now, final=True)
    counted = 0
    for line in lines:
        match = _COUNT.match(line)
        assert match, line
        counted += 1 if match[1] == "a" else int(match[1].replace(",", ""))
    assert counted == len(events)
    # Per window, at most one line at once per (address, reason), plus one summary per
    # address: never one line per rejection once an address repeats itself.
    windows = max(1, int(now // 10.0) + 2)
    assert len(lines) <= windows * (4 * 3 + 4)
