"""``ag.Pool`` against a real two-worker cluster: terminate, initializer, maxtasksperchild,
timeouts, errors, Trio, and the pool's size following the cluster."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from pathlib import Path

import pytest
import trio

import actorgrid as ag

pytestmark = pytest.mark.usefixtures("cluster")

DEADLINE_S = 60.0


def square(x: int) -> int:
    return x * x


def nap_and_note(folder: str, i: int) -> int:
    (Path(folder) / f"started-{i}").touch()
    try:
        # Short sleeps, like a Python loop: the KeyboardInterrupt a cancel raises in a pool
        # thread lands between them (one long C call would only end by its worker's kill).
        for _ in range(int(DEADLINE_S / 0.01)):
            time.sleep(0.01)
    except KeyboardInterrupt:
        (Path(folder) / f"interrupted-{i}").touch()
        raise
    return i


def note_pid(folder: str) -> None:
    with open(Path(folder) / f"init-{os.getpid()}", "a") as f:
        f.write("x")


GENERATION = ""


def new_generation() -> None:
    global GENERATION
    GENERATION = uuid.uuid4().hex


def generation(_: int) -> str:
    return GENERATION


def pid_of(_: int) -> int:
    time.sleep(0.01)
    return os.getpid()


def wait_for_files(folder: Path, pattern: str, count: int) -> list[Path]:
    deadline = time.monotonic() + DEADLINE_S
    while len(found := sorted(folder.glob(pattern))) < count:
        assert time.monotonic() < deadline, (
            f"only {found} of {count} {pattern} after {DEADLINE_S} s"
        )
        time.sleep(0.02)
    return found


def test_processes_follow_the_cluster(cluster: ag.Cluster) -> None:
    with ag.Pool() as pool:
        assert pool.processes == len(cluster.workers()) == 2
    with ag.Pool(num_cpus=2) as pool:  # no 1-CPU worker fits two: at least one slot
        assert pool.processes == 1
    with ag.Pool(3) as pool:
        assert pool.processes == 3


def test_terminate_during_a_map_cancels_the_running_items(
    cluster: ag.Cluster, tmp_path: Path
) -> None:
    pids = sorted(w.pid for w in cluster.workers())
    pool = ag.Pool()
    result = pool.starmap_async(nap_and_note, [(str(tmp_path), i) for i in range(6)], chunksize=1)
    # Placement may queue both first chunks on one worker: wait for one to run, not two.
    wait_for_files(tmp_path, "started-*", 1)
    start = time.monotonic()
    pool.terminate()
    assert time.monotonic() - start < DEADLINE_S / 2
    # The running items saw KeyboardInterrupt; the queued ones never started.
    started = len(list(tmp_path.glob("started-*")))
    assert 1 <= started <= 2
    assert len(wait_for_files(tmp_path, "interrupted-*", started)) == started
    with pytest.raises(ag.TaskCancelledError):
        result.get(timeout=DEADLINE_S)
    pool.join()
    # Nothing of the pool runs, and no process was added or lost.
    assert cluster.status().running == 0
    assert sorted(w.pid for w in cluster.workers()) == pids
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(square, [1])


def test_initializer_runs_once_per_worker_process_per_pool(tmp_path: Path) -> None:
    used: list[set[int]] = []
    for _ in range(2):
        with ag.Pool(initializer=note_pid, initargs=(str(tmp_path),)) as pool:
            used.append(set(pool.map(pid_of, range(40), chunksize=1)))
    runs = {int(f.name.split("-")[1]): len(f.read_text()) for f in tmp_path.glob("init-*")}
    # Once per pool in each process that ran its items, never more.
    assert runs == {pid: sum(pid in pids for pids in used) for pid in set().union(*used)}


def test_maxtasksperchild_renews_what_the_initializer_set() -> None:
    with ag.Pool(initializer=new_generation, maxtasksperchild=2) as pool:
        seen = pool.map(generation, range(12), chunksize=1)
    assert all(seen.count(g) <= 2 for g in seen)
    assert len(set(seen)) >= 6
    with ag.Pool(initializer=new_generation) as pool:
        assert len(set(pool.map(generation, range(12), chunksize=1))) <= 2


def test_errors_carry_their_type_and_the_remote_traceback() -> None:
    with ag.Pool() as pool:
        with pytest.raises(ZeroDivisionError) as info:
            pool.apply(divmod, (1, 0))
        assert isinstance(info.value, ag.RemoteError)
        assert "ZeroDivisionError" in info.value.remote_traceback
        # A failed map is final: later results do not change it.
        result = pool.map_async(lambda x: 1 // (x - 5), range(50), chunksize=1)
        with pytest.raises(ZeroDivisionError):
            result.get(DEADLINE_S)
        assert result.successful() is False


def test_timeouts_raise_multiprocessing_timeout_error() -> None:
    with ag.Pool(1) as pool:
        result = pool.apply_async(time.sleep, (1.0,))
        with pytest.raises(multiprocessing.TimeoutError, match=r"not ready after 0\.05 s"):
            result.get(timeout=0.05)
        with pytest.raises(ValueError, match="not ready"):
            result.successful()
        it = pool.imap(square, [1, 2])
        with pytest.raises(multiprocessing.TimeoutError):
            it.next(timeout=0.05)  # the sleep holds the only slot
        assert result.get(DEADLINE_S) is None
        assert list(it) == [1, 4]


def test_trio_code_awaits_results_and_iterates() -> None:
    async def main() -> tuple[list[int], list[int], int]:
        async with ag.Pool() as pool:
            squares = await pool.map_async(square, range(10))
            unordered = [x async for x in pool.imap_unordered(square, range(10), chunksize=3)]
            one = await pool.apply_async(square, (12,))
            with pytest.raises(RuntimeError, match=r"await pool\.map_async"):
                pool.map(square, [1])
            with pytest.raises(multiprocessing.TimeoutError):
                await pool.apply_async(time.sleep, (1.0,)).get_async(timeout=0.05)
        return squares, unordered, one

    squares, unordered, one = trio.run(main)
    assert squares == [x * x for x in range(10)]
    assert sorted(unordered) == squares
    assert one == 144


def test_close_lets_submitted_work_finish() -> None:
    pool = ag.Pool()
    it = pool.imap(square, iter(range(100)), chunksize=7)
    pool.close()
    pool.join()
    assert list(it) == [x * x for x in range(100)]


def test_mistakes_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="processes must be at least 1"):
        ag.Pool(0)
    with pytest.raises(ValueError, match="maxtasksperchild"):
        ag.Pool(maxtasksperchild=0)
    with pytest.raises(TypeError, match="unknown option"):
        ag.Pool(num_gpu=1)
    with ag.Pool() as pool:
        with pytest.raises(ValueError, match="chunksize must be at least 1"):
            pool.map(square, [1, 2], chunksize=0)
        pool.close()
        with pytest.raises(ValueError, match="Pool not running"):
            pool.apply_async(square, (1,))


def test_a_function_that_cannot_be_sent_fails_its_call_not_the_pool() -> None:
    lock = threading.Lock()
    with ag.Pool() as pool:
        with pytest.raises(ag.SerializationError, match="lock"):
            pool.map(lambda x: (lock, x), range(3))
        with pytest.raises(ag.SerializationError):
            list(pool.imap(lambda x: (lock, x), range(3)))
        assert pool.map(square, range(3)) == [0, 1, 4]
