"""Supervision: a worker is killed in the middle of a map and nothing is lost.

The killed worker's tasks run again on a live worker, the named actor it hosted is re-created
(keeping its name and handle), and the node agent starts a fresh worker in the dead one's
slot. The cluster's events tell the story.

    python examples/supervision.py
"""

from __future__ import annotations

import os
import signal
import time

import actorgrid as ag


@ag.remote
def slow_square(x: int) -> int:
    time.sleep(0.01)
    return x * x


class _Tally:
    def __init__(self) -> None:
        self.seen = 0

    def add(self, n: int) -> tuple[int, int]:
        self.seen += n
        return self.seen, os.getpid()


Tally = ag.remote(_Tally)


def main() -> None:
    with ag.init(num_workers=2, pulse_interval=0.5) as cluster:
        tally = Tally.options(name="tally", max_restarts=1, max_task_retries=1).remote()
        _, victim = ag.get(tally.add.remote(1))

        refs = [slow_square.remote(i) for i in range(200)]
        time.sleep(0.2)
        os.kill(victim, signal.SIGKILL)  # the worker hosting the actor, mid-map
        squares = ag.get(refs, timeout=60)
        print(f"all {len(squares)} squares correct: {squares == [i * i for i in range(200)]}")

        seen, pid = ag.get(tally.add.remote(1), timeout=60)
        print(f"tally restarted on pid {pid} (the killed worker was {victim}); count {seen}")

        while len(cluster.workers()) < 2:  # the node agent refills the slot
            time.sleep(0.05)
        for event in cluster.recent_events():
            if event.kind != "node_status":
                print(f"event {event.kind}: {event.detail or event.pid}")
    print("cluster stopped; no process left behind")


if __name__ == "__main__":
    main()
