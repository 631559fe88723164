"""``ag.ActorPool`` on a real two-worker cluster: ordering, updates between jobs, a killed
worker's job run again, errors, and Ray's ActorPool over given handles."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import trio

import actorgrid as ag

pytestmark = pytest.mark.usefixtures("cluster")

DEADLINE_S = 60.0


class Trainer:
    """A seed-style worker: heavy init, run(), handle_update(); it logs what it sees."""

    def __init__(self, init_data: str) -> None:
        self.init_data = init_data
        self.cache: list[int] = []
        self.log: list[tuple[str, object]] = []

    def run(self, x: int, delay: float = 0.0) -> tuple[int, int, int]:
        self.log.append(("start", x))
        time.sleep(delay)
        self.log.append(("end", x))
        return x * x, len(self.cache), os.getpid()

    def handle_update(self, value: int) -> None:
        self.log.append(("update", value))
        self.cache.append(value)

    def history(self) -> list[tuple[str, object]]:
        return self.log

    def cache_seen(self) -> list[int]:
        return self.cache


class Flaky:
    def run(self, x: int) -> int:
        if x == 2:
            raise KeyError(f"no item {x}")
        return x


class Marking:
    """run() notes its pid in a folder, then works for a while."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def run(self, x: int) -> tuple[int, int]:
        (Path(self.folder) / f"running-{x}-{os.getpid()}").touch()
        time.sleep(0.5)
        return x, os.getpid()


@ag.remote
class Doubler:
    def double(self, x: int) -> int:
        time.sleep(0.01 * (x % 3))
        return 2 * x


def test_one_instance_per_worker_and_ordered_results(cluster: ag.Cluster) -> None:
    with ag.ActorPool(Trainer, args=("data",)) as pool:
        assert pool.workers_count() == len(cluster.workers()) == 2
        assert pool.nodes_count() == 1
        results = pool.map(range(20))
        assert [r[0] for r in results] == [x * x for x in range(20)]
        assert [r[0] for r in pool.starmap([(3,), (4, 0.01)])] == [9, 16]
        assert sorted(r[0] for r in pool.imap_unordered(range(5))) == [0, 1, 4, 9, 16]
        assert ag.get(pool.submit(7, delay=0.0), timeout=DEADLINE_S)[0] == 49


def test_updates_reach_every_instance_between_jobs_in_order() -> None:
    with ag.ActorPool(Trainer, args=("data",), size=2) as pool:
        sent = []
        for value, _, _ in pool.imap_unordered(range(10)):
            pool.update_workers(value)
            sent.append(value)
        # Later jobs see the updates; every instance got all of them, in the order sent.
        for slot in pool._slots:
            assert ag.get(slot.handle.cache_seen.remote(), timeout=DEADLINE_S) == sent
            log = ag.get(slot.handle.history.remote(), timeout=DEADLINE_S)
            running = None
            for kind, value in log:
                if kind == "start":
                    running = value
                elif kind == "end":
                    running = None
                else:
                    assert running is None, f"update {value} arrived during job {running}: {log}"
        assert {r[1] for r in pool.map([100] * 6)} == {len(sent)}


def test_an_error_in_run_reaches_the_caller_and_the_pool_goes_on() -> None:
    with ag.ActorPool(Flaky, size=2) as pool:
        with pytest.raises(KeyError) as info:
            pool.map(range(5))
        assert "no item 2" in info.value.remote_traceback  # type: ignore[attr-defined]
        assert pool.map([0, 1, 3]) == [0, 1, 3]


def test_a_killed_workers_job_runs_again_on_a_new_instance(
    cluster: ag.Cluster, tmp_path: Path
) -> None:
    results: list[tuple[int, int]] = []
    with ag.ActorPool(Marking, args=(str(tmp_path),), size=2) as pool:
        # The pool is driven by the thread that calls it: map there, kill from here.
        mapper = threading.Thread(target=lambda: results.extend(pool.map(range(6))))
        mapper.start()
        deadline = time.monotonic() + DEADLINE_S
        while not (running := list(tmp_path.glob("running-*"))):
            assert time.monotonic() < deadline, "no job started"
            time.sleep(0.01)
        _, job, pid = running[0].name.split("-")
        os.kill(int(pid), signal.SIGKILL)  # the worker of an instance, during its job
        mapper.join(DEADLINE_S)
        assert not mapper.is_alive()
        assert [x for x, _ in results] == list(range(6)), "a job was lost"
        # The killed job ran again, on another process.
        assert len(list(tmp_path.glob(f"running-{job}-*"))) == 2
        assert pool.workers_count() == 2


def test_rays_actor_pool_over_handles() -> None:
    actors = [Doubler.remote(), Doubler.remote()]
    pool = ag.ActorPool(actors)
    assert list(pool.map(lambda a, v: a.double.remote(v), range(8))) == [2 * x for x in range(8)]
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(8))) == [
        2 * x for x in range(8)
    ]
    pool.submit(lambda a, v: a.double.remote(v), 1)
    pool.submit(lambda a, v: a.double.remote(v), 2)
    pool.submit(lambda a, v: a.double.remote(v), 3)  # queued until an actor is free
    assert pool.has_next()
    assert [pool.get_next(timeout=DEADLINE_S) for _ in range(3)] == [2, 4, 6]
    assert not pool.has_next()
    with pytest.raises(StopIteration):
        pool.get_next()
    with pytest.raises(TypeError, match="actor handles"):
        pool.update_workers(1)


class BrokenInit:
    def __init__(self) -> None:
        raise RuntimeError("no GPU here")

    def run(self, x: int) -> int:
        return x


def test_a_pool_left_mid_iteration_is_whole_again() -> None:
    with ag.ActorPool(Trainer, args=("data",), size=2) as pool:
        for _ in pool.imap_unordered([(x) for x in range(6)]):
            break  # the other instance may still be running a job
        assert [r[0] for r in pool.map(range(4))] == [0, 1, 4, 9]
        assert pool.workers_count() == 2


def test_an_instance_that_cannot_start_fails_the_job_instead_of_looping() -> None:
    with ag.ActorPool(BrokenInit, size=1) as pool, pytest.raises(ag.ActorDiedError) as info:
        pool.map([1])
    assert "no GPU here" in str(info.value)


def test_trio_code_maps_and_iterates_without_blocking_the_loop() -> None:
    async def main() -> tuple[list[int], list[int], list[int]]:
        with ag.ActorPool(Trainer, args=("data",), size=2) as pool:
            squares = [r[0] for r in await pool.map_async(range(6))]
            seen = []
            async for value, _, _ in pool.imap_unordered_async(range(4)):
                pool.update_workers(value)
                seen.append(value)
            with pytest.raises(RuntimeError, match=r"await pool\.map_async"):
                pool.map([1])
            caches = [r[1] for r in await pool.starmap_async([(0,), (0,)])]
        return squares, sorted(seen), caches

    squares, seen, caches = trio.run(main)
    assert squares == [x * x for x in range(6)]
    assert seen == [0, 1, 4, 9]
    assert caches == [4, 4]


def test_mistakes_say_what_to_do() -> None:
    with pytest.raises(TypeError, match="has no method run"):
        ag.ActorPool(Doubler)
    with pytest.raises(TypeError, match="worker class"):
        ag.ActorPool(Trainer("data"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="anonymous"):
        ag.ActorPool(Trainer, args=("data",), name="trainer")
    with pytest.raises(ValueError, match="size must be"):
        ag.ActorPool(Trainer, args=("data",), size=0)
    with pytest.raises(TypeError, match="actor handles"):
        ag.ActorPool([Doubler.remote(), "not a handle"])  # type: ignore[list-item]


def test_a_job_that_cannot_be_sent_raises_and_the_pool_stays_whole() -> None:
    with ag.ActorPool(Trainer, args=("data",), size=2) as pool:
        with pytest.raises(ag.SerializationError):
            pool.map([threading.Lock()])
        with pytest.raises(TypeError):
            pool.starmap([(1, 2, 3, 4)])  # run() takes at most two arguments
        assert [r[0] for r in pool.map(range(4))] == [0, 1, 4, 9]
