"""Where one sync actor round trip spends its time: a timestamp per hand-off, both processes.

    python benchmarks/rtt_trace.py [--calls N] [--inline]

Sequential ``ag.get(actor.ping.remote())`` from the sync driver, as the ``actor_rtt`` workload
does. Each process patches a few runtime functions to note ``time.perf_counter_ns()`` (the
same CLOCK_MONOTONIC in every process of the machine) at each step:

    drv.call      main thread: before ``.remote()``
    drv.sent      main thread: the call frame handed to the socket (Peer.send_threadsafe)
    wrk.loop      worker loop: back from epoll (trio's EpollIOManager.get_events)
    wrk.readable  worker loop: the link's reader back from ``wait_readable``
    wrk.read      worker loop: the call frame decoded (Peer._dispatch)
    wrk.submit    worker loop: the pool job queued (ThreadPool.submit)
    wrk.job       pool thread: the job started
    wrk.run       worker: the method's first line (pool thread, or the loop for an inline one)
    wrk.answer    worker: the answer handed to the socket (Peer.send_threadsafe, or the loop)
    drv.loop, drv.readable, drv.read: as on the worker, for the answer
    drv.woken     driver loop: the waiting thread's wake released (getting._Wake.set)
    drv.waited    main thread: back from that wait
    drv.polled, drv.tread, drv.decoded: the same when the link is lent to the main thread
                  (lending.py): back from its poll, its read begun, the answer decoded
    drv.back      main thread: ``ag.get`` returned

and prints the median of each step in µs, the CPU time per round trip of each process and of
each thread (``time.pthread_getcpuclockid``), and the voluntary context switches per round
trip of each thread (``/proc/self/task/*/status``). The patches cost ~1 µs a step; the
absolute figures are the ``actor_rtt`` workload's, the steps say where they go. On a loaded
machine compare the steps with each other, and with ``benchmarks/run.py``'s trio ping-pong.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import actorgrid as ag

# Step -> call id -> when; the calls run one at a time, so "the call" is the last one read.
_marks: dict[str, dict[Any, int]] = {}
_last: list[Any] = [None]
_woke = [0]  # when the loop last came back from waiting for I/O
_readable = [0]  # when a reader last came back from wait_readable
_polled = [0]  # when the driver's waiting thread last came back from its poll (lending.py)


def _mark(name: str, key: Any = None) -> None:
    _marks.setdefault(name, {})[_last[0] if key is None else key] = time.perf_counter_ns()


def _cpu() -> dict[str, float]:
    """CPU seconds of each Python thread of this process, by thread name."""
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is not None:
            try:
                clock = time.pthread_getcpuclockid(thread.ident)
                out[thread.name] = time.clock_gettime(clock)
            except OSError:
                pass
    return out


def _switches() -> dict[str, int]:
    """Voluntary context switches of each thread of this process, by thread name."""
    out: dict[str, int] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            text = Path(f"/proc/self/task/{task}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        name = fields.get("Name", "?").strip()
        out[f"{name}/{task}"] = int(fields["voluntary_ctxt_switches"])
    return out


def _patch(side: str) -> None:
    """Note the steps of ``side`` ("drv" or "wrk") in this process's ``_marks``."""
    from actorgrid._protocol.calls import CallActor, TaskResult
    from actorgrid._runtime import getting, peer

    send_threadsafe = peer.Peer.send_threadsafe
    dispatch = peer.Peer._dispatch
    send = peer.Peer.send

    def traced_send_threadsafe(self: Any, message: Any) -> bool:
        # Noted before the write: after it, a loaded machine may run the peer first.
        before = time.perf_counter_ns()
        done = send_threadsafe(self, message)
        if done and type(message) is CallActor and side == "drv":
            _marks.setdefault("drv.sent", {})[message.task_id] = before
        elif done and type(message) is TaskResult and side == "wrk":
            _marks.setdefault("wrk.answer", {})[message.task_id] = before
        return done

    from trio._core._io_epoll import EpollIOManager  # the loop's wait for I/O

    get_events = EpollIOManager.get_events

    def traced_get_events(self: Any, timeout: float) -> Any:
        events = get_events(self, timeout)
        _woke[0] = time.perf_counter_ns()
        return events

    EpollIOManager.get_events = traced_get_events  # type: ignore[method-assign]

    import trio

    wait_readable = trio.lowlevel.wait_readable

    async def traced_wait_readable(sock: Any) -> None:
        await wait_readable(sock)
        _readable[0] = time.perf_counter_ns()

    trio.lowlevel.wait_readable = traced_wait_readable

    def traced_dispatch(self: Any, message: Any, handler: Any) -> None:
        if type(message) is CallActor and side == "wrk":
            _last[0] = message.task_id
            _mark("wrk.read", message.task_id)
            _marks.setdefault("wrk.loop", {})[message.task_id] = _woke[0]
            _marks.setdefault("wrk.readable", {})[message.task_id] = _readable[0]
        elif (
            type(message) is TaskResult
            and side == "drv"
            and message.task_id not in _marks.get("drv.decoded", ())
        ):  # (not one the main thread read itself, handed to the loop: lending.py)
            _last[0] = message.task_id
            _mark("drv.read", message.task_id)
            _marks.setdefault("drv.loop", {})[message.task_id] = _woke[0]
            _marks.setdefault("drv.readable", {})[message.task_id] = _readable[0]
        dispatch(self, message, handler)

    def traced_send(self: Any, message: Any) -> None:
        if type(message) is TaskResult and side == "wrk":
            _mark("wrk.answer", message.task_id)  # the loop's (inline method, or a batch)
        elif type(message) is CallActor and side == "drv":
            _mark("drv.sent", message.task_id)  # through the loop (the direct send declined)
        send(self, message)

    if side == "wrk":
        from actorgrid._runtime import portal

        submit = portal.ThreadPool.submit

        def traced_submit(self: Any, job: Any) -> None:
            _mark("wrk.submit")
            fn = job.fn

            def traced_fn(*args: Any) -> Any:
                _mark("wrk.job")
                return fn(*args)

            job.fn = traced_fn
            submit(self, job)

        portal.ThreadPool.submit = traced_submit  # type: ignore[method-assign]
    peer.Peer.send_threadsafe = traced_send_threadsafe  # type: ignore[method-assign]
    peer.Peer._dispatch = traced_dispatch  # type: ignore[method-assign]
    peer.Peer.send = traced_send  # type: ignore[method-assign]
    if side == "drv":
        wake_set = getting._Wake.set

        def traced_set(self: Any) -> None:
            _mark("drv.woken")  # the answer just read
            wake_set(self)

        wake_wait = getting._Wake.wait

        def traced_wait(self: Any, timeout: float | None = None) -> bool:
            woke = wake_wait(self, timeout)
            _mark("drv.waited")  # the answer whose wake ended this wait
            return woke

        getting._Wake.set = traced_set  # type: ignore[method-assign]
        getting._Wake.wait = traced_wait  # type: ignore[method-assign]

        from actorgrid._runtime import lending

        poll_wait = getting._Poller.wait

        def traced_poll_wait(self: Any, timeout: float | None = None) -> bool:
            woke = poll_wait(self, timeout)
            _polled[0] = time.perf_counter_ns()
            return woke

        read = lending.Lending.read

        def traced_read(self: Any, task_id: Any, deferred: bool) -> Any:
            started = time.perf_counter_ns()
            mine = read(self, task_id, deferred)
            if mine is not None:
                _marks.setdefault("drv.polled", {})[task_id] = _polled[0]
                _marks.setdefault("drv.tread", {})[task_id] = started
                _mark("drv.decoded", task_id)
            return mine

        getting._Poller.wait = traced_poll_wait  # type: ignore[method-assign]
        lending.Lending.read = traced_read  # type: ignore[method-assign]


class _Traced:
    def __init__(self) -> None:
        _patch("wrk")

    def ping(self) -> int:
        _mark("wrk.run")
        return 0

    @ag.method(inline=True)
    def ping_inline(self) -> int:
        _mark("wrk.run")
        return 0

    def reset(self) -> tuple[float, dict[str, int], dict[str, float]]:
        _marks.clear()
        return time.process_time(), _switches(), _cpu()

    def dump(self) -> tuple[dict[str, dict[Any, int]], float, dict[str, int], dict[str, float]]:
        return dict(_marks), time.process_time(), _switches(), _cpu()


Traced = ag.remote(_Traced)

STEPS = [
    ("drv.call", "drv.sent", "driver main: .remote() until the frame is written"),
    ("drv.sent", "wrk.loop", "wire + worker loop wake-up (epoll returns)"),
    ("wrk.loop", "wrk.readable", "worker loop: epoll return to the reader task running"),
    ("wrk.readable", "wrk.read", "worker loop: recv + frame + decode"),
    ("wrk.read", "wrk.submit", "worker loop: dispatch until the pool job is queued"),
    ("wrk.submit", "wrk.job", "pool thread wake-up (queue put to job start)"),
    ("wrk.job", "wrk.run", "pool thread: job start to the method's first line"),
    ("wrk.read", "wrk.run", "worker: the call decoded to the method's first line, in all"),
    ("wrk.run", "wrk.answer", "worker: method + result pickling + answer written"),
    ("wrk.answer", "drv.loop", "wire + driver loop wake-up (epoll returns)"),
    ("drv.loop", "drv.readable", "driver loop: epoll return to the reader task running"),
    ("drv.readable", "drv.read", "driver loop: recv + frame + decode"),
    ("drv.read", "drv.woken", "driver loop: the answer's bookkeeping until the wake"),
    ("drv.woken", "drv.waited", "main thread wake-up (futex + GIL)"),
    ("drv.waited", "drv.back", "main thread: ag.get returns the value"),
    ("wrk.answer", "drv.polled", "wire + main thread wake-up (its poll returns: a lent link)"),
    ("drv.polled", "drv.tread", "main thread: back from poll until it reads the link"),
    ("drv.tread", "drv.decoded", "main thread: recv + frame + decode"),
    ("drv.decoded", "drv.back", "main thread: ag.get returns the value"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--inline", action="store_true", help="the inline method instead")
    args = parser.parse_args()
    with ag.init(num_workers=1):
        actor = Traced.remote()
        method = actor.ping_inline if args.inline else actor.ping
        for _ in range(200):  # warm-up: code, threads, caches
            ag.get(method.remote())
        _patch("drv")
        worker_cpu0, worker_sw0, worker_threads0 = ag.get(actor.reset.remote())
        _marks.clear()
        driver_sw0 = _switches()
        driver_threads0 = _cpu()
        driver_cpu0 = time.process_time()
        for _ in range(args.calls):
            started = time.perf_counter_ns()
            ref = method.remote()
            _mark("drv.call", ref._entry.object_id)
            _marks["drv.call"][ref._entry.object_id] = started
            ag.get(ref)
            _mark("drv.back", ref._entry.object_id)
        driver_cpu = time.process_time() - driver_cpu0
        driver_sw = _switches()
        driver_threads = _cpu()
        worker_marks, worker_cpu1, worker_sw, worker_threads = ag.get(actor.dump.remote())
    n = args.calls
    marks = {**worker_marks, **_marks}
    calls = list(marks["drv.call"])
    # A wake only where the answer came after ag.get began to wait: matched by time.
    print(f"  the driver's main thread waited (a wake) in {len(marks.get('drv.woken', {}))} of {n}")
    print(
        f"  the driver's main thread read its answer itself in {len(marks.get('drv.decoded', {}))} of {n}"
    )
    print(
        f"{n} round trips ({'inline' if args.inline else 'pool-thread'} method), load {os.getloadavg()[0]:.2f}"
    )
    total = [(marks["drv.back"][c] - marks["drv.call"][c]) / 1000 for c in calls]
    print(f"  round trip median {statistics.median(total):7.1f} µs")
    for start, end, what in STEPS:
        a, b = marks.get(start, {}), marks.get(end, {})
        steps = [(b[c] - a[c]) / 1000 for c in calls if c in a and c in b]
        if len(steps) < n // 4:
            if steps:
                print(f"  {start} -> {end}: traced for {len(steps)} calls only")
            continue  # (none: a step of the other path, pool thread or inline)
        print(f"  {statistics.median(steps):7.1f} µs  {start:>10} -> {end:<10} {what}")
    print(
        f"  CPU per round trip: driver {driver_cpu / n * 1e6:.1f} µs, worker {(worker_cpu1 - worker_cpu0) / n * 1e6:.1f} µs"
    )
    print("  CPU per round trip, by thread:")
    for side, before_cpu, after_cpu in (
        ("driver", driver_threads0, driver_threads),
        ("worker", worker_threads0, worker_threads),
    ):
        for name, seconds in sorted(after_cpu.items()):
            used = (seconds - before_cpu.get(name, 0.0)) / n * 1e6
            if used >= 0.5:
                print(f"    {side} {name}: {used:.1f} µs")
    print("  voluntary context switches per round trip, by thread:")
    for side, before, after in (
        ("driver", driver_sw0, driver_sw),
        ("worker", worker_sw0, worker_sw),
    ):
        for thread, count in sorted(after.items()):
            delta = (count - before.get(thread, 0)) / n
            if delta >= 0.05:
                print(f"    {side} {thread}: {delta:.2f}")


if __name__ == "__main__":
    main()
