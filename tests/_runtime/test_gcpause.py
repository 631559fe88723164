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
print(gc.get_freeze_count() >= 2 * len(survivors), full_collections_frozen())
"""


def run_case(n: int) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CASE, str(n)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_survivors_of_a_slow_full_collection_are_frozen():
    # 300,000 survivors (600,000 objects): ~80 ms of CPU to walk, four times the threshold.
    frozen, times = run_case(300_000).split()
    assert frozen == "True"
    assert int(times) >= 1


def test_a_quick_full_collection_freezes_nothing():
    # 1,000 survivors: well under a millisecond to walk.
    assert run_case(1_000) == "False 0"
