"""The dashboard's table of bytes per process (``TrafficTable``): bounded under churn, and a
node's totals (Prometheus counters) never go down."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from actorgrid._dashboard.metrics import _traffic_samples
from actorgrid._protocol.ids import NodeId
from actorgrid._scheduler.traffic import OTHER_HOST, ProcessKey, TrafficTable

A, B = NodeId(b"a" * 16), NodeId(b"b" * 16)


def _totals(table: TrafficTable) -> Counter[NodeId | None]:
    sent: Counter[NodeId | None] = Counter()
    for (node, _host, _pid), (out, _into) in table.rows().items():
        sent[node] += out
    return sent


def test_a_worker_that_exits_leaves_no_row_and_its_bytes_stay_with_its_node() -> None:
    table = TrafficTable()
    table.report((A, "vm-1", 10), 100, 1000)
    table.report((A, "vm-1", 11), 5, 50)
    table.report((A, "vm-1", 10), 120, 1200)  # a later report replaces the earlier
    table.ended((A, "vm-1", 10))
    table.ended((A, "vm-1", 99))  # never heard of: nothing happens
    assert table.rows() == {(A, "vm-1", 11): (5, 50), (A, OTHER_HOST, None): (120, 1200)}
    sent, received = _traffic_samples(table.rows(), [A.hex()])
    assert (sent[A.hex()], received[A.hex()]) == (125, 1250)


def test_a_hundred_thousand_worker_restarts_keep_one_row_per_live_worker() -> None:
    table = TrafficTable()
    for pid in range(100_000):
        table.report((A, "vm-1", pid), 10, 20)
        if pid % 2:  # each slot's worker dies and the next takes its place
            table.ended((A, "vm-1", pid - 1))
            table.ended((A, "vm-1", pid))
    assert len(table) == 0
    assert table.rows() == {(A, OTHER_HOST, None): (1_000_000, 2_000_000)}


def test_past_the_cap_the_processes_heard_from_least_recently_are_folded() -> None:
    table = TrafficTable(max_rows=8)
    for pid in range(8):
        table.report((A, "vm-1", pid), pid, 0)
    table.report((A, "vm-1", 0), 1000, 0)  # heard from again: the most recent now
    table.report((B, "vm-2", 100), 7, 0)  # the ninth: six are left, the three quietest go
    rows = table.rows()
    assert set(rows) == {
        (A, "vm-1", 4),
        (A, "vm-1", 5),
        (A, "vm-1", 6),
        (A, "vm-1", 7),
        (A, "vm-1", 0),
        (B, "vm-2", 100),
        (A, OTHER_HOST, None),
    }
    assert rows[A, OTHER_HOST, None] == (1 + 2 + 3, 0)
    assert _totals(table) == {A: 1000 + 1 + 2 + 3 + 4 + 5 + 6 + 7, B: 7}


def test_a_node_that_leaves_takes_its_processes_rows() -> None:
    table = TrafficTable()
    table.report((A, "vm-1", 1), 1, 1)
    table.report((A, "vm-1", 2), 2, 2)
    table.report((B, "vm-2", 3), 3, 3)
    table.report((None, "laptop", None), 4, 4)  # a driver
    table.node_ended(A)
    assert table.rows() == {
        (B, "vm-2", 3): (3, 3),
        (None, "laptop", None): (4, 4),
        (A, OTHER_HOST, None): (3, 3),
    }


_keys = st.tuples(st.sampled_from([A, B, None]), st.just("h"), st.integers(0, 30))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("report"), _keys, st.integers(0, 1000)),
            st.tuples(st.just("ended"), _keys, st.just(0)),
        ),
        max_size=80,
    )
)
def test_rows_stay_bounded_and_node_totals_never_go_down(
    steps: list[tuple[str, ProcessKey, int]],
) -> None:
    table = TrafficTable(max_rows=10)
    last: dict[ProcessKey, int] = {}  # a process's counts only grow
    before = _totals(table)
    for op, key, grow in steps:
        if op == "report":
            last[key] = last.get(key, 0) + grow
            table.report(key, last[key], last[key])
        else:
            table.ended(key)
            last.pop(key, None)  # a pid is not reused while the table remembers it ended
        assert len(table) <= 10
        now = _totals(table)
        assert all(now[node] >= before[node] for node in before), (before, now)
        before = now
