"""The owner keeps what its calls need and lets go of what nobody holds, on a live cluster: a
retried task still finds the objects of its ref arguments after the worker that borrowed
them died."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 2}

pytestmark = pytest.mark.usefixtures("cluster")


@ag.remote(max_retries=1)
def die_once_then_read(refs: list[ag.ObjectRef[bytes]], marker: str) -> int:
    if not os.path.exists(marker):
        Path(marker).touch()
        # Its receipt for refs[0] (batched for 10 ms) reaches the owner meanwhile: the
        # owner counts this worker as a borrower, and holds nothing else for the task.
        time.sleep(1.0)
        os._exit(1)  # the first worker dies holding its borrow of refs[0]
    # Enough for the head to declare the first worker dead and its borrows released (its
    # exit is seen at once by its node; that news travels in well under a second): what
    # still keeps the object now is only the owner's hold for the retried task.
    time.sleep(2.0)
    return len(ag.get(refs[0], timeout=30))


def test_a_retried_task_finds_its_ref_argument_after_its_first_worker_died(
    tmp_path: Path,
) -> None:
    # The only ref to the object is inside the task's arguments: nothing else keeps it.
    ref = die_once_then_read.remote([ag.put(b"x" * 10_000)], str(tmp_path / "died"))
    assert ag.get(ref, timeout=60) == 10_000
