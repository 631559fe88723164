"""The owner keeps what its calls need and lets go of what nobody holds, on a live cluster: a
retried task still finds the objects of its ref arguments after the worker that borrowed
them died; a driver that borrowed a ref and then exits (or is killed) releases its borrow."""

from __future__ import annotations

import gc
import os
import pickle
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

import actorgrid as ag

SECRET = secrets.token_bytes(32)
CLUSTER_OPTIONS = {"num_workers": 2, "secret": SECRET}
SETTLE_S = 30.0  # generous: releases are batched, and the machine is shared
# 50 MB in objects small enough to stay in their owner's memory (not the node's store).
OBJECT_BYTES, OBJECTS = 90_000, 550

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


@ag.remote
class Keeper:
    """Holds refs inside a list (so they stay refs) until someone takes them."""

    def __init__(self) -> None:
        self.refs: list[ag.ObjectRef[bytes]] = []

    def keep(self, refs: list[ag.ObjectRef[bytes]]) -> int:
        self.refs = list(refs)
        return len(self.refs)

    def take(self) -> list[ag.ObjectRef[bytes]]:
        refs, self.refs = self.refs, []
        return refs


_BORROWER = """
    import sys
    import actorgrid as ag

    ag.init(address=sys.argv[1], secret=bytes.fromhex(sys.stdin.readline()))
    refs = ag.get(ag.get_actor(sys.argv[2]).take.remote(), timeout=60)  # it borrows them
    print(sum(len(b) for b in ag.get(refs, timeout=60)), flush=True)
    sys.stdin.readline()  # then exits cleanly, unless the test has SIGKILLed it
"""


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def wait_until(condition: Callable[[], bool], timeout_s: float = SETTLE_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    result: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert result, f"no line from pid {proc.pid} within {timeout} s"
    return result[0].strip()


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_the_borrow_of_a_driver_that_ends_is_released(
    cluster: ag.Cluster, tmp_path: Path, processes: Any, ending: str
) -> None:
    name = f"keeper-{ending}-{os.getpid()}"
    keeper = Keeper.options(name=name).remote()
    refs = [ag.put(os.urandom(OBJECT_BYTES)) for _ in range(OBJECTS)]
    assert ag.get(keeper.keep.remote(refs), timeout=60) == OBJECTS
    del refs
    gc.collect()
    script = tmp_path / "borrower.py"
    script.write_text(textwrap.dedent(_BORROWER))
    borrower = subprocess.Popen(
        [sys.executable, str(script), cluster.address, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    processes.add([borrower.pid])
    assert borrower.stdin is not None
    try:
        borrower.stdin.write(SECRET.hex() + "\n")
        borrower.stdin.flush()
        # The other driver is the only holder now (the keeper gave its ref away).
        assert _read_line(borrower, 60) == str(OBJECT_BYTES * OBJECTS)
        gc.collect()
        held = rss_mb()  # after serving its fetch, whatever buffers that left behind
        if ending == "exit":
            borrower.stdin.write("\n")
            borrower.stdin.flush()
            assert borrower.wait(timeout=60) == 0
        else:
            borrower.send_signal(signal.SIGKILL)
            borrower.wait(timeout=60)
    finally:
        if borrower.poll() is None:
            borrower.kill()
        borrower.wait(timeout=30)
        for pipe in (borrower.stdin, borrower.stdout):
            if pipe is not None:
                pipe.close()
    processes.wait_gone([borrower.pid])
    # Its borrows end with it: the 50 MB of objects are freed in this process, their owner.
    assert wait_until(lambda: rss_mb() < held - 25), (held, rss_mb())
    ag.kill(keeper)


def test_get_of_a_freed_object_raises_object_lost_error_naming_it_and_its_owner() -> None:
    value = b"kept where actorgrid cannot see it"
    ref = ag.put(value)
    object_id = ref.id
    kept = pickle.dumps(ref)  # (to a file or a database)
    del ref
    # Unpickled, it is a live ref again: the pickled ref's hold kept the object meanwhile.
    again = pickle.loads(kept)
    assert ag.get(again, timeout=30) == value
    del again
    gc.collect()

    def lost() -> bool:
        # The last live ref is gone: its owner (this driver) frees the object. Unpickled after
        # that, the ref says so; until then it is a live ref again, dropped again here.
        try:
            ag.get(pickle.loads(kept), timeout=30)
        except ag.ObjectLostError as exc:
            errors.append(exc)
            return True
        gc.collect()
        return False

    errors: list[ag.ObjectLostError] = []
    assert wait_until(lost)
    error = errors[0]
    assert error.object_id == object_id and error.owner, error
    assert object_id.hex()[:6] in str(error) and f"owned by {error.owner} was freed" in str(error)
