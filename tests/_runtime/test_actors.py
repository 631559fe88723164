"""Class actors on a live two-worker cluster: handles, call order, async actors and
``max_concurrency``, handles passed around, and calls made from inside actors."""

from __future__ import annotations

import os
import pickle
import threading

import cloudpickle
import pytest
import trio

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 2}

pytestmark = pytest.mark.usefixtures("cluster")


@ag.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def incr(self, by=1):
        self.value += by
        return self.value

    def get(self):
        return self.value

    def pid(self):
        return os.getpid()


@ag.remote
class Log:
    def __init__(self):
        self.items = []

    def append(self, item):
        self.items.append(item)

    def read(self):
        return list(self.items)


@ag.remote
class Gauge:
    """An async actor that measures how many of its calls run at once."""

    def __init__(self):
        self.now = 0
        self.peak = 0

    async def hold(self, seconds):
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await trio.sleep(seconds)
        finally:
            self.now -= 1
        return self.peak

    async def peak_seen(self):
        return self.peak


# --- handles and method calls -----------------------------------------------------------------


def test_remote_returns_a_handle_and_methods_return_refs() -> None:
    handle = Counter.remote(10)
    assert isinstance(handle, ag.ActorHandle)
    assert isinstance(Counter, ag.ActorClass)
    ref = handle.incr.remote(5)
    assert isinstance(ref, ag.ObjectRef)
    assert ag.get(ref) == 15
    assert ag.get(handle.incr.remote(by=2)) == 17
    assert ag.get(handle.get.remote()) == 17


def test_actor_state_lives_in_one_worker_process(cluster) -> None:
    handle = Counter.remote()
    pids = set(ag.get([handle.pid.remote() for _ in range(10)]))
    assert len(pids) == 1
    assert pids <= {w.pid for w in cluster.workers()}


def test_calls_from_one_caller_run_in_the_order_sent() -> None:
    log = Log.remote()
    for i in range(500):
        log.append.remote(i)
    assert ag.get(log.read.remote()) == list(range(500))


def test_call_order_holds_when_lone_calls_and_bursts_mix() -> None:
    # A call made while nothing is in flight may take a shorter path than one in a burst;
    # the order must not depend on which path each call took.
    log = Log.remote()
    expected = []
    for i in range(300):
        log.append.remote(i)
        expected.append(i)
        if i % 7 == 0:
            assert ag.get(log.read.remote()) == expected
        elif i % 11 == 0:
            ag.get(log.append.remote(("sync", i)))
            expected.append(("sync", i))
    assert ag.get(log.read.remote()) == expected


def test_calls_from_each_thread_run_in_that_threads_order() -> None:
    log = Log.remote()
    ag.get(log.read.remote())

    def caller(tid: int) -> None:
        for i in range(200):
            ref = log.append.remote((tid, i))
            if i % 25 == 0:
                ag.get(ref)

    threads = [threading.Thread(target=caller, args=(tid,)) for tid in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    items = ag.get(log.read.remote(), timeout=30)
    assert len(items) == 800
    for tid in range(4):
        assert [i for t, i in items if t == tid] == list(range(200))


def test_calls_from_a_task_run_in_the_order_sent() -> None:
    @ag.remote
    def append_many(log, n):
        for i in range(n):
            log.append.remote(i)
        return ag.get(log.read.remote())

    assert ag.get(append_many.remote(Log.remote(), 300)) == list(range(300))


def test_independent_actors_do_not_share_state() -> None:
    a = Counter.remote()
    ag.get(a.get.remote())  # see test_a_burst_of_new_actors_of_one_class
    b = Counter.remote()
    ag.get([a.incr.remote(), a.incr.remote(), b.incr.remote()])
    assert ag.get([a.get.remote(), b.get.remote()]) == [2, 1]


def test_missing_method_is_an_attribute_error_naming_it() -> None:
    handle = Counter.remote()
    with pytest.raises(AttributeError, match="no_such_method"):
        handle.no_such_method.remote()
    # The actor is unharmed.
    assert ag.get(handle.incr.remote()) == 1


def test_direct_calls_are_type_errors_pointing_to_remote() -> None:
    with pytest.raises(TypeError, match=r"Counter\.remote\("):
        Counter()
    handle = Counter.remote()
    with pytest.raises(TypeError, match=r"\.remote\("):
        handle.incr()


def test_handles_compare_by_actor() -> None:
    handle = Counter.remote()
    copy = pickle.loads(pickle.dumps(handle))
    assert copy == handle
    assert copy.actor_id == handle.actor_id
    assert hash(copy) == hash(handle)
    assert Counter.remote() != handle


# --- async actors -------------------------------------------------------------------------------


def test_async_actor_runs_up_to_max_concurrency_calls_at_once() -> None:
    gauge = Gauge.options(max_concurrency=4).remote()
    refs = [gauge.hold.remote(0.5) for _ in range(8)]
    peaks = ag.get(refs, timeout=60)
    assert max(peaks) == 4
    assert ag.get(gauge.peak_seen.remote()) == 4


def test_async_actor_runs_calls_concurrently_by_default() -> None:
    gauge = Gauge.remote()
    ag.get([gauge.hold.remote(0.3) for _ in range(6)], timeout=60)
    assert ag.get(gauge.peak_seen.remote()) == 6


def test_sync_actor_runs_one_call_at_a_time() -> None:
    @ag.remote
    class SyncGauge:
        def __init__(self):
            self.now = 0
            self.peak = 0

        def hold(self, seconds):
            import time

            self.now += 1
            self.peak = max(self.peak, self.now)
            time.sleep(seconds)
            self.now -= 1
            return self.peak

    gauge = SyncGauge.remote()
    assert ag.get([gauge.hold.remote(0.05) for _ in range(6)], timeout=60) == [1] * 6


# --- handles passed around ------------------------------------------------------------------------


@ag.remote
def incr_through(handle, times):
    return [ag.get(handle.incr.remote()) for _ in range(times)]


@ag.remote
class Forwarder:
    def __init__(self, target):
        self.target = target

    def incr(self):
        return ag.get(self.target.incr.remote())

    async def incr_async(self):
        return await self.target.incr.remote()


def test_handles_are_picklable() -> None:
    handle = Counter.remote()
    for dumps in (pickle.dumps, cloudpickle.dumps):
        copy = pickle.loads(dumps(handle))
        assert isinstance(copy, ag.ActorHandle)
        ag.get(copy.incr.remote())
    assert ag.get(handle.get.remote()) == 2


def test_handles_work_when_passed_to_tasks_and_actors() -> None:
    counter = Counter.remote()
    assert ag.get(incr_through.remote(counter, 3)) == [1, 2, 3]
    forwarder = Forwarder.remote(counter)
    assert ag.get(forwarder.incr.remote()) == 4
    assert ag.get(Forwarder.remote(counter).incr_async.remote()) == 5
    assert ag.get(counter.get.remote()) == 5


def test_handle_returned_from_a_task_works_in_the_driver() -> None:
    @ag.remote
    def make_counter():
        return Counter.remote(100)

    handle = ag.get(make_counter.remote())
    assert ag.get(handle.incr.remote()) == 101


# --- calls from inside actors ---------------------------------------------------------------------


@ag.remote
class Node:
    """A link in a chain: forwards each number to the next link without waiting for it; the
    last link records them."""

    def __init__(self, next_node=None):
        self.next = next_node
        self.seen = []

    def forward(self, seq):
        if self.next is None:
            self.seen.append(seq)
        else:
            self.next.forward.remote(seq)

    def drain(self):
        # Ordered behind every forward() sent before it, at each link.
        if self.next is None:
            return list(self.seen)
        return ag.get(self.next.drain.remote())


@ag.remote
class AsyncNode:
    def __init__(self, next_node=None):
        self.next = next_node
        self.seen = []

    async def forward(self, seq):
        if self.next is None:
            self.seen.append(seq)
        else:
            self.next.forward.remote(seq)

    async def drain(self):
        if self.next is None:
            return list(self.seen)
        return await self.next.drain.remote()


@pytest.mark.parametrize("node_class", [Node, AsyncNode], ids=["sync", "async"])
def test_fire_and_forget_calls_from_actors_keep_their_order(node_class) -> None:
    # Each link is up before the next is created: test_a_burst_of_new_actors_of_one_class
    # covers creating several at once.
    last = node_class.remote()
    assert ag.get(last.drain.remote()) == []
    middle = node_class.remote(last)
    assert ag.get(middle.drain.remote()) == []
    first = node_class.remote(middle)
    assert ag.get(first.drain.remote()) == []
    n = 1000
    for seq in range(n):
        first.forward.remote(seq)
    assert ag.get(first.drain.remote(), timeout=60) == list(range(n))


def test_actor_methods_make_nested_calls() -> None:
    @ag.remote
    class Summer:
        def total(self, n):
            @ag.remote
            def square(x):
                return x * x

            return sum(ag.get([square.remote(i) for i in range(n)]))

        async def total_async(self, n):
            @ag.remote
            async def cube(x):
                return x**3

            return sum([await cube.remote(i) for i in range(n)])

    summer = Summer.remote()
    assert ag.get(summer.total.remote(10)) == sum(i * i for i in range(10))
    assert ag.get(summer.total_async.remote(5)) == sum(i**3 for i in range(5))


def _fresh_actor_class(tag):
    # A new class each time: its code has not reached any worker yet.
    @ag.remote
    class Fresh:
        TAG = tag

        def get_tag(self):
            return self.TAG

    return Fresh


def test_a_burst_of_new_actors_of_one_class() -> None:
    for round_ in range(10):
        cls = _fresh_actor_class(round_)
        handles = [cls.remote() for _ in range(6)]
        assert ag.get([h.get_tag.remote() for h in handles], timeout=60) == [round_] * 6


@ag.remote
class FailsToStart:
    def __init__(self):
        raise ValueError("no config")

    def ping(self):
        return "pong"


def test_calls_queued_for_an_actor_whose_constructor_fails_are_over(cluster):
    handle = FailsToStart.remote()
    refs = [handle.ping.remote() for _ in range(3)]
    for ref in refs:
        with pytest.raises(ag.ActorDiedError, match="failed in its constructor"):
            ag.get(ref, timeout=30)
    # Refused calls are over: none is still listed as running on its worker (such a leftover
    # made shutdown wait out the whole grace period for it).
    ids = {ref.id for ref in refs}
    assert [t for t in cluster.status().tasks if t.task_id in ids] == []
