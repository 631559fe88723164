"""Nothing fails for want of a worker that can come, and nothing waits on one that cannot
answer: real clusters (embedded, or a standalone head and node started with the CLI).

- tasks and actors submitted while no worker fits wait, and a warning in the driver's log says
  what for; ``ag.get(timeout=)`` still bounds a wait;
- a task started by a busy task runs on an idle worker;
- calls to a worker that stops answering, or that was never reachable, fail over in seconds;
- a driver that loses its head says so, reconnects to the same address, and carries on.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import actorgrid as ag
from actorgrid._protocol.ids import NodeId, short
from actorgrid._runtime.pulse import DEFAULT_PULSE_INTERVAL_S

PULSE_S = 0.2
WARNING_S = 0.5
# A start or a join on a loaded 2-core machine takes a few seconds; this is a bound, not a wait.
START_TIMEOUT_S = 60.0


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "actorgrid.runtime" and r.levelno == logging.WARNING
    ]


@ag.remote
def square(i: int) -> int:
    return i * i


@ag.remote
def whoami() -> int:
    return os.getpid()


@ag.remote
def pid_after(path: str, seconds: float) -> int:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


# --- a standalone head, and nodes that join it -----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Standalone:
    """`actorgrid start --head` and `actorgrid node` in subprocesses of their own folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.secret = os.urandom(32)
        self.secret_file = folder / "secret"
        self.secret_file.write_text(self.secret.hex())
        self.secret_file.chmod(0o600)
        self.address = f"127.0.0.1:{_free_port()}"
        self.env = {
            **os.environ,
            "ACTORGRID_CLUSTER_FILE": str(folder / "cluster.json"),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("ACTORGRID_ADDRESS", None)
        self.env.pop("ACTORGRID_SECRET", None)
        self.procs: list[psutil.Process] = []
        self.popens: list[subprocess.Popen[str]] = []

    def _start(self, name: str, *argv: str, ready: str) -> subprocess.Popen[str]:
        out = self.folder / f"{name}.out"
        with out.open("w") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "actorgrid.cli", *argv],
                cwd=self.folder,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        self.procs.append(psutil.Process(proc.pid))
        self.popens.append(proc)
        wait_for(
            lambda: ready in out.read_text() or proc.poll() is not None,
            START_TIMEOUT_S,
            f"{name} to print {ready!r}",
        )
        assert proc.poll() is None, f"{name} exited:\n{out.read_text()}"
        return proc

    def head(self, *, again: bool = False) -> subprocess.Popen[str]:
        port = self.address.rsplit(":", 1)[1]
        return self._start(
            "head-again" if again else "head",
            "start", "--head", "--port", port, "--secret-file", str(self.secret_file),
            "--pulse-interval", str(PULSE_S),
            ready="Ctrl-C",
        )  # fmt: skip

    def node(self, num_workers: int = 1) -> subprocess.Popen[str]:
        return self._start(
            f"node{len(self.procs)}",
            "node", "--address", self.address, "--secret-file", str(self.secret_file),
            "--num-workers", str(num_workers), "--pulse-interval", str(PULSE_S),
            ready="joined the head",
        )  # fmt: skip

    def kill_all(self) -> None:
        for proc in self.procs:
            try:
                family = [*proc.children(recursive=True), proc]
            except psutil.NoSuchProcess:
                continue
            for p in family:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
        for popen in self.popens:
            popen.wait(timeout=10)


@pytest.fixture
def standalone(tmp_path: Path, processes) -> Iterator[Standalone]:
    cluster = Standalone(tmp_path)
    try:
        yield cluster
    finally:
        ag.shutdown()
        pids = []
        for proc in cluster.procs:
            try:
                pids += [p.pid for p in [proc, *proc.children(recursive=True)]]
            except psutil.NoSuchProcess:
                pass
        processes.add(pids)
        cluster.kill_all()
        processes.wait_gone()


def test_tasks_wait_for_a_node_to_join_and_say_what_they_wait_for(
    standalone: Standalone, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="actorgrid.runtime")
    standalone.head()
    ag.init(
        address=standalone.address,
        secret=standalone.secret,
        pulse_interval=PULSE_S,
        pending_warning_s=WARNING_S,
    )
    refs = [square.remote(i) for i in range(3)]
    big = square.options(num_cpus=8).remote(8)  # no worker will ever be this big
    with pytest.raises(ag.GetTimeoutError):
        ag.get(refs[0], timeout=1)
    text = wait_for(
        lambda: next((w for w in warnings_in(caplog) if "3 tasks need 1 CPU" in w), None),
        what="the pending warning",
    )
    assert "1 task needs 8 CPUs" in text
    assert "the cluster has 0 alive workers" in text

    standalone.node(num_workers=1)
    assert ag.get(refs, timeout=START_TIMEOUT_S) == [0, 1, 4]
    # A bigger node may still join: the big task waits, and the warning says why.
    caplog.clear()
    text = wait_for(
        lambda: next((w for w in warnings_in(caplog) if "1 task needs 8 CPUs" in w), None),
        timeout=4 * WARNING_S + 10,
        what="the warning about the big task",
    )
    assert "the largest of the cluster's 1 alive workers has 1 CPU" in text
    with pytest.raises(ag.GetTimeoutError):
        ag.get(big, timeout=0.5)
    ag.cancel(big)
    with pytest.raises(ag.TaskCancelledError):
        ag.get(big, timeout=5)


def test_the_warning_shows_a_node_whose_workers_all_crash_loop(
    standalone: Standalone, caplog: pytest.LogCaptureFixture
) -> None:
    # The node agent reports a slot that fails before it is ready as a worker_crash_loop
    # event with its stderr; here the driver publishes one itself, as a node agent would.
    caplog.set_level(logging.WARNING, logger="actorgrid.runtime")
    standalone.head()
    ag.init(
        address=standalone.address,
        secret=standalone.secret,
        pulse_interval=PULSE_S,
        pending_warning_s=WARNING_S,
    )
    from actorgrid._runtime.core import current_runtime

    rt = current_runtime()
    node_id = NodeId(bytes(range(16)))
    stderr = "Traceback (most recent call last):\nModuleNotFoundError: No module named 'numpyy'"
    event = ag.Event("worker_crash_loop", time.time(), node_id=node_id, detail=stderr)
    rt.on_loop(rt.publish, event)
    ref = square.remote(1)
    warning = wait_for(
        lambda: _logged(caplog, "are in a crash loop"), 4 * WARNING_S + 10, "the warning"
    )
    assert f"all workers of node {short(node_id)} are in a crash loop" in warning
    assert "No module named 'numpyy'" in warning
    assert "1 task needs 1 CPU" in warning
    ag.cancel(ref)


def test_an_actor_created_before_any_worker_waits_for_one(standalone: Standalone) -> None:
    standalone.head()
    ag.init(address=standalone.address, secret=standalone.secret, pulse_interval=PULSE_S)

    @ag.remote
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def incr(self) -> int:
            self.n += 1
            return self.n

    counter = Counter.remote()
    named = Counter.options(name="waiting-counter").remote()
    first = counter.incr.remote()
    with pytest.raises(ag.GetTimeoutError):
        ag.get(first, timeout=0.5)
    standalone.node(num_workers=1)
    assert ag.get([first, counter.incr.remote()], timeout=START_TIMEOUT_S) == [1, 2]
    assert ag.get(named.incr.remote(), timeout=START_TIMEOUT_S) == 1
    assert ag.get(ag.get_actor("waiting-counter").incr.remote(), timeout=10) == 2


# --- embedded clusters --------------------------------------------------------------------------


@pytest.fixture
def one_worker(processes) -> Iterator[ag.Cluster]:
    cluster = ag.init(num_workers=1, pulse_interval=PULSE_S, grace_s=1.0)
    try:
        processes.add(w.pid for w in cluster.workers())
        yield cluster
    finally:
        processes.add(cluster.node_pids)
        ag.shutdown()
        processes.wait_gone()


def test_50_tasks_submitted_while_the_only_worker_is_dead_all_finish(
    one_worker: ag.Cluster, processes
) -> None:
    (dead,) = [w.pid for w in one_worker.workers()]
    processes.add([dead])
    os.kill(dead, signal.SIGKILL)
    refs = [square.options(max_retries=0).remote(i) for i in range(50)]
    assert ag.get(refs, timeout=START_TIMEOUT_S) == [i * i for i in range(50)]
    assert dead not in [w.pid for w in one_worker.workers()]
    processes.wait_gone([dead])


@pytest.fixture
def two_workers(request: pytest.FixtureRequest, processes) -> Iterator[ag.Cluster]:
    # PULSE_S, unless a test asks for another interval (indirect parametrization).
    cluster = ag.init(
        num_workers=2,
        pulse_interval=getattr(request, "param", PULSE_S),
        grace_s=1.0,
        worker_restarts=ag.RestartPolicy(max_restarts=-1),
    )
    try:
        processes.add(w.pid for w in cluster.workers())
        yield cluster
    finally:
        processes.add(cluster.node_pids)
        ag.shutdown()
        processes.wait_gone()


@ag.remote
def busy_parent(seconds: float) -> tuple[int, int, float, float]:
    child = whoami_at.remote()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass  # computing: this worker's only CPU stays taken
    child_pid, child_done = ag.get(child)
    return os.getpid(), child_pid, child_done, time.time()


@ag.remote
def whoami_at() -> tuple[int, float]:
    return os.getpid(), time.time()


# The default pulse interval: this test looks for no zombie, and with PULSE_S's 1 s zombie
# window a loaded machine can keep a worker quiet long enough (the busy loop holds the GIL) to
# be taken for dead, and its calls to fail over onto the parent's worker.
@pytest.mark.parametrize("two_workers", [DEFAULT_PULSE_INTERVAL_S], indirect=True)
def test_a_child_of_a_busy_task_runs_on_the_idle_worker(two_workers: ag.Cluster) -> None:
    for _ in range(4):  # placement is randomized: a lucky pass must not hide a bug
        parent_pid, child_pid, child_done, parent_done = ag.get(busy_parent.remote(1.5), timeout=60)
        assert child_pid != parent_pid, [(e.kind, e.detail) for e in two_workers.recent_events()]
        assert child_done < parent_done


def test_calls_to_a_stopped_worker_are_retried_elsewhere_within_the_zombie_window(
    two_workers: ag.Cluster, tmp_path: Path, processes
) -> None:
    markers = [tmp_path / f"m{i}" for i in range(4)]
    refs = [pid_after.remote(str(m), 3.0) for m in markers]
    wait_for(lambda: sum(m.exists() for m in markers) >= 2, what="the tasks to start")
    stopped = int(next(m for m in markers if m.exists()).read_text())
    processes.add([stopped])
    os.kill(stopped, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        wait_for(
            lambda: any(e.kind == "task_retried" for e in two_workers.recent_events()),
            5 * PULSE_S + 10,
            "the calls on the stopped worker to be retried",
        )
        retried_after = time.monotonic() - t0
        pids = ag.get(refs, timeout=60)
    finally:
        try:
            os.kill(stopped, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert stopped not in pids
    assert retried_after < 5 * PULSE_S + 3.0, retried_after


def test_tasks_sent_to_a_stopped_worker_never_reached_are_placed_again(
    two_workers: ag.Cluster, processes
) -> None:
    # This driver has no link yet to the worker it stops: its dial gets no handshake, and
    # gives up after the dial timeout; the tasks never ran there, so they are placed again
    # without spending a retry (max_retries=0).
    stopped = two_workers.workers()[0].pid
    processes.add([stopped])
    os.kill(stopped, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        refs = [square.options(max_retries=0).remote(i) for i in range(20)]
        assert ag.get(refs, timeout=60) == [i * i for i in range(20)]
        assert time.monotonic() - t0 < 5 * PULSE_S + 5.0
    finally:
        try:
            os.kill(stopped, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_a_dial_to_an_address_that_never_answers_gives_up_after_the_dial_timeout(
    one_worker: ag.Cluster,
) -> None:
    import trio

    from actorgrid._runtime.core import current_runtime

    rt = current_runtime()
    with socket.socket() as listener:
        # The kernel completes TCP connections to it, but nothing ever answers the handshake:
        # a hung or stopped process behind a live socket.
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        host, port = listener.getsockname()

        async def dial() -> tuple[str, float]:
            t0 = trio.current_time()
            peer = rt.peer_for(f"{host}:{port}")
            while not peer.closed:
                await trio.sleep(0.02)
            return peer.close_reason, trio.current_time() - t0

        reason, elapsed = rt.portal.run(dial)
    assert f"could not connect to {host}:{port} within {rt.dial_timeout_s:g} s" in reason
    assert rt.dial_timeout_s <= elapsed < rt.dial_timeout_s + 3.0


# --- losing the head ----------------------------------------------------------------------------


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> str | None:
    return next((m for m in caplog.messages if text in m), None)


def test_a_driver_says_it_lost_a_stalled_head_and_reconnects(
    standalone: Standalone, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actorgrid.runtime")
    head = standalone.head()
    standalone.node(num_workers=1)
    cluster = ag.init(
        address=standalone.address,
        secret=standalone.secret,
        pulse_interval=PULSE_S,
        pending_warning_s=WARNING_S,
    )
    assert ag.get(square.remote(2), timeout=START_TIMEOUT_S) == 4
    os.kill(head.pid, signal.SIGSTOP)
    try:
        lost = wait_for(
            lambda: _logged(caplog, f"lost the head at {standalone.address}"),
            5 * PULSE_S + 5,
            "the driver to notice",
        )
        assert lost.endswith("; reconnecting")
        # Work that waits meanwhile says the head is the problem, not a missing worker.
        big = square.options(num_cpus=8).remote(1)
        warning = wait_for(
            lambda: _logged(caplog, "1 task needs 8 CPUs"), 4 * WARNING_S + 5, "the warning"
        )
        assert f"lost the head at {standalone.address}" in warning
        assert "alive workers" not in warning
        time.sleep(1.0)  # well past the zombie window: every link to the head is dropped
    finally:
        os.kill(head.pid, signal.SIGCONT)
    wait_for(lambda: _logged(caplog, "reconnected to the head"), 30, "the reconnection")
    # The head answers again; the node, which it declared dead, joins again as a new one.
    wait_for(cluster.nodes, START_TIMEOUT_S, "the node to join again")
    assert ag.get(square.remote(3), timeout=START_TIMEOUT_S) == 9
    ag.cancel(big)


def test_a_driver_reconnects_to_a_head_restarted_on_the_same_address(
    standalone: Standalone, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actorgrid.runtime")
    head = standalone.head()
    standalone.node(num_workers=1)
    cluster = ag.init(address=standalone.address, secret=standalone.secret, pulse_interval=PULSE_S)
    assert ag.get(square.remote(2), timeout=START_TIMEOUT_S) == 4
    head.kill()
    head.wait(timeout=10)
    wait_for(lambda: _logged(caplog, f"lost the head at {standalone.address}"), 10, "the loss")
    standalone.head(again=True)
    wait_for(lambda: _logged(caplog, "reconnected to the head"), 30, "the reconnection")
    assert isinstance(cluster.nodes(), list)
    # The node rejoins the new head on its own; the driver learns of its workers and its
    # tasks run there.
    assert ag.get(square.remote(3), timeout=START_TIMEOUT_S) == 9
