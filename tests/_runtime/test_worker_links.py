"""Links between the workers of a node, opened when they start (membership.py,
link_node_workers): the first message from one to the other waits for no connection."""

from __future__ import annotations

import pytest

import actorgrid as ag

pytestmark = pytest.mark.usefixtures("cluster")  # 2 workers, on one node


async def links_to_siblings() -> tuple[str, list[tuple[str, bool]]]:
    """On a worker: its address, and its links to the other workers of its node (address,
    still open), once it knows of them all (an event per membership change, no poll)."""
    from actorgrid._runtime.core import current_runtime

    rt = current_runtime()
    while True:
        siblings = [w.address for w in rt.placement.workers.values() if w.address != rt.address]
        if siblings and all(a in rt.peers for a in siblings):
            return rt.address, [(a, not rt.peers[a].closed) for a in siblings]
        await rt.membership_changed.wait()


def test_the_workers_of_a_node_link_to_each_other_before_any_message_between_them():
    # Nothing has passed between the two workers yet: without the links opened at start,
    # neither has one to the other, and each call below waits until its timeout.
    found = ag.run_on_each_worker(links_to_siblings, timeout=30)
    assert len(found) == 2
    (a, a_links), (b, b_links) = found.values()
    assert a_links == [(b, True)]
    assert b_links == [(a, True)]
