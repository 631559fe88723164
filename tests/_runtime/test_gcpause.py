"""gcpause: the survivors of a slow full collection are frozen, those of a quick one are not.

Each case runs in a fresh interpreter: freezing is process-wide, and this one is pytest's.
"""

import subprocess
import sys

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
