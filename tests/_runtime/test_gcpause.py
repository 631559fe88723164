"""gcpause: the survivors of a slow full collection are frozen, those of a quick one are not.

Each case runs in a fresh interpreter: freezing is process-wide, and this one is pytest's.
"""

import re
import subprocess
import sys
from pathlib import Path

import actorgrid

CASE = """
import gc, sys
from actorgrid._runtime.gcpause import full_collections_frozen, install
install()
install()  # once, however often it is called
survivors = [{"state": [i]} for i in range(int(sys.argv[1]))]
gc.collect()
frozen = gc.get_freeze_count()
print(frozen >= 2 * len(survivors), full_collections_frozen())
more = [{"state": [i]} for i in range(1000)]
gc.collect(1)  # a middle collection
print(gc.get_freeze_count() >= frozen + 2 * len(more))
"""


def run_case(n: int) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CASE, str(n)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_survivors_of_a_slow_full_collection_are_frozen_and_of_later_ones_too():
    # 300,000 survivors (600,000 objects): ~80 ms of CPU to walk, four times the threshold.
    # From then on, what survives a middle collection is frozen as well, so that it does not
    # pile up for the next full collection.
    frozen, times, later = run_case(300_000).split()
    assert frozen == "True"
    assert int(times) >= 1
    assert later == "True"


THAW = """
import gc, sys
from actorgrid._runtime import gcpause
gcpause.install()
survivors = [{"state": [i]} for i in range(300_000)]
gc.collect()
assert gc.get_freeze_count() > 0, "a slow full collection froze nothing"
class Cycle:
    def __init__(self):
        self.me = self
cycle = Cycle()
gc.collect(1)  # survives a middle collection: frozen with the rest
gone = __import__("weakref").ref(cycle)
del cycle
gc.collect()  # still frozen: a full collection cannot free it
print(gone() is not None)
gcpause.THAW_AFTER_S = 0.0
gc.collect(1)  # the round of freezing is over: everything thaws
print(gc.get_freeze_count())
gc.collect()
print(gone() is None)
"""


def test_a_cycle_that_dies_among_frozen_objects_is_freed_once_the_process_thaws():
    # Freezing puts off the collection of cycles that die among frozen objects; after
    # THAW_AFTER_S the process thaws everything, and the next full collection frees them.
    done = subprocess.run([sys.executable, "-c", THAW], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "0", "True"]


def test_a_quick_full_collection_freezes_nothing():
    # 1,000 survivors: well under a millisecond to walk.
    assert run_case(1_000).split() == ["False", "0", "False"]


STARTER = """
import gc, weakref
import trio
from actorgrid._runtime import gcpause
from actorgrid._runtime.starting import FREEZE_AFTER, Starter

class Cycle:
    def __init__(self):
        self.me = self

cycle = Cycle()
gone = weakref.ref(cycle)

async def agent():
    await trio.sleep(0)

async def main():
    starter = Starter()
    async with trio.open_nursery() as nursery:
        for _ in range(FREEZE_AFTER):
            starter.start_soon(nursery, agent)

trio.run(main)
print(gc.get_freeze_count() > 0)
del cycle
gc.collect()  # frozen with the agents' start: a full collection cannot free it yet
print(gone() is not None)
gcpause.THAW_AFTER_S = 0.0
gc.collect(1)  # the round of freezing that the starts began is over: everything thaws
# The full collection after a thaw walks everything once; on a slow machine it takes over
# SLOW_FULL_COLLECTION_S and starts a new round of freezing, which is not what this checks.
gcpause.SLOW_FULL_COLLECTION_S = float("inf")
gc.collect()
print(gone() is None, gc.get_freeze_count())
"""


def test_a_cycle_frozen_by_a_burst_of_agent_starts_is_freed_once_the_process_thaws():
    # Starting FREEZE_AFTER agents freezes what exists (starting.py; a worker's agent host and
    # a driver's name claims do the same through gcpause.freeze): a cycle that dies among the
    # frozen objects is freed after the thaw, as one frozen by a slow collection is.
    done = subprocess.run(
        [sys.executable, "-c", STARTER], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True", "0"]


def test_gcpause_is_the_only_place_that_freezes():
    # Every gc.freeze() in the runtime goes through gcpause.freeze(), so it is thawed later;
    # a freeze of its own would keep the cycles that die among its objects for ever.
    package = Path(actorgrid.__file__).parent
    freezing = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if re.search(r"^[^#\n]*\bgc\.freeze\(", path.read_text(), re.MULTILINE)
    )
    assert freezing == ["_runtime/gcpause.py"]
