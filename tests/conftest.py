"""Shared fixtures for the tests that run real clusters (tests/_runtime, tests/_node).

- ``cluster``: one embedded cluster per test module, started with ``ag.init(**CLUSTER_OPTIONS)``
  (a module may set ``CLUSTER_OPTIONS``; default two workers) and shut down when the module is
  done, checking that every worker process is gone. Only one cluster can exist per process,
  so a module either uses this fixture or starts its own clusters, never both.
- ``processes``: a ``ProcessWatch`` that remembers processes and asserts they are gone; use it
  for any process a test starts or kills.
- ``watched_init(processes, **options)``: for a module's own cluster fixture, ``ag.init`` whose
  workers and node processes are watched, shut down and waited gone at exit.

Functions and classes defined in the test modules are made remote and shipped to workers.
Under ``--import-mode=importlib`` the modules are importable in this process, so cloudpickle
would ship them by reference and each worker would import the test module from its current
directory. They are registered to ship by value instead, as a script's ``__main__`` is, which
keeps the tests independent of the directory pytest runs in.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest
from hostlab import Hosts, netns_unavailable, not_zombie

import actorgrid as ag

_BY_VALUE_DIRS = ("_runtime", "_node", "_scheduler", "_pool", "_dashboard")
DEFAULT_CLUSTER_OPTIONS: dict[str, Any] = {"num_workers": 2}
GONE_TIMEOUT_S = 10.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    seen: set[str] = set()
    for item in items:
        module = getattr(item, "module", None)
        if module is None or module.__name__ in seen:
            continue
        seen.add(module.__name__)
        if Path(module.__file__).parent.name in _BY_VALUE_DIRS:
            cloudpickle.register_pickle_by_value(module)


def _alive(pid: int, create_time: float | None) -> bool:
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return False  # the pid was reused by an unrelated process
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ProcessWatch:
    """Processes a test started (directly or not), to check that they go away."""

    def __init__(self) -> None:
        self._known: dict[int, float | None] = {}

    def add(self, pids: Iterable[int]) -> None:
        for pid in pids:
            try:
                self._known[pid] = psutil.Process(pid).create_time()
            except psutil.NoSuchProcess:
                self._known[pid] = None

    def alive(self, pids: Iterable[int] | None = None) -> list[int]:
        pids = list(self._known) if pids is None else list(pids)
        return [pid for pid in pids if _alive(pid, self._known.get(pid))]

    def wait_gone(self, pids: Iterable[int] | None = None, timeout: float = GONE_TIMEOUT_S) -> None:
        """Poll until every process is gone; fail naming the survivors after ``timeout``."""
        pids = list(self._known) if pids is None else list(pids)
        deadline = time.monotonic() + timeout
        while (left := self.alive(pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"processes still alive after {timeout} s: {left}"

    def kill_leftovers(self) -> None:
        for pid in self.alive():
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture
def processes() -> Iterator[ProcessWatch]:
    watch = ProcessWatch()
    try:
        yield watch
    finally:
        watch.kill_leftovers()


@contextlib.contextmanager
def watched_init(processes: ProcessWatch, **options: Any) -> Iterator[ag.Cluster]:
    """``ag.init(**options)``; at exit, ``ag.shutdown()`` and every worker and node process of
    the cluster waited gone (``processes`` kills what is left, even on failure)."""
    cluster = ag.init(**options)
    try:
        processes.add(w.pid for w in cluster.workers())
        yield cluster
    finally:
        processes.add(cluster.node_pids)
        ag.shutdown()
        processes.wait_gone()


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[ag.Cluster]:
    options = getattr(request.module, "CLUSTER_OPTIONS", DEFAULT_CLUSTER_OPTIONS)
    watch = ProcessWatch()
    cluster = ag.init(**options)
    try:
        watch.add(w.pid for w in cluster.workers())
        yield cluster
    finally:
        ag.shutdown()
        try:
            watch.wait_gone()
        finally:
            watch.kill_leftovers()


@pytest.fixture
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    h = Hosts(tmp_path_factory.mktemp("hosts"))
    try:
        h.create()
        yield h
    finally:
        pids = h.destroy()
        alive = [pid for pid in pids if psutil.pid_exists(pid) and not_zombie(pid)]
        assert not alive, f"processes outlived the test: {alive}"
