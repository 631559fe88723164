"""``ag.cancel(ref)`` on a one-worker cluster: a queued call never runs, a running async call
is cancelled at its next checkpoint (its ``finally`` runs), and ``ag.get`` raises
TaskCancelledError either way."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 1}

pytestmark = pytest.mark.usefixtures("cluster")

LONG_S = 60.0


@ag.remote
class Recorder:
    """Notes events and lets callers wait for them, instead of sleeping."""

    def __init__(self):
        self.events = {}

    def _event(self, what):
        return self.events.setdefault(what, trio.Event())

    async def note(self, what):
        self._event(what).set()

    async def wait_for(self, what):
        await self._event(what).wait()
        return what

    async def seen(self, what):
        return what in self.events and self.events[what].is_set()


@ag.remote
def nap(seconds):
    time.sleep(seconds)
    return "napped"


@ag.remote
def write_marker(path):
    Path(path).write_text("ran")
    return "written"


@ag.remote
async def sleep_with_finally(recorder, seconds):
    recorder.note.remote("started")
    try:
        await trio.sleep(seconds)
    finally:
        recorder.note.remote("finally")
    return "finished"


@ag.remote
class Sleeper:
    async def sleep(self, recorder, seconds):
        recorder.note.remote("method started")
        try:
            await trio.sleep(seconds)
        finally:
            recorder.note.remote("method finally")
        return "finished"

    async def alive(self):
        return True


@ag.remote
class Journal:
    def __init__(self):
        self.entries = []

    def write(self, entry, seconds=0.0):
        time.sleep(seconds)
        self.entries.append(entry)
        return entry

    def read(self):
        return list(self.entries)


def test_cancelled_queued_task_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    blocker = nap.remote(2.0)  # holds the only CPU of the only worker
    victim = write_marker.remote(str(marker))
    ag.cancel(victim)
    with pytest.raises(ag.TaskCancelledError):
        ag.get(victim, timeout=30)
    # Cancelling a queued task answers at once; it does not wait for the blocker.
    assert ag.wait([blocker], timeout=0) == ([], [blocker])
    assert ag.get(blocker, timeout=30) == "napped"
    # Tasks run in submission order, so one sent after the victim has now run too.
    assert ag.get(write_marker.remote(str(tmp_path / "later")), timeout=30) == "written"
    assert not marker.exists()


def test_running_async_task_is_cancelled_at_its_next_checkpoint() -> None:
    recorder = Recorder.remote()
    ref = sleep_with_finally.remote(recorder, LONG_S)
    ag.get(recorder.wait_for.remote("started"), timeout=30)
    start = time.monotonic()
    ag.cancel(ref)
    with pytest.raises(ag.TaskCancelledError):
        ag.get(ref, timeout=30)
    assert time.monotonic() - start < 10
    assert ag.get(recorder.wait_for.remote("finally"), timeout=30) == "finally"


def test_running_async_actor_method_is_cancelled_and_the_actor_lives_on() -> None:
    recorder = Recorder.remote()
    sleeper = Sleeper.remote()
    ref = sleeper.sleep.remote(recorder, LONG_S)
    ag.get(recorder.wait_for.remote("method started"), timeout=30)
    ag.cancel(ref)
    with pytest.raises(ag.TaskCancelledError):
        ag.get(ref, timeout=30)
    assert ag.get(recorder.wait_for.remote("method finally"), timeout=30) == "method finally"
    assert ag.get(sleeper.alive.remote(), timeout=30) is True


def test_cancelled_queued_actor_call_never_runs() -> None:
    journal = Journal.remote()
    first = journal.write.remote("first", 1.0)
    victim = journal.write.remote("victim")
    last = journal.write.remote("last")
    ag.cancel(victim)
    with pytest.raises(ag.TaskCancelledError):
        ag.get(victim, timeout=30)
    assert ag.get([first, last], timeout=30) == ["first", "last"]
    assert ag.get(journal.read.remote(), timeout=30) == ["first", "last"]


@ag.remote
def nap_noted(recorder, seconds):
    recorder.note.remote("nap started")
    time.sleep(seconds)
    return "napped"


def test_cancel_of_a_running_sync_task_still_fails_its_get() -> None:
    # A running sync task cannot be interrupted, but its caller gets no result from it.
    recorder = Recorder.remote()
    ref = nap_noted.remote(recorder, 0.5)
    ag.get(recorder.wait_for.remote("nap started"), timeout=30)
    ag.cancel(ref)
    with pytest.raises(ag.TaskCancelledError):
        ag.get(ref, timeout=30)
    assert ag.get(nap.remote(0), timeout=30) == "napped"


def test_cancel_after_completion_changes_nothing() -> None:
    ref = nap.remote(0)
    assert ag.get(ref, timeout=30) == "napped"
    ag.cancel(ref)
    assert ag.get(ref, timeout=30) == "napped"
    stored = ag.put(5)
    ag.cancel(stored)
    assert ag.get(stored) == 5


def test_cancel_takes_only_refs() -> None:
    with pytest.raises(TypeError, match="ObjectRef"):
        ag.cancel("not a ref")
