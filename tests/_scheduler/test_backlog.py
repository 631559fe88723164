"""The backlog of calls waiting for a worker, and its warning, as plain objects."""

from __future__ import annotations

import pytest

from actorgrid._scheduler.backlog import Backlog, ClusterPicture, describe_wait
from actorgrid._scheduler.demand import cpus


def test_items_leave_once_for_a_worker_big_enough_in_order() -> None:
    backlog: Backlog[str] = Backlog(10.0)
    backlog.add("t1", 1.0, "task", now=0.0)
    backlog.add("big", 4.0, "actor", now=0.0)
    backlog.add("t2", 1.0, "task", now=1.0)
    backlog.add("half", 0.5, "task", now=2.0)
    assert len(backlog) == 4
    assert backlog.take_fitting(0.25) == []
    assert backlog.take_fitting(1.0) == ["half", "t1", "t2"]
    assert backlog.take_fitting(1.0) == []
    assert dict(backlog.counts()) == {("actor", cpus(4.0)): 1}
    assert backlog.take_fitting(8.0) == ["big"]
    assert len(backlog) == 0 and backlog.since is None and backlog.warning_at() is None


def test_the_warning_is_due_after_the_delay_then_at_doubling_intervals() -> None:
    backlog: Backlog[str] = Backlog(10.0)
    assert not backlog.warning_due(100.0)  # nothing waits
    backlog.add("t", 1.0, "task", now=5.0)
    backlog.add("u", 1.0, "task", now=9.0)  # the oldest wait counts
    assert backlog.warning_at() == 15.0
    assert not backlog.warning_due(14.9)
    assert backlog.warning_due(15.0)
    assert not backlog.warning_due(15.0)  # once per due warning
    assert backlog.warning_at() == 25.0
    assert backlog.warning_due(25.0)
    assert backlog.warning_at() == 45.0
    backlog.take_all()
    backlog.add("v", 1.0, "task", now=50.0)  # a new wait starts over
    assert backlog.warning_at() == 60.0


def test_a_warning_delay_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pending_warning_s"):
        Backlog(0)


def test_the_warning_names_the_count_the_need_and_the_cluster() -> None:
    counts = {("task", 1.0): 3, ("actor", 2.0): 1}
    text = describe_wait(counts, 10.2, ClusterPicture(alive=0))
    assert text.startswith("3 tasks need 1 CPU, 1 actor needs 2 CPUs (waiting 10 s")
    assert "the cluster has 0 alive workers" in text


def test_the_warning_says_why_nothing_fits() -> None:
    big = describe_wait({("task", 8.0): 1}, 10, ClusterPicture(alive=2, largest=1.0))
    assert "1 task needs 8 CPUs" in big
    assert "the largest of the cluster's 2 alive workers has 1 CPU" in big
    assert "lower num_cpus" in big
    suspended = describe_wait({("task", 1.0): 2}, 10, ClusterPicture(alive=0, suspended=2))
    assert "every worker of the cluster (2) is suspended" in suspended
    head = ClusterPicture(alive=2, head_lost="lost the head at 10.0.0.1:6380 (no pulse)")
    lost = describe_wait({("task", 1.0): 2}, 10, head)
    assert lost.endswith("lost the head at 10.0.0.1:6380 (no pulse)")
    assert "alive workers" not in lost


def test_the_warning_shows_crash_loops_with_their_stderr() -> None:
    picture = ClusterPicture(
        alive=0, crash_loops={"ab12cd34": "ImportError: no module named 'numpyy'\n"}
    )
    text = describe_wait({("task", 1.0): 1}, 10, picture)
    assert "all workers of node ab12cd34 are in a crash loop: ImportError: no module" in text
    assert "0 alive workers" not in text  # the crash loop is the reason, not a mystery


def test_cancelled_items_leave_the_backlog_and_its_counts() -> None:
    backlog: Backlog[str] = Backlog(10.0)
    for name, need in (("a", 1.0), ("b", 1.0), ("big", 8.0), ("c", 2.0)):
        backlog.add(name, need, "task", now=0.0)
    assert backlog.remove_where(lambda item: item in ("b", "big")) == ["b", "big"]
    assert len(backlog) == 2
    assert dict(backlog.counts()) == {("task", cpus(1.0)): 1, ("task", cpus(2.0)): 1}
    assert backlog.take_fitting(8.0) == ["a", "c"]
    backlog.add("d", 1.0, "task", now=1.0)
    assert backlog.remove_where(lambda item: True) == ["d"]
    assert backlog.since is None and backlog.warning_at() is None
