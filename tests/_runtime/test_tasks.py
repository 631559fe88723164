"""Remote functions on a live two-worker cluster: ``.remote()``, ``.options()``, ``ag.get``,
``ag.wait``, ``ag.put``, how ref arguments are resolved, nested calls and large values."""

from __future__ import annotations

import os
import time
import zlib

import numpy as np
import pytest
import trio

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 2}
LONG_S = 60.0  # "never finishes" within a test; such calls are cancelled at the end

pytestmark = pytest.mark.usefixtures("cluster")


@ag.remote
def add(a, b=0, *, c=0):
    return a + b + c


@ag.remote
async def async_add(a, b=0):
    await trio.sleep(0)
    return a + b


@ag.remote
async def sleep_then(value, seconds):
    await trio.sleep(seconds)
    return value


@ag.remote
def describe(*args, **kwargs):
    """What the task received: the type and, for ObjectRefs, the value behind them."""

    def one(x):
        if isinstance(x, ag.ObjectRef):
            return ("ref", ag.get(x))
        if isinstance(x, list):
            return [one(i) for i in x]
        return ("value", x)

    return [one(a) for a in args], {k: one(v) for k, v in kwargs.items()}


# --- .remote() and options --------------------------------------------------------------------


def test_sync_and_async_functions_return_object_refs() -> None:
    ref = add.remote(1, 2, c=3)
    assert isinstance(ref, ag.ObjectRef)
    assert ag.get(ref) == 6
    aref = async_add.remote(4, b=5)
    assert isinstance(aref, ag.ObjectRef)
    assert ag.get(aref) == 9
    assert isinstance(add, ag.RemoteFunction)


def test_get_of_a_list_keeps_the_order() -> None:
    refs = [sleep_then.remote(i, 0.05 * (10 - i)) for i in range(10)]
    assert ag.get(refs) == list(range(10))
    assert ag.get([]) == []


def test_many_tasks() -> None:
    refs = [add.remote(i, i) for i in range(500)]
    assert ag.get(refs) == [2 * i for i in range(500)]


def test_tasks_run_on_workers_not_in_the_driver(cluster) -> None:
    @ag.remote
    def pid():
        return os.getpid()

    pids = set(ag.get([pid.remote() for _ in range(20)]))
    assert os.getpid() not in pids
    assert pids <= {w.pid for w in cluster.workers()}


@ag.remote
def interval(seconds):
    start = time.monotonic()
    time.sleep(seconds)
    return os.getpid(), start, time.monotonic()


def _overlap_on_same_worker(spans) -> bool:
    for i, (pid_a, start_a, end_a) in enumerate(spans):
        for pid_b, start_b, end_b in spans[i + 1 :]:
            if pid_a == pid_b and start_a < end_b and start_b < end_a:
                return True
    return False


def test_num_cpus_option_is_honoured() -> None:
    # Each worker offers one CPU. Four tasks on two workers put at least two on one worker:
    # with num_cpus=1 (the default) those run one after the other, with 0.5 side by side.
    whole = ag.get([interval.remote(0.4) for _ in range(4)])
    assert not _overlap_on_same_worker(whole), whole
    halves = ag.get([interval.options(num_cpus=0.5).remote(0.4) for _ in range(4)])
    assert _overlap_on_same_worker(halves), halves


def test_options_returns_a_variant_and_leaves_the_original_alone() -> None:
    variant = add.options(num_cpus=0.25)
    assert variant is not add
    assert ag.get(variant.remote(2, 3)) == 5
    assert ag.get(add.remote(2, 3)) == 5


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="num_gpu"):
        add.options(num_gpu=1)
    with pytest.raises(TypeError, match="bogus"):
        ag.remote(bogus=True)


def test_calling_a_remote_function_directly_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"add\.remote\("):
        add(1, 2)
    with pytest.raises(TypeError, match=r"\.remote\("):
        async_add(1)


# --- ag.get timeouts -------------------------------------------------------------------------


def test_get_timeout_raises_get_timeout_error() -> None:
    ref = sleep_then.remote("late", LONG_S)
    try:
        start = time.monotonic()
        with pytest.raises(ag.GetTimeoutError) as info:
            ag.get(ref, timeout=0.2)
        assert time.monotonic() - start < 10
        assert isinstance(info.value, TimeoutError)
        # A list with one slow ref times out the same way.
        with pytest.raises(TimeoutError):
            ag.get([add.remote(1), ref], timeout=0.2)
    finally:
        ag.cancel(ref)


def test_get_with_timeout_returns_when_ready() -> None:
    assert ag.get(sleep_then.remote("soon", 0.1), timeout=30) == "soon"


# --- ag.wait ----------------------------------------------------------------------------------


def test_wait_returns_ready_and_not_ready_in_input_order() -> None:
    slow_a = sleep_then.remote("a", LONG_S)
    slow_b = sleep_then.remote("b", LONG_S)
    fast_a = ag.put("x")
    fast_b = ag.put("y")
    refs = [slow_a, fast_a, slow_b, fast_b]
    try:
        ready, not_ready = ag.wait(refs, num_returns=2, timeout=30)
        assert ready == [fast_a, fast_b]
        assert not_ready == [slow_a, slow_b]
        # num_returns=1 takes the first ready one in input order, not the first to finish.
        ready, not_ready = ag.wait(refs, num_returns=1, timeout=30)
        assert ready == [fast_a]
        assert not_ready == [slow_a, slow_b, fast_b]
    finally:
        ag.cancel(slow_a)
        ag.cancel(slow_b)


def test_wait_for_all_keeps_input_order_not_completion_order() -> None:
    refs = [sleep_then.remote(i, s) for i, s in enumerate([0.6, 0.3, 0.0])]
    ready, not_ready = ag.wait(refs, num_returns=3, timeout=30)
    assert ready == refs
    assert not_ready == []


def test_wait_timeout_returns_what_is_ready() -> None:
    slow = sleep_then.remote("slow", LONG_S)
    fast = ag.put(1)
    try:
        start = time.monotonic()
        ready, not_ready = ag.wait([slow, fast], num_returns=2, timeout=0.3)
        elapsed = time.monotonic() - start
        assert ready == [fast]
        assert not_ready == [slow]
        assert 0.25 <= elapsed < 10
    finally:
        ag.cancel(slow)


def test_wait_rejects_bad_arguments() -> None:
    ref = ag.put(1)
    with pytest.raises(ValueError, match="num_returns"):
        ag.wait([ref], num_returns=2)
    with pytest.raises(ValueError, match="same ObjectRef"):
        ag.wait([ref, ref])
    with pytest.raises(TypeError):
        ag.wait([1])


# --- ag.put and ref arguments ------------------------------------------------------------------


def test_put_then_get_and_pass_to_a_task() -> None:
    value = {"k": [1, 2, 3], "s": "text"}
    ref = ag.put(value)
    assert isinstance(ref, ag.ObjectRef)
    assert ag.get(ref) == value
    assert ag.get(describe.remote(ref)) == ([("value", value)], {})


def test_top_level_ref_arguments_are_resolved_before_the_call() -> None:
    pending = sleep_then.remote(41, 0.3)  # not ready yet when the call is made
    stored = ag.put("stored")
    got = ag.get(describe.remote(pending, 1, key=stored, other=sleep_then.remote("kw", 0.2)))
    assert got == (
        [("value", 41), ("value", 1)],
        {"key": ("value", "stored"), "other": ("value", "kw")},
    )
    # The same for async remote functions.
    assert ag.get(async_add.remote(sleep_then.remote(1, 0.2), b=ag.put(2))) == 3


def test_refs_nested_in_a_list_arrive_as_refs() -> None:
    stored = ag.put("stored")
    computed = add.remote(20, 22)
    got = ag.get(describe.remote([stored, computed, 3], key=[computed]))
    assert got == (
        [[("ref", "stored"), ("ref", 42), ("value", 3)]],
        {"key": [("ref", 42)]},
    )


def test_a_failed_ref_argument_fails_the_call() -> None:
    @ag.remote
    def fail():
        raise LookupError("upstream failed")

    with pytest.raises(LookupError, match="upstream failed"):
        ag.get(add.remote(fail.remote(), 1))


# --- nested calls --------------------------------------------------------------------------------


@ag.remote
def fan_out(n):
    return sum(ag.get([add.remote(i, i) for i in range(n)]))


@ag.remote
async def async_fan_out(n):
    refs = [add.remote(i, i) for i in range(n)]
    values = [await ref for ref in refs]
    return sum(values) + sum(await ag.get_async([async_add.remote(i) for i in range(n)]))


@ag.remote
def depth(n):
    return 0 if n == 0 else 1 + ag.get(depth.remote(n - 1))


def test_nested_sync_calls() -> None:
    assert ag.get(fan_out.remote(8)) == 2 * sum(range(8))


def test_nested_async_calls() -> None:
    assert ag.get(async_fan_out.remote(8)) == 3 * sum(range(8))


def test_recursive_calls_deeper_than_the_cluster_has_cpus() -> None:
    # Each level blocks in ag.get while the next runs: two workers, six levels deep.
    assert ag.get(depth.remote(6), timeout=60) == 6


# --- large values --------------------------------------------------------------------------------

BIG_BYTES = 50 * 1024 * 1024


@ag.remote
def checksum(array):
    return array.dtype.str, array.shape, zlib.crc32(array)


@ag.remote
def echo(value):
    return value


def _big_array(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, BIG_BYTES, dtype=np.uint8)


def test_large_numpy_argument_round_trips() -> None:
    array = _big_array(1)
    expected = (array.dtype.str, array.shape, zlib.crc32(array))
    assert ag.get(checksum.remote(array), timeout=60) == expected
    back = ag.get(echo.remote(array), timeout=60)
    assert back.shape == array.shape
    assert np.array_equal(back, array)


def test_put_of_a_large_array_passed_to_tasks() -> None:
    array = _big_array(2).view(np.int64).reshape(-1, 1024)
    ref = ag.put(array)
    expected = (array.dtype.str, array.shape, zlib.crc32(array))
    # Two tasks take the same stored object; each worker fetches it from the driver.
    results = ag.get([checksum.remote(ref), checksum.remote(ref)], timeout=60)
    assert results == [expected, expected]
    assert np.array_equal(ag.get(ref), array)


def test_refs_can_be_awaited_from_another_trio_loop() -> None:
    # After ag.init(), the runtime's loop runs on its own thread; a script may still use
    # trio.run for its own code and await refs there.
    async def main() -> None:
        assert await add.remote(1, 2) == 3
        assert await ag.get_async([add.remote(1), async_add.remote(2)]) == [1, 2]
        stored = ag.put("x")
        ready, not_ready = await ag.wait_async([stored], num_returns=1, timeout=30)
        assert (ready, not_ready) == ([stored], [])

    trio.run(main)
