"""The head's record of which processes cached a name (cachers.py): each cacher is told once
when the name goes, a process that leaves is no longer told anything, and the table holds
nothing for a name nobody caches, however many processes come and go."""

from __future__ import annotations

from actorgrid._scheduler.cachers import NameCachers


class _Proc:
    """A process as the head sees it: compared by identity, like its Peer."""


def test_each_cacher_is_told_once_and_a_process_that_left_is_not_told() -> None:
    procs = [_Proc() for _ in range(8)]
    cachers: NameCachers[_Proc, int] = NameCachers()
    for name in range(100):
        for p in procs[: name % 8 + 1]:  # 1 to 8 cachers: bare, tuple and set
            cachers.cache(p, name)
            cachers.cache(p, name)  # told twice: recorded once
    assert cachers.forget(0) == {procs[0]}
    assert cachers.forget(5) == set(procs[:6])
    assert cachers.forget(5) == set()  # already forgotten
    cachers.gone(procs[1])  # a process leaves: it is no longer told of any name
    assert cachers.forget(1) == {procs[0]}
    assert cachers.forget(7) == set(procs[:8]) - {procs[1]}
    cachers.gone(procs[0])
    assert cachers.forget(8) == set()  # its only cacher left: nothing kept for it
    assert cachers.forget(15) == set(procs[2:8])
    for p in procs[2:]:
        cachers.gone(p)
    assert len(cachers) == 0
    cachers.cache(procs[3], 200)  # a name cached again after its cachers left
    assert cachers.cached_by(200, procs[3]) and not cachers.cached_by(200, procs[2])
    assert cachers.forget(200) == {procs[3]}
