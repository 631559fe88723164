"""The task tree: which children a cancel of their running parent reaches."""

from __future__ import annotations

from actorgrid._protocol.ids import ObjectId
from actorgrid._scheduler.tasktree import TaskTree

P, Q, A, B, C = (ObjectId(bytes([i]) * 16) for i in range(5))


def test_cancel_hands_back_the_children_still_in_flight() -> None:
    tree = TaskTree()
    tree.started(P, A)
    tree.started(P, B)
    tree.started(Q, C)
    tree.finished(A)
    assert tree.cancel(P) == [B]
    assert tree.cancel(P) == []  # handed back once
    assert len(tree) == 1


def test_a_parent_that_ended_leaves_nothing_to_cancel() -> None:
    tree = TaskTree()
    tree.started(P, A)
    tree.parent_done(P)
    tree.finished(A)  # its result comes later: nothing to forget
    assert tree.cancel(P) == []
    assert len(tree) == 0
    assert repr(tree) == "<TaskTree parents=0 children=0>"
