"""Actor lifetimes on a standalone cluster: an actor ends with the process that created it,
unless it is detached.

The head runs in a subprocess (``ag.serve_head``, two workers); a driver subprocess creates
actors and then exits or is SIGKILLed; this test process is a second driver, which watches
``Cluster.status().actors`` and calls the detached actor by name. Every process is stopped and
checked gone at the end, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import actorgrid as ag

SECRET = os.urandom(32)
PULSE_INTERVAL_S = 0.2
START_TIMEOUT_S = 60.0
# The actors go within 5 pulse intervals of their creator's departure on an idle machine; the
# deadline is generous because the test machine is shared and loaded.
GONE_TIMEOUT_S = 30.0

_HEAD = """
    import functools, sys, trio
    import actorgrid as ag

    secret = bytes.fromhex(sys.stdin.readline())

    async def main():
        async with trio.open_nursery() as nursery:
            address = await nursery.start(functools.partial(
                ag.serve_head, secret=secret, num_workers=2, pulse_interval=float(sys.argv[1]),
            ))
            print(address, flush=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
"""

_CREATOR = """
    import sys
    import actorgrid as ag

    class Plain:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

    class Named(Plain):
        pass

    class Keeper(Plain):
        pass

    async def agent(ctx: ag.Context):
        async for _ in ctx.mailbox:
            pass

    ag.init(address=sys.argv[1], secret=bytes.fromhex(sys.stdin.readline()))
    plain = ag.remote(Plain).remote()
    named = ag.remote(Named).options(name="named").remote()
    keeper = ag.remote(Keeper).options(name="keeper", lifetime="detached", max_restarts=1).remote()
    coroutine = ag.remote(agent).remote()
    print(ag.get([h.incr.remote() for h in (plain, named, keeper)], timeout=60), flush=True)
    sys.stdin.readline()  # then exits (cleanly), unless the test has SIGKILLed it
"""


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    result: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert result, f"no line from pid {proc.pid} within {timeout} s"
    return result[0].strip()


def _tree(pid: int) -> list[int]:
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    return [pid]


def _stop(proc: subprocess.Popen[str], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


@contextlib.contextmanager
def _head(tmp_path: Path, processes) -> Iterator[str]:
    script = tmp_path / "head.py"
    script.write_text(textwrap.dedent(_HEAD))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(PULSE_INTERVAL_S)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    processes.add([proc.pid])
    assert proc.stdin is not None
    try:
        proc.stdin.write(SECRET.hex() + "\n")
        proc.stdin.flush()
        yield _read_line(proc, START_TIMEOUT_S)
    finally:
        children = _tree(proc.pid)
        processes.add(children)
        _stop(proc, signal.SIGINT)  # Ctrl-C: the head stops its node, which stops its workers
        processes.wait_gone(children, timeout=30)


def _labels(cluster: ag.Cluster) -> list[str]:
    return sorted(a.label for a in cluster.status().actors)


def _wait_for_labels(cluster: ag.Cluster, expected: list[str]) -> None:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while (labels := _labels(cluster)) != expected:
        assert time.monotonic() < deadline, f"actors listed: {labels}, expected {expected}"
        time.sleep(0.1)


def _start_creator(script: Path, address: str, processes: Any) -> subprocess.Popen[str]:
    """The creator driver, given the secret on its stdin (watched by ``processes``)."""
    creator = subprocess.Popen(
        [sys.executable, str(script), address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    processes.add([creator.pid])
    assert creator.stdin is not None
    creator.stdin.write(SECRET.hex() + "\n")
    creator.stdin.flush()
    return creator


@pytest.mark.parametrize("ending", ["exit", "sigkill", "silent"])
def test_actors_end_with_their_driver_but_a_detached_one_stays(
    tmp_path: Path, processes, ending: str
) -> None:
    creator_script = tmp_path / "creator.py"
    creator_script.write_text(textwrap.dedent(_CREATOR))
    with _head(tmp_path, processes) as address, ag.init(address, secret=SECRET) as cluster:
        creator = _start_creator(creator_script, address, processes)
        assert creator.stdin is not None
        try:
            assert _read_line(creator, START_TIMEOUT_S) == "[1, 1, 1]"
            assert _labels(cluster) == ["Keeper", "Named", "Plain", "agent"]
            if ending == "exit":
                creator.stdin.write("\n")
                creator.stdin.flush()
                assert creator.wait(timeout=60) == 0
            elif ending == "sigkill":
                creator.kill()
                creator.wait(timeout=60)
            else:
                # Stopped, it no longer pulses: the head drops it after 5 pulse intervals.
                creator.send_signal(signal.SIGSTOP)
                _wait_for_labels(cluster, ["Keeper"])
        finally:
            _stop(creator, signal.SIGKILL)

        _wait_for_labels(cluster, ["Keeper"])
        # A second driver finds the detached actor by name, with the state it had.
        keeper = ag.get_actor("keeper")
        assert ag.get(keeper.incr.remote(), timeout=60) == 2
        with pytest.raises(ag.NameNotFoundError):
            ag.get_actor("named")
        ag.kill(keeper)
        _wait_for_labels(cluster, [])


def test_a_detached_actor_needs_a_name() -> None:
    @ag.remote
    class Keeper:
        pass

    with ag.init(num_workers=1):
        with pytest.raises(ValueError, match="a detached actor needs a name"):
            Keeper.options(lifetime="detached").remote()
        with pytest.raises(ValueError, match="lifetime must be 'detached'"):
            Keeper.options(lifetime="forever")


@ag.remote
class Spawned:
    def pid(self) -> int:
        return os.getpid()


@ag.remote
def spawn() -> list[int]:
    """Creates actors until one lives on another worker (a process spreads the actors it
    places, once it knows of both workers), and returns without waiting for them to end."""
    pids: list[int] = []
    actors = []
    deadline = time.monotonic() + 60
    while all(pid == os.getpid() for pid in pids):
        assert time.monotonic() < deadline, "no actor placed on the other worker"
        actors.append(Spawned.remote())
        pids.append(ag.get(actors[-1].pid.remote(), timeout=60))
    return [os.getpid(), *pids]


def test_actors_a_task_created_live_until_its_worker_ends(tmp_path: Path, processes) -> None:
    with _head(tmp_path, processes) as address, ag.init(address, secret=SECRET) as cluster:
        task_pid, *actor_pids = ag.get(spawn.remote(), timeout=60)
        # As in Ray, they belong to the task's worker process, not to the task that ended.
        assert _labels(cluster) == ["Spawned"] * len(actor_pids)
        os.kill(task_pid, signal.SIGKILL)
        _wait_for_labels(cluster, [])
        survivors = [pid for pid in actor_pids if pid != task_pid]
        assert processes.alive(survivors) == survivors  # its actor was killed, not its worker


_TASKER = """
    import sys, time
    from pathlib import Path
    import actorgrid as ag

    def run(folder):
        Path(folder, "started").touch()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                time.sleep(0.01)  # short sleeps: a cancel's KeyboardInterrupt lands between
        except KeyboardInterrupt:
            Path(folder, "cancelled").touch()
            raise
        Path(folder, "finished").touch()

    ag.init(address=sys.argv[1], secret=bytes.fromhex(sys.stdin.readline()))
    ref = ag.remote(run).remote(sys.argv[2])
    sys.stdin.readline()  # SIGKILLed here
"""


def test_the_tasks_of_a_killed_driver_are_cancelled(tmp_path: Path, processes) -> None:
    script = tmp_path / "tasker.py"
    script.write_text(textwrap.dedent(_TASKER))
    with _head(tmp_path, processes) as address:
        driver = subprocess.Popen(
            [sys.executable, str(script), address, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        processes.add([driver.pid])
        assert driver.stdin is not None
        try:
            driver.stdin.write(SECRET.hex() + "\n")
            driver.stdin.flush()
            _wait_for_file(tmp_path / "started", driver)
            driver.kill()
            driver.wait(timeout=60)
        finally:
            _stop(driver, signal.SIGKILL)
        # "cancelled" is written only on the way out of a cancel, which re-raises: once it
        # is there, the task can never finish.
        _wait_for_file(tmp_path / "cancelled")
        assert not (tmp_path / "finished").exists()


def _wait_for_file(path: Path, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while not path.exists():
        assert proc is None or proc.poll() is None, f"pid {proc.pid} exited {proc.returncode}"
        assert time.monotonic() < deadline, f"{path.name} not written within {GONE_TIMEOUT_S} s"
        time.sleep(0.02)


def test_the_head_restarts_a_detached_actor_whose_creator_is_gone(
    tmp_path: Path, processes
) -> None:
    creator_script = tmp_path / "creator.py"
    creator_script.write_text(textwrap.dedent(_CREATOR))
    with _head(tmp_path, processes) as address, ag.init(address, secret=SECRET) as cluster:
        creator = _start_creator(creator_script, address, processes)
        assert creator.stdin is not None
        try:
            assert _read_line(creator, START_TIMEOUT_S) == "[1, 1, 1]"
            creator.stdin.write("\n")
            creator.stdin.flush()
            assert creator.wait(timeout=60) == 0
        finally:
            _stop(creator, signal.SIGKILL)
        _wait_for_labels(cluster, ["Keeper"])
        (keeper,) = cluster.status().actors
        pid = next(w.pid for w in cluster.workers() if w.worker_id == keeper.worker_id)
        os.kill(pid, signal.SIGKILL)
        # Restarted by the head (max_restarts=1) on a live worker, with a fresh state.
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while True:
            try:
                handle = ag.get_actor("keeper")
                assert ag.get(handle.incr.remote(), timeout=60) == 1
                break
            except (ag.NameNotFoundError, ag.ActorDiedError):
                assert time.monotonic() < deadline, "the detached actor was not restarted"
                time.sleep(0.1)
        (restarted,) = cluster.status().actors
        assert restarted.actor_id == keeper.actor_id
        assert restarted.worker_id != keeper.worker_id
