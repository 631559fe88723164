"""The sync round trip's shortcuts hold every promise of the slow path.

A lone call from a user thread is written to its link by that thread (``send_call_direct``),
a sync method's answer is written by the worker's pool thread (``finish_from_thread``), and the
thread blocked in ``ag.get`` is woken by a lock release from the loop (``getting._Wake``). These
tests check what a user relies on around them: calls from one caller run in the order made
(from the main thread, from other driver threads, from an actor's pool threads, with
``ag.get`` of earlier calls in between), a timed-out ``ag.get`` leaves the next round trip
right, a worker killed while the main thread waits gives a clear error instead of a hang, and
Ctrl-C in ``ag.get`` interrupts it and cancels the remote call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

import actorgrid as ag

GET_TIMEOUT_S = 60.0  # a hang fails the test instead of stalling the suite


@ag.remote
class Log:
    """Records (caller, n) in the order its calls ran."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def add(self, caller: str, n: int) -> int:
        self.seen.append((caller, n))
        return n

    def entries(self) -> list[tuple[str, int]]:
        return self.seen


@ag.remote
class Caller:
    """Calls the log from its pool threads: straight from the thread when lone, else batched."""

    def __init__(self, log: ag.ActorHandle[Log]) -> None:
        self.log = log

    def burst(self, caller: str, start: int, n: int) -> None:
        refs = [self.log.add.remote(caller, i) for i in range(start, start + n)]
        ag.get(refs[-1])  # a round trip from a pool thread, the rest in flight meanwhile

    def one_by_one(self, caller: str, n: int) -> None:
        for i in range(n):
            ag.get(self.log.add.remote(caller, i))


@ag.remote
class Sleeper:
    def pid(self) -> int:
        return os.getpid()

    def nap(self, seconds: float) -> str:
        time.sleep(seconds)
        return "rested"

    def echo(self, x: int) -> int:
        return x


def _in_order_per_caller(seen: list[tuple[str, int]]) -> dict[str, list[int]]:
    by_caller: dict[str, list[int]] = {}
    for caller, n in seen:
        by_caller.setdefault(caller, []).append(n)
    return by_caller


def test_calls_of_each_caller_run_in_the_order_made_with_gets_between_them(cluster) -> None:
    log = Log.remote()
    callers = [Caller.remote(log) for _ in range(2)]
    n = 60
    # Actors calling the log from their pool threads, meanwhile.
    remote = [callers[0].burst.remote("actor0", 0, n), callers[1].one_by_one.remote("actor1", n)]
    errors: list[BaseException] = []

    def driver_thread() -> None:
        try:
            for i in range(n):  # lone round trips: each written by this thread itself
                assert ag.get(log.add.remote("thread", i), timeout=GET_TIMEOUT_S) == i
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=driver_thread)
    thread.start()
    try:
        earlier = None
        for i in range(n):
            ref = log.add.remote("main", i)
            if earlier is not None and i % 3 == 0:
                # ag.get of an earlier call while a later one is in flight, then a new burst.
                assert ag.get(earlier, timeout=GET_TIMEOUT_S) == i - 1
            if i % 5 == 0:
                assert ag.get(ref, timeout=GET_TIMEOUT_S) == i  # a lone round trip
            earlier = ref
        ag.get(remote, timeout=GET_TIMEOUT_S)
    finally:
        thread.join(GET_TIMEOUT_S)
    assert not thread.is_alive(), "the driver thread's round trips did not finish"
    assert not errors, errors
    by_caller = _in_order_per_caller(ag.get(log.entries.remote(), timeout=GET_TIMEOUT_S))
    for caller in ("main", "thread", "actor0", "actor1"):
        assert by_caller[caller] == list(range(n)), caller


def test_a_timed_out_get_leaves_the_next_round_trips_right(cluster) -> None:
    sleeper = Sleeper.remote()
    assert ag.get(sleeper.echo.remote(1), timeout=GET_TIMEOUT_S) == 1
    slow = sleeper.nap.remote(1.0)
    with pytest.raises(ag.GetTimeoutError, match="timed out"):
        ag.get(slow, timeout=0.05)
    # The late answer comes while these wait: each get gets its own value, none is lost.
    for i in range(20):
        assert ag.get(sleeper.echo.remote(i), timeout=GET_TIMEOUT_S) == i
    assert ag.get(slow, timeout=GET_TIMEOUT_S) == "rested"


def test_a_worker_killed_while_the_main_thread_waits_fails_the_call_clearly(cluster) -> None:
    sleeper = Sleeper.remote()
    pid = ag.get(sleeper.pid.remote(), timeout=GET_TIMEOUT_S)
    ag.get(sleeper.echo.remote(0), timeout=GET_TIMEOUT_S)  # the next call is a lone one
    ref = sleeper.nap.remote(3600)
    # Killed from another thread while the main thread is blocked in ag.get below (the kill
    # comes 0.3 s after the call was sent: whether it runs yet or not, the call must fail).
    killer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
    killer.start()
    started = time.monotonic()
    try:
        with pytest.raises((ag.ActorDiedError, ag.WorkerDiedError)) as caught:
            ag.get(ref, timeout=GET_TIMEOUT_S)
    finally:
        killer.join()
    assert time.monotonic() - started < GET_TIMEOUT_S / 2
    assert "Sleeper" in str(caught.value)  # the error names the actor it was meant for
    with pytest.raises(ag.ActorDiedError):  # no restarts allowed: the actor stays dead
        ag.get(sleeper.echo.remote(1), timeout=GET_TIMEOUT_S)


_CTRL_C_DRIVER = """
import os, sys, time
from pathlib import Path

import actorgrid as ag

out = Path(sys.argv[1])


@ag.remote
class Sleeper:
    def echo(self, x):
        return x

    def nap(self):
        (out / "nap.started").write_text(str(os.getpid()))
        try:
            while True:
                time.sleep(0.01)
        except KeyboardInterrupt:
            (out / "nap.interrupted").write_text("yes")
            raise


ag.init(num_workers=1, grace_s=3.0)
sleeper = Sleeper.remote()
for i in range(50):  # warm: the next call is written by this thread, as round trips are
    assert ag.get(sleeper.echo.remote(i)) == i
ref = sleeper.nap.remote()
try:
    print("waiting", flush=True)
    ag.get(ref)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    raise
"""


def test_ctrl_c_in_a_round_trip_get_interrupts_it_and_cancels_the_call(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(_CTRL_C_DRIVER))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    family: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + GET_TIMEOUT_S
        while not (tmp_path / "nap.started").exists():
            assert proc.poll() is None, f"the driver ended early: {proc.communicate()}"
            assert time.monotonic() < deadline, "the nap never started"
            time.sleep(0.02)
        # The nap may start before .remote() has returned here (under load, the thread that
        # wrote the call can be descheduled in the write): Ctrl-C once the get has begun.
        assert proc.stdout is not None
        assert proc.stdout.readline() == "waiting\n", proc.communicate()
        family = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=GET_TIMEOUT_S)
        assert "interrupted" in stdout, stderr
        assert "KeyboardInterrupt" in stderr
        assert (tmp_path / "nap.interrupted").exists(), "the remote call was not interrupted"
        _gone, alive = psutil.wait_procs(family, timeout=GET_TIMEOUT_S)
        assert not alive, f"processes outlived the driver: {alive}"
    finally:
        for p in [psutil.Process(proc.pid), *family] if proc.poll() is None else family:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=GET_TIMEOUT_S)
