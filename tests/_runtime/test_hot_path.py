"""The hot path's shortcuts keep the worker's books right: an actor call answered straight
from its pool thread (no wake of the worker's loop for its bookkeeping) is over as far as
listings, cancels and shutdown are concerned."""

from __future__ import annotations

import actorgrid as ag


@ag.remote
class Echo:
    def echo(self, x: int) -> int:
        return x

    def spawn(self) -> ag.ObjectRef[int]:
        return child.remote()


@ag.remote
def child() -> int:
    return 7


def test_lone_calls_answered_from_their_threads_are_not_listed_as_running(cluster) -> None:
    echo = Echo.remote()
    refs = []
    for i in range(20):  # one at a time: each is the last of its burst, answered directly
        ref = echo.echo.remote(i)
        assert ag.get(ref, timeout=30) == i
        refs.append(ref)
    ids = {ref.id for ref in refs}
    assert [t for t in cluster.status().tasks if t.task_id in ids] == []


def test_a_cancel_after_the_answer_leaves_the_calls_children_running(cluster) -> None:
    echo = Echo.remote()
    call = echo.spawn.remote()
    inner = ag.get(call, timeout=30)
    ag.cancel(call)  # answered already: nothing to cancel, and its child is not its to end
    assert ag.get(inner, timeout=30) == 7
