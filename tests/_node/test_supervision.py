"""Supervision against real processes: workers killed, stopped and crashing in a loop; tasks
retried, actors restarted, and cancellation reaching sync code.

Every test starts its own embedded cluster, most with a short pulse interval so that zombies
are found in about a second (the kill -9 chaos test runs on default settings, as a user's
cluster would), and checks with psutil that what it killed is gone.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import actorgrid as ag

PULSE_S = 0.2
ZOMBIE_WINDOW_S = 5 * PULSE_S + 1.0
FOREVER = ag.RestartPolicy(max_restarts=-1)


@pytest.fixture
def grid(processes) -> Iterator[ag.Cluster]:
    cluster = ag.init(num_workers=2, pulse_interval=PULSE_S, grace_s=1.0, worker_restarts=FOREVER)
    try:
        processes.add(w.pid for w in cluster.workers())
        yield cluster
    finally:
        processes.add(cluster.node_pids)
        ag.shutdown()
        processes.wait_gone()


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kinds(cluster: ag.Cluster) -> list[str]:
    return [e.kind for e in cluster.recent_events()]


@ag.remote
def square(i: int) -> int:
    time.sleep(0.002)
    return i * i


@ag.remote
def square_slowly(i: int) -> int:
    # 5 ms a task: 2,000 of them keep two workers busy for at least 5 s, so the killer
    # (every 200 ms) gets its kills in before the map ends, however fast the machine.
    time.sleep(0.005)
    return i * i


@ag.remote
def pid_after(path: str, seconds: float) -> int:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def test_kill_9_of_a_random_worker_every_200ms_for_20s_with_default_settings(processes) -> None:
    # Its own cluster with default settings: no raised restart limit, the default pulse.
    cluster = ag.init(num_workers=2)
    killed: list[int] = []
    try:
        processes.add(w.pid for w in cluster.workers())
        done = threading.Event()

        def killer() -> None:
            rng = random.Random(8)
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline and not done.wait(0.2):
                live = [w.pid for w in cluster.workers()]
                if live:
                    pid = rng.choice(live)
                    processes.add([pid])
                    killed.append(pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

        refs = [square_slowly.options(max_retries=-1).remote(i) for i in range(2000)]
        thread = threading.Thread(target=killer, name="killer", daemon=True)
        thread.start()
        try:
            results = ag.get(refs, timeout=100)
        finally:
            done.set()
            thread.join()
        assert results == [i * i for i in range(2000)]
        # Each ref resolved once, with its own value: nothing lost, nothing mixed up.
        assert all(ag.get(r) == i * i for i, r in enumerate(refs))
        assert len(killed) >= 10
        assert "worker_gave_up" not in kinds(cluster)
        assert "task_retried" in kinds(cluster)
        # Both slots are still there: the cluster is whole again once the killing stops.
        wait_for(lambda: len(cluster.workers()) == 2, 30, "both workers back")
        assert ag.get(square.remote(7), timeout=30) == 49
        processes.wait_gone(killed)
    finally:
        processes.add(cluster.node_pids)
        ag.shutdown()
        processes.wait_gone()


def test_a_stopped_worker_is_found_fenced_and_its_task_reruns(
    grid: ag.Cluster, tmp_path: Path, processes
) -> None:
    marker = tmp_path / "pid"
    ref = pid_after.remote(str(marker), 3.0)
    stopped = int(wait_for(lambda: marker.exists() and marker.read_text(), what="the task"))
    processes.add([stopped])
    marker.unlink()
    os.kill(stopped, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        wait_for(lambda: "worker_zombie" in kinds(grid), ZOMBIE_WINDOW_S + 2, "the zombie")
        detected_after = time.monotonic() - t0
        # The stopped worker was killed (fenced): it can never deliver a stale result.
        processes.wait_gone([stopped], timeout=5)
    finally:
        try:
            os.kill(stopped, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert detected_after <= ZOMBIE_WINDOW_S
    rerun_by = ag.get(ref, timeout=30)
    assert rerun_by != stopped
    assert int(marker.read_text()) == rerun_by  # it really ran again, elsewhere
    events = grid.recent_events()
    zombie = next(e for e in events if e.kind == "worker_zombie")
    assert zombie.pid == stopped
    wait_for(lambda: len(grid.workers()) == 2, what="the slot to be refilled")


@ag.remote
def crash() -> None:
    os._exit(3)


def test_a_worker_crashing_in_a_loop_escalates(processes) -> None:
    policy = ag.RestartPolicy(max_restarts=2, window_s=30.0)
    with ag.init(num_workers=1, pulse_interval=PULSE_S, worker_restarts=policy) as cluster:
        processes.add(w.pid for w in cluster.workers())
        crash.options(max_retries=-1).remote()
        wait_for(lambda: "worker_gave_up" in kinds(cluster), 30, "the escalation")
        events = cluster.recent_events()
        gave_up = next(e for e in events if e.kind == "worker_gave_up")
        assert "max_restarts=2" in gave_up.detail
        died = [e for e in events if e.kind == "worker_died"]
        assert len(died) == 3
        assert all(e.exit_code == 3 for e in died)
        assert [e.kind for e in events].count("worker_restarted") == 2
        assert cluster.workers() == []
    processes.wait_gone()


@ag.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def incr(self) -> tuple[int, int]:
        self.n += 1
        return self.n, os.getpid()


def test_a_named_actor_is_restarted_when_its_worker_is_killed(grid: ag.Cluster, processes) -> None:
    # max_task_retries: a call sent before the death is known is sent again to the new one.
    c = Counter.options(name="survivor", max_restarts=1, max_task_retries=1).remote(10)
    n, pid = ag.get(c.incr.remote())
    assert n == 11
    processes.add([pid])
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    # The same handle reaches the new incarnation, whose constructor ran again.
    n2, pid2 = ag.get(c.incr.remote(), timeout=30)
    recovery_s = time.monotonic() - t0
    assert (n2, pid2 != pid) == (11, True)
    assert recovery_s < 10
    same = ag.get_actor("survivor")
    assert ag.get(same.incr.remote())[0] == 12
    assert "actor_restarted" in kinds(grid)
    # Its restarts are used up: the next death is final.
    os.kill(pid2, signal.SIGKILL)
    wait_for(lambda: "actor_died" in kinds(grid) or _dead(c), what="the actor's death")
    with pytest.raises(ag.ActorDiedError):
        ag.get(c.incr.remote(), timeout=30)


def test_an_actor_without_restarts_whose_worker_is_killed_is_reported_dead(
    grid: ag.Cluster, processes
) -> None:
    c = Counter.options(name="mortal").remote(0)
    _, pid = ag.get(c.incr.remote(), timeout=30)
    processes.add([pid])
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: any(e.kind == "actor_died" and e.name == "mortal" for e in grid.recent_events()),
        what="an actor_died event naming the actor",
    )
    died = [e for e in grid.recent_events() if e.kind == "actor_died" and e.name == "mortal"]
    assert len(died) == 1, died
    assert "max_restarts=0" in (died[0].detail or ""), died[0]
    with pytest.raises(ag.ActorDiedError):
        ag.get(c.incr.remote(), timeout=30)


def _dead(handle: ag.ActorHandle) -> bool:
    try:
        ag.get(handle.incr.remote(), timeout=30)
    except ag.ActorDiedError:
        return True
    return False


@ag.remote
def flaky(path: str) -> str:
    p = Path(path)
    runs = int(p.read_text()) + 1 if p.exists() else 1
    p.write_text(str(runs))
    if runs < 3:
        raise ValueError(f"run {runs} fails")
    return f"ok after {runs}"


def test_application_errors_retry_only_when_asked(grid: ag.Cluster, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="run 1 fails"):
        ag.get(flaky.remote(str(tmp_path / "a")))
    retried = flaky.options(retry_exceptions=[ValueError]).remote(str(tmp_path / "b"))
    assert ag.get(retried) == "ok after 3"
    limited = flaky.options(retry_exceptions=True, max_retries=1).remote(str(tmp_path / "c"))
    with pytest.raises(ValueError, match="run 2 fails"):
        ag.get(limited)
    other = flaky.options(retry_exceptions=[KeyError]).remote(str(tmp_path / "d"))
    with pytest.raises(ValueError, match="run 1 fails"):
        ag.get(other)


@ag.remote
def spin(path: str) -> None:
    Path(path + ".started").write_text(str(os.getpid()))
    try:
        while True:
            pass
    except KeyboardInterrupt:
        Path(path + ".interrupted").write_text("yes")
        raise


@ag.remote
def sleep_in_c(path: str) -> None:
    Path(path + ".started").write_text(str(os.getpid()))
    time.sleep(60)  # KeyboardInterrupt cannot reach code blocked in C


def test_cancel_raises_keyboard_interrupt_in_running_sync_code(
    grid: ag.Cluster, tmp_path: Path
) -> None:
    base = str(tmp_path / "spin")
    ref = spin.remote(base)
    pid = int(wait_for(lambda: _read(base + ".started"), what="the task to start"))
    ag.cancel(ref)
    with pytest.raises(ag.TaskCancelledError):
        ag.get(ref, timeout=20)
    assert Path(base + ".interrupted").read_text() == "yes"
    assert pid in {w.pid for w in grid.workers()}  # interrupted, not killed


def test_sync_code_that_outlives_the_grace_period_gets_its_worker_restarted(
    grid: ag.Cluster, tmp_path: Path, processes
) -> None:
    base = str(tmp_path / "c")
    ref = sleep_in_c.remote(base)
    pid = int(wait_for(lambda: _read(base + ".started"), what="the task to start"))
    processes.add([pid])
    ag.cancel(ref)
    with pytest.raises(ag.TaskCancelledError):
        ag.get(ref, timeout=20)
    processes.wait_gone([pid], timeout=10)  # grace_s is 1 s in this cluster
    wait_for(lambda: len(grid.workers()) == 2, what="the slot to be refilled")
    assert ag.get(square.remote(3)) == 9


def test_force_cancel_kills_the_worker_at_once(grid: ag.Cluster, tmp_path: Path, processes) -> None:
    base = str(tmp_path / "f")
    ref = spin.remote(base)
    pid = int(wait_for(lambda: _read(base + ".started"), what="the task to start"))
    processes.add([pid])
    ag.cancel(ref, force=True)
    with pytest.raises(ag.TaskCancelledError):
        ag.get(ref, timeout=20)
    processes.wait_gone([pid], timeout=5)
    assert not Path(base + ".interrupted").exists()
    wait_for(lambda: "worker_restarted" in kinds(grid), what="the replacement")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text() or None
    except FileNotFoundError:
        return None


@ag.remote(max_restarts=2)
async def fragile(ctx: ag.Context) -> list[str]:
    seen: list[str] = []
    async for msg in ctx.mailbox:
        if msg == "boom":
            raise RuntimeError("boom")
        if msg == "stop":
            return seen
        seen.append(msg)
    return seen


def test_a_coroutine_actor_that_raises_restarts_with_its_mailbox(grid: ag.Cluster) -> None:
    ref = fragile.options(name="fragile").remote()
    for msg in ["a", "boom", "b", "boom", "c", "stop"]:
        ag.send("fragile", msg)
    # Restarted twice; the messages queued behind each crash were kept for the next run.
    assert ag.get(ref, timeout=30) == ["c"]
    events = grid.recent_events()
    assert [e.kind for e in events].count("actor_restarted") == 2
