"""Requests to the head in flight when the head link closes (``_runtime/headlink.py``).

Real processes: ``actorgrid up`` (a head and one worker, in processes of their own) and a
driver in this process. A request is made certain to be in flight by stopping the head
(SIGSTOP) before it is sent: the head cannot answer it. The driver's link to the head is then
shut down from the test (its socket), as a reset would, and the head let go on (SIGCONT):
the driver dials it again. A name lookup is sent again on the new link and succeeds; a
request that changes something at the head is not, and fails saying why; a lookup whose link
does not come back within the link's wait fails with the clear error.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import attrs
import psutil
import pytest
import trio
import trio.testing

import actorgrid as ag
from actorgrid._protocol.envmessages import StopJob
from actorgrid._runtime import current
from actorgrid._runtime.headlink import HeadLink

PULSE_S = 0.5
START_TIMEOUT_S = 60.0


@ag.remote
class Keeper:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


@attrs.frozen
class Head:
    address: str
    secret: bytes
    pid: int


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    folder = tmp_path_factory.mktemp("headlink")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cluster_file = folder / "cluster.json"
    env = {**os.environ, "ACTORGRID_CLUSTER_FILE": str(cluster_file), "PYTHONUNBUFFERED": "1"}
    env.pop("ACTORGRID_ADDRESS", None)
    env.pop("ACTORGRID_SECRET", None)
    argv = [sys.executable, "-m", "actorgrid.cli", "up", "--num-workers", "1"]
    argv += ["--port", str(port), "--pulse-interval", str(PULSE_S)]
    pids: list[int] = []
    try:
        up = subprocess.run(
            argv, cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        sidecar = cluster_file.with_name("cluster.processes.json")
        if sidecar.exists():
            pids.append(int(json.loads(sidecar.read_text())["head"]["pid"]))
        assert up.returncode == 0, up.stdout + up.stderr
        yield Head(f"127.0.0.1:{port}", ag.ClusterFile.load(cluster_file).secret, pids[0])
    finally:
        procs: list[psutil.Process] = []
        for pid in pids:
            try:
                root = psutil.Process(pid)
                procs += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for proc in procs:
            try:
                proc.send_signal(signal.SIGCONT)  # a stopped head still dies, but be sure
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        _gone, alive = psutil.wait_procs(procs, timeout=30)
        assert not alive, f"processes outlived the test: {alive}"


@asynccontextmanager
async def stopped(head: Head) -> AsyncIterator[None]:
    """The head process stopped (it answers nothing) inside the block, going on after it."""
    os.kill(head.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(head.pid, signal.SIGCONT)


def cut(link: HeadLink) -> None:
    """Shut the driver's side of its head link down, as a connection reset would."""
    assert link.peer is not None
    stream = link.peer._stream
    assert stream is not None
    stream.sock.shutdown(socket.SHUT_RDWR)


async def test_a_name_lookup_in_flight_when_the_head_link_closes_is_sent_again(
    head: Head,
) -> None:
    async with ag.connect(address=head.address, secret=head.secret, pulse_interval=PULSE_S):
        keeper = Keeper.options(name="keeper", lifetime="detached").remote()
        assert await keeper.incr.remote() == 1
        link = current.get().headlink
        assert isinstance(link, HeadLink)
        old = link.peer
        found: list[ag.ActorHandle[Keeper]] = []

        async def look() -> None:
            found.append(await ag.get_actor_async("keeper"))

        with trio.fail_after(START_TIMEOUT_S):
            async with trio.open_nursery() as nursery, stopped(head):
                nursery.start_soon(look)
                await trio.testing.wait_all_tasks_blocked()  # the lookup is sent, unanswered
                assert not found
                cut(link)
            # The lookup waited for the new link and was answered on it.
            assert link.peer is not old
            assert await found[0].incr.remote() == 2


async def test_a_request_that_changes_the_head_is_not_sent_again(head: Head) -> None:
    async with ag.connect(address=head.address, secret=head.secret, pulse_interval=PULSE_S):
        rt = current.get()
        link = rt.headlink
        failed: list[Exception] = []

        async def stop_job() -> None:
            try:
                await rt.head_request(lambda rid: StopJob(rid, "no-such-job"))
            except ag.ActorgridError as exc:
                failed.append(exc)

        with trio.fail_after(START_TIMEOUT_S):
            async with trio.open_nursery() as nursery, stopped(head):
                nursery.start_soon(stop_job)
                await trio.testing.wait_all_tasks_blocked()
                cut(link)
                await trio.testing.wait_all_tasks_blocked()
            (error,) = failed
            assert "closed before it answered StopJob" in str(error)
            assert "not sent again" in str(error)


async def test_a_lookup_whose_link_does_not_come_back_in_time_fails_clearly(head: Head) -> None:
    async with ag.connect(address=head.address, secret=head.secret, pulse_interval=PULSE_S):
        link = current.get().headlink
        link.wait_s = 1.0
        with trio.fail_after(START_TIMEOUT_S):
            async with stopped(head):
                async with trio.open_nursery() as nursery:
                    failed: list[Exception] = []

                    async def look() -> None:
                        try:
                            await ag.get_actor_async("keeper")
                        except ag.ActorgridError as exc:
                            failed.append(exc)

                    nursery.start_soon(look)
                    await trio.testing.wait_all_tasks_blocked()
                    cut(link)
                # While the head is stopped, no new link can be made: the lookup gave up.
                (error,) = failed
                assert "no new one came up within 1 s" in str(error)
                assert "reconnecting" in str(error)
