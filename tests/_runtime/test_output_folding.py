"""The pure parts of worker output: line tagging, folding at the driver, task records."""

from __future__ import annotations

import time

from actorgrid._node.observing import task_records
from actorgrid._protocol.messages import Event
from actorgrid._runtime.output import LineFolder, decode_line


def test_identical_lines_are_shown_once_then_counted_when_the_window_ends() -> None:
    folder = LineFolder(window_s=5.0)
    assert folder.feed("(f pid=1 node=a)", "same", now=0.0) == ["(f pid=1 node=a) same"]
    for i in range(6):
        assert folder.feed(f"(f pid={i} node=b)", "same", now=1.0 + i * 0.1) == []
    assert folder.feed("(f pid=1 node=a)", "other", now=2.0) == ["(f pid=1 node=a) other"]
    assert folder.expire(now=4.9) == []
    assert folder.expire(now=5.0) == ["(f pid=5 node=b) same [repeated 6x across cluster]"]
    # "other" was never repeated: it ends without a count.
    assert folder.expire(now=7.0) == []
    # After the window the line is news again.
    assert folder.feed("(f pid=1 node=a)", "same", now=8.0) == ["(f pid=1 node=a) same"]


def test_the_folder_holds_a_bounded_number_of_lines() -> None:
    folder = LineFolder(window_s=60.0, max_keys=3)
    for text in "abc":
        folder.feed("(p)", text, now=0.0)
    folder.feed("(p)", "a", now=0.1)
    # A fourth kind of line pushes out the oldest, reporting its count early.
    assert folder.feed("(p)", "d", now=0.2) == ["(p) a [repeated 1x across cluster]", "(p) d"]
    assert folder.flush() == []


def test_tagged_lines_decode_and_plain_ones_do_not() -> None:
    assert decode_line("\x1esquare\x1f127.0.0.1:5000\x1fhello\x1fworld") == (
        "square",
        "127.0.0.1:5000",
        "hello\x1fworld",
    )
    assert decode_line("a plain line") is None
    assert decode_line("\x1ebroken") is None


def test_task_records_follow_the_latest_state_of_each_task() -> None:
    t0 = time.time()
    a, b = b"a" * 16, b"b" * 16
    w1, w2 = b"1" * 16, b"2" * 16
    events = [
        Event("task_submitted", t0, task_id=a, name="f"),
        Event("task_scheduled", t0 + 0.1, task_id=a, name="f", worker_id=w1),
        Event("task_submitted", t0 + 0.1, task_id=b, name="g"),
        Event("task_started", t0 + 0.2, task_id=a, name="f", worker_id=w1),
        Event("task_failed", t0 + 0.4, task_id=a, name="f", worker_id=w1, error="E: x"),
        Event("task_retried", t0 + 0.5, task_id=a, name="f", error="it raised E: x"),
        Event("task_started", t0 + 0.6, task_id=a, name="f", worker_id=w2),
        Event("task_finished", t0 + 1.6, task_id=a, name="f", worker_id=w2),
        Event("worker_started", t0 + 2),
    ]
    first, second = task_records(events)
    assert (first.task_id, first.name, first.state, first.worker_id) == (a, "f", "finished", w2)
    assert first.attempts == 2
    assert first.duration_s is not None and abs(first.duration_s - 1.0) < 1e-6
    assert (second.name, second.state, second.worker_id, second.duration_s) == (
        "g",
        "submitted",
        None,
        None,
    )
