"""The decision whether a dropped link to a worker means its death (_scheduler/relink.py)."""

from __future__ import annotations

from actorgrid._scheduler.relink import DROP_WINDOW_S, MAX_DROPS, Relinks, Verdict

W = "127.0.0.1:4000"


def dropped(relinks: Relinks, now: float = 0.0, **flags: bool) -> Verdict:
    options = {"listed": True, "aborted": False, "stopping": False, **flags}
    return relinks.dropped(W, now, **options)


def test_a_listed_worker_is_redialled_and_its_answer_decides() -> None:
    relinks = Relinks()
    assert dropped(relinks) is Verdict.REDIAL
    assert relinks.redialling(W)
    assert dropped(relinks) is Verdict.GONE  # one redial at a time: the new link dropped too
    assert relinks.redialled(W, True) is Verdict.ALIVE
    assert not relinks.redialling(W)
    assert dropped(relinks, 1.0) is Verdict.REDIAL
    assert relinks.redialled(W, False) is Verdict.GONE


def test_a_worker_the_head_no_longer_lists_an_aborted_link_or_a_stopping_process_is_gone() -> None:
    relinks = Relinks()
    assert dropped(relinks, listed=False) is Verdict.GONE
    assert dropped(relinks, aborted=True) is Verdict.GONE
    assert dropped(relinks, stopping=True) is Verdict.GONE
    assert not relinks.redialling(W)


def test_a_link_that_keeps_dropping_is_the_workers_death_until_the_window_passes() -> None:
    relinks = Relinks()
    for i in range(MAX_DROPS):
        assert dropped(relinks, float(i)) is Verdict.REDIAL
        relinks.redialled(W, True)
    assert dropped(relinks, float(MAX_DROPS)) is Verdict.GONE
    later = MAX_DROPS + DROP_WINDOW_S
    assert dropped(relinks, later) is Verdict.REDIAL
    relinks.redialled(W, True)
    relinks.worker_left(W)
    assert repr(relinks) == "<Relinks redialling=0 recent=0>"
