"""The ledgers of cross-node pulls (``_scheduler/pulls.py``): who the holder tells when a value
is freed, forgetting pullers whose link closed, and frees that overtake their pull."""

from __future__ import annotations

from actorgrid._scheduler.pulls import Pullers, PullsUnderWay


def test_a_freed_value_is_told_to_every_link_that_pulled_it_once() -> None:
    pullers: Pullers[str] = Pullers()
    assert pullers.pulled("x", "b1") is True  # a new link: the caller watches it close
    assert pullers.pulled("x", "b2") is True
    assert pullers.pulled("y", "b1") is False  # known already
    assert "x" in pullers and len(pullers) == 2
    assert pullers.freed("x") == {"b1", "b2"}
    assert pullers.freed("x") == set(), "a second free tells nobody"
    assert "x" not in pullers and pullers.freed("y") == {"b1"}


def test_a_closed_link_is_forgotten_with_what_it_alone_pulled() -> None:
    pullers: Pullers[str] = Pullers()
    pullers.pulled("x", "b1")
    pullers.pulled("y", "b1")
    pullers.pulled("y", "b2")
    assert pullers.links == 2
    assert pullers.gone("b1") == ["x"], "y is still pulled by b2; x by nobody"
    assert pullers.links == 1 and "x" not in pullers
    assert pullers.freed("y") == {"b2"}, "a closed link is never told again"
    assert pullers.gone("b1") == [] and pullers.gone("b2") == []
    assert pullers.links == 0 and len(pullers) == 0
    assert pullers.pulled("z", "b1") is True, "a link seen again is watched again"


def test_a_free_that_overtakes_its_pull_frees_the_copy_once_made() -> None:
    pulls = PullsUnderWay()
    assert pulls.freed("x") is False, "no pull under way: nothing to remember"
    pulls.started("x")
    assert "x" in pulls
    assert pulls.freed("x") is True
    assert pulls.finished("x") is True, "the copy the pull made is freed at once"
    assert "x" not in pulls
    pulls.started("x")
    assert pulls.finished("x") is False, "a pull nobody freed keeps its copy"
    assert pulls.finished("never") is False
