"""``@ag.method(inline=True)``: a sync actor method run on the worker's loop, not a pool thread.

What a user checks: the method runs (on the worker's main thread), answers and raises as any
method does, keeps the actor's call order when mixed with ordinary methods, may call other
actors; a blocking one is reported by name and moved back to pool threads.
One embedded cluster for the module (conftest's ``cluster``: real worker processes).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

import actorgrid as ag
from actorgrid._runtime.inline import INLINE_STALL_S, _inline_names, _loop_names, _Watch

OUTPUT_TIMEOUT_S = 30.0
GET_TIMEOUT_S = 60.0


@ag.remote
class Tally:
    def __init__(self) -> None:
        self.seen: list[int] = []

    @ag.method(inline=True)
    def add(self, i: int) -> int:
        self.seen.append(i)
        return len(self.seen)

    def add_on_thread(self, i: int) -> int:
        self.seen.append(i)
        return len(self.seen)

    @ag.method(inline=True)
    def where(self) -> str:
        return threading.current_thread().name

    def where_plain(self) -> str:
        return threading.current_thread().name

    @ag.method(inline=True)
    def fail(self) -> None:
        raise ValueError("inline says no")

    @ag.method(inline=True)
    def tell(self, other: Any, i: int) -> None:
        other.add.remote(i)  # fire-and-forget, from the loop

    @ag.method(inline=True)
    def get_inside(self, other: Any) -> int:
        return int(ag.get(other.add.remote(0)))

    @ag.method(inline=True)
    def send_inside(self) -> None:
        ag.send("nobody", 1)

    def log(self) -> list[int]:
        return list(self.seen)


@ag.remote
class Sleeper:
    @ag.method(inline=True)
    def nap(self, seconds: float) -> str:
        time.sleep(seconds)  # the mistake the watchdog is there for
        return threading.current_thread().name


@ag.remote
class Counter:
    """Brief methods (no call, no loop): they run on the loop without being declared."""

    def __init__(self) -> None:
        self.n = 0

    def incr(self, k: int = 1) -> int:
        self.n += k
        return self.n

    def parity_of_power(self, e: int) -> int:
        return (7**e) & 1  # one C operation, as long as e makes it

    def where(self) -> str:
        return threading.current_thread().name


class Output:
    """What reached this process's stderr so far (worker log lines come through the node)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.err = ""

    def wait_for(self, check: re.Pattern[str]) -> str:
        deadline = time.monotonic() + OUTPUT_TIMEOUT_S
        while True:
            self.err += self._capsys.readouterr().err
            if check.search(self.err):
                return self.err
            assert time.monotonic() < deadline, f"{check.pattern!r} not in stderr:\n{self.err}"
            time.sleep(0.05)


def _until_inline(method: Any, *args: Any) -> str:
    """Call ``method`` until a call runs inline (on the worker's main thread); its thread.

    A call runs on a pool thread while anything of its actor is queued or still running:
    its first call may arrive before the actor is constructed, and the pool thread of the
    call before may still be between sending its answer and going idle.
    """
    deadline = time.monotonic() + GET_TIMEOUT_S
    while (where := ag.get(method.remote(*args), timeout=GET_TIMEOUT_S)) != "MainThread":
        assert where.startswith("actorgrid-user"), where
        assert time.monotonic() < deadline, "no call of an inline method ever ran inline"
        time.sleep(0.01)
    return str(where)


def test_an_inline_method_runs_on_the_workers_loop_and_answers_as_any_method(
    cluster: ag.Cluster,
) -> None:
    tally = Tally.remote()
    assert ag.get(tally.where_plain.remote(), timeout=GET_TIMEOUT_S).startswith("actorgrid-user")
    assert _until_inline(tally.where) == "MainThread"
    assert ag.get([tally.add.remote(i) for i in range(3)], timeout=GET_TIMEOUT_S) == [1, 2, 3]
    with pytest.raises(ValueError, match="inline says no"):
        ag.get(tally.fail.remote(), timeout=GET_TIMEOUT_S)


def test_inline_and_thread_methods_keep_the_order_of_calls(cluster: ag.Cluster) -> None:
    tally = Tally.remote()
    for i in range(300):
        (tally.add if i % 3 else tally.add_on_thread).remote(i)
    assert ag.get(tally.log.remote(), timeout=GET_TIMEOUT_S) == list(range(300))


def test_an_inline_method_calls_other_actors_but_cannot_block_on_them(
    cluster: ag.Cluster,
) -> None:
    first, second = Tally.remote(), Tally.remote()
    ag.get([first.tell.remote(second, i) for i in range(5)], timeout=GET_TIMEOUT_S)
    deadline = time.monotonic() + GET_TIMEOUT_S
    while ag.get(second.log.remote(), timeout=GET_TIMEOUT_S) != list(range(5)):
        assert time.monotonic() < deadline, "the calls made from an inline method never ran"
        time.sleep(0.05)
    _until_inline(first.where)  # so nothing of it is running: the calls below run inline
    with pytest.raises(RuntimeError, match=r"ag\.get\(\) blocks"):
        ag.get(first.get_inside.remote(second), timeout=GET_TIMEOUT_S)
    # ag.send does not block the loop: it is sent after the method returns (by a task), and
    # its failure is the call's.
    with pytest.raises(ag.NameNotFoundError, match="nobody"):
        ag.get(first.send_inside.remote(), timeout=GET_TIMEOUT_S)


def test_a_blocking_inline_method_is_reported_by_name_and_moved_to_pool_threads(
    cluster: ag.Cluster, capfd: pytest.CaptureFixture[str]
) -> None:
    output = Output(capfd)
    sleeper = Sleeper.remote()
    _until_inline(sleeper.nap, 0)  # then nothing of it runs or waits: the next call is inline
    # Longer than the watchdog's threshold: it reports the call while it still runs.
    assert ag.get(sleeper.nap.remote(INLINE_STALL_S + 0.5), timeout=GET_TIMEOUT_S) == "MainThread"
    output.wait_for(re.compile(r"Sleeper\.nap .*has been running on this worker's event loop"))
    output.wait_for(re.compile(r"Sleeper\.nap is declared .*inline=True. but held worker"))
    assert ag.get(sleeper.nap.remote(0), timeout=GET_TIMEOUT_S).startswith("actorgrid-user")


def test_brief_methods_run_inline_undeclared_and_keep_the_order_of_calls(
    cluster: ag.Cluster,
) -> None:
    counter = Counter.remote()
    refs = []
    for i in range(200):  # brief and pool-thread methods interleaved, one caller
        refs.append(counter.incr.remote(1) if i % 4 else counter.where.remote())
    values = ag.get(refs, timeout=GET_TIMEOUT_S)
    assert [v for v in values if isinstance(v, int)] == list(range(1, 151))
    # where() calls a function: it never qualifies, and runs on a pool thread.
    assert all(v.startswith("actorgrid-user") for v in values if isinstance(v, str))


def test_a_brief_method_that_runs_long_is_reported_and_moved_to_pool_threads(
    cluster: ag.Cluster, capfd: pytest.CaptureFixture[str]
) -> None:
    output = Output(capfd)
    counter = Counter.remote()
    ag.get(counter.incr.remote(), timeout=GET_TIMEOUT_S)  # constructed: the next call is alone
    # ~0.5 s of big-integer arithmetic here (more under load), over the 0.1 s budget: it ran on
    # the loop (only an inline call is timed), so it is reported and demoted.
    assert ag.get(counter.parity_of_power.remote(1_000_000), timeout=GET_TIMEOUT_S) == 1
    output.wait_for(
        re.compile(r"Counter\.parity_of_power ran on the loop \(no call or loop in its code\)")
    )
    assert ag.get(counter.parity_of_power.remote(3), timeout=GET_TIMEOUT_S) == 1


def test_brief_methods_are_told_by_their_code_and_the_class() -> None:
    class Plain:
        n = 0

        def get(self) -> int:
            return self.n

        def incr(self, k: int = 1) -> int:
            self.n += k
            return self.n

        def pick(self, x: int) -> int:
            if x > 0:
                return self.n
            return -1

        def sleeps(self) -> None:
            time.sleep(1)

        def spins(self) -> None:
            while self.n >= 0:
                self.n += 1

        def builds(self) -> list[int]:
            return [i for i in (1, 2)]

        def locks(self, lock: Any) -> None:
            with lock:
                self.n = 1

        def reaches(self, other: Any) -> int:
            return other.n + self.n  # another object's attribute: a property of it may block

        @ag.method(inline=False)
        def kept(self) -> int:
            return self.n

        @ag.method(inline=True)
        def declared(self) -> None:
            time.sleep(0)

        @staticmethod
        def static() -> int:
            return 1

    assert _loop_names(Plain) == {"get", "incr", "pick", "declared"}

    class WithProperty(Plain):
        @property
        def n2(self) -> int:  # reading any attribute may run user code: nothing brief
            return 2

    class WithHook(Plain):
        def __getattr__(self, name: str) -> int:
            return 0

    assert _loop_names(WithProperty) == {"declared"}
    assert _loop_names(WithHook) == {"declared"}


def test_inline_is_refused_on_async_and_generator_methods() -> None:
    async def coroutine(self: Any) -> None:
        return None

    def generator(self: Any) -> Any:
        yield 1

    with pytest.raises(TypeError, match="async"):
        ag.method(inline=True)(coroutine)
    with pytest.raises(TypeError, match="generator"):
        ag.method(inline=True)(generator)


def test_the_watchdog_reports_a_call_once_it_has_run_past_the_threshold() -> None:
    watch = _Watch()
    watch.label, watch.since = "A.m", 100.0  # as started() sets them, without its thread
    assert watch.stalled(100.0 + INLINE_STALL_S / 2) is None
    assert watch.stalled(100.0 + INLINE_STALL_S + 1) == ("A.m", INLINE_STALL_S + 1)
    watch.since = 0.0  # ended
    assert watch.stalled(100.0 + INLINE_STALL_S + 1) is None


def test_a_subclass_inherits_inline_methods_unless_it_overrides_them() -> None:
    class Base:
        @ag.method(inline=True)
        def kept(self) -> None:
            return None

        @ag.method(inline=True)
        def replaced(self) -> None:
            return None

    class Derived(Base):
        def replaced(self) -> None:  # overridden without the decorator: not declared
            return None

    assert _inline_names(Base) == {"kept", "replaced"}
    assert _inline_names(Derived) == {"kept"}
