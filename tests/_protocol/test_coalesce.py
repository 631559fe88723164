"""A link's writer coalesces runs of calls into one frame (``coalesce.py``): the frames decode
to the same messages in the same order, a run never passes its caps, and nothing else is
touched."""

from __future__ import annotations

from typing import Any

from actorgrid._protocol import codec
from actorgrid._protocol.coalesce import COALESCE_MAX_BYTES, COALESCE_MAX_CALLS, encode_frames
from actorgrid._protocol.messages import (
    ActorCalls,
    ActorInfo,
    CallActor,
    Credit,
    Payload,
    SubmitTask,
    SubmitTasks,
    TaskResult,
    TaskResults,
)

CAP = 64 * 1024 * 1024  # a link's usual frame cap


def call(i: int, nbytes: int = 8) -> CallActor:
    return CallActor(i.to_bytes(16, "big"), b"a" * 16, "ping", Payload(b"x" * nbytes), "")


def task(i: int, actor: ActorInfo | None = None) -> SubmitTask:
    return SubmitTask(i.to_bytes(16, "big"), b"f" * 16, None, Payload(b"args"), 1.0, actor)


def decoded(frames: list[list[Any]]) -> list[Any]:
    return [codec.decode(b"".join(bytes(p) for p in frame)) for frame in frames]


def flattened(messages: list[Any]) -> list[Any]:
    out: list[Any] = []
    for m in messages:
        if isinstance(m, ActorCalls):
            out.extend(m.calls)
        elif isinstance(m, SubmitTasks):
            out.extend(m.tasks)
        elif isinstance(m, TaskResults):
            out.extend(m.results)
        else:
            out.append(m)
    return out


def test_runs_of_calls_become_one_frame_each_and_keep_their_order() -> None:
    messages: list[Any] = [
        *(call(i) for i in range(5)),
        Credit(b"a" * 16, 1),
        call(5),
        *(task(i) for i in range(6, 9)),
        call(9),
        call(10),
    ]
    frames = decoded(encode_frames(messages, CAP))
    assert [type(m).__name__ for m in frames] == [
        "ActorCalls",
        "Credit",
        "CallActor",  # alone: sent as it always was
        "SubmitTasks",
        "ActorCalls",
    ]
    assert flattened(frames) == messages


def test_a_task_that_creates_an_agent_is_never_coalesced() -> None:
    info = ActorInfo(b"a" * 16, "127.0.0.1:1", "coroutine", "agent")
    messages = [task(1), task(2, info), task(3), task(4)]
    frames = decoded(encode_frames(messages, CAP))
    assert [type(m).__name__ for m in frames] == ["SubmitTask", "SubmitTask", "SubmitTasks"]
    assert flattened(frames) == messages


def test_a_run_stays_under_its_caps() -> None:
    big = COALESCE_MAX_BYTES // 3
    messages = [call(i, big if i % 4 == 0 else 8) for i in range(3 * COALESCE_MAX_CALLS)]
    frames = encode_frames(messages, CAP)
    for frame in frames:
        assert sum(len(p) for p in frame) <= COALESCE_MAX_BYTES
    runs = decoded(frames)
    assert all(len(flattened([m])) <= COALESCE_MAX_CALLS for m in runs)
    assert flattened(runs) == messages
    assert len(frames) < len(messages) // 2


def test_a_small_frame_cap_coalesces_less_and_an_unknown_one_nothing() -> None:
    messages = [call(i) for i in range(100)]
    for frame in encode_frames(messages, 1000):
        assert sum(len(p) for p in frame) <= 1000 // 4 + 64  # the estimate errs above
    assert len(encode_frames(messages, 0)) == len(messages)


def answer(i: int, ok: bool = True) -> TaskResult:
    return TaskResult(i.to_bytes(16, "big"), ok, Payload(b"v%d" % i))


def test_runs_of_answers_become_one_frame_for_a_runtime_and_stay_apart_for_the_head() -> None:
    messages: list[Any] = [
        *(answer(i, ok=i % 3 != 0) for i in range(4)),
        Credit(b"a" * 16, 1),
        answer(4),
        call(5),
        answer(6),
        answer(7),
    ]
    frames = decoded(encode_frames(messages, CAP, answers=True))
    assert [type(m).__name__ for m in frames] == [
        "TaskResults",
        "Credit",
        "TaskResult",  # alone: sent as it always was
        "CallActor",
        "TaskResults",
    ]
    assert flattened(frames) == messages
    # A link to the head (or a node agent): it takes TaskResult only, each in its own frame.
    plain = decoded(encode_frames(messages, CAP))
    assert [type(m) for m in plain] == [type(m) for m in messages]
    assert plain == messages
