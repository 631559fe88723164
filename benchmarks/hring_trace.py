"""Where one hop of the 8-actor ring by handle spends its time: a timestamp per hand-off.

    python benchmarks/hring_trace.py [--hops N] [--inline | --pool]

The ``handle_ring`` workload's ring (sync actors, each calling the next by handle,
fire-and-forget), with a few runtime functions patched in every worker to note
``time.perf_counter_ns()`` (CLOCK_MONOTONIC, the same in every process) at each step of a hop:

    sent      the sender's pool thread (or loop) hands the call frame to the socket
    loop      the receiver's loop back from epoll (trio's EpollIOManager.get_events)
    readable  the link's reader back from ``wait_readable``
    read      the call frame decoded (Peer._dispatch)
    submit    the pool job queued (ThreadPool.submit)
    job       the pool thread started the job
    run       the method's first line

``hop`` runs on the worker's loop after its trial (inline.py: its calls are all
fire-and-forget), as the workload's does; ``--pool`` keeps it on pool threads (the submit and
job steps), ``--inline`` runs the method declared ``@ag.method(inline=True)``.

One call is in flight at a time in the whole ring, so "the call" of a process is the last one
it read. Prints the median of each step in µs, with the CPU time and voluntary context
switches per hop of each worker thread, as ``rtt_trace.py`` does for a round trip.
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

_marks: dict[str, dict[Any, int]] = {}
_last: list[Any] = [None]
_woke = [0]
_readable = [0]
_patched = [False]
_counts: dict[str, int] = {}


def _mark(name: str, key: Any = None) -> None:
    _marks.setdefault(name, {})[_last[0] if key is None else key] = time.perf_counter_ns()


# _cpu and _switches are rtt_trace.py's, written again here: the actors that call them are
# shipped to the workers by value (this script is __main__), and a worker cannot import
# rtt_trace (benchmarks/ is not on its path).
def _cpu() -> dict[str, float]:
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is not None:
            try:
                out[thread.name] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            except OSError:
                pass
    return out


def _switches() -> dict[str, int]:
    out: dict[str, int] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            text = Path(f"/proc/self/task/{task}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        out[f"{fields.get('Name', '?').strip()}/{task}"] = int(fields["voluntary_ctxt_switches"])
    return out


def _patch() -> None:
    if _patched[0]:
        return
    _patched[0] = True
    import trio
    from trio._core._io_epoll import EpollIOManager

    from actorgrid._protocol.calls import CallActor
    from actorgrid._runtime import peer, portal

    send_threadsafe = peer.Peer.send_threadsafe
    dispatch = peer.Peer._dispatch
    send = peer.Peer.send
    get_events = EpollIOManager.get_events
    wait_readable = trio.lowlevel.wait_readable
    submit = portal.ThreadPool.submit

    def traced_send_threadsafe(self: Any, message: Any) -> bool:
        before = time.perf_counter_ns()
        done = send_threadsafe(self, message)
        if done and type(message) is CallActor:
            _marks.setdefault("sent", {})[message.task_id] = before
            _marks.setdefault("next", {})[_last[0]] = before  # sent by the call run here
        return done

    def traced_send(self: Any, message: Any) -> None:
        if type(message) is CallActor:
            _mark("sent", message.task_id)  # through the loop (the direct send declined)
            _mark("next")
        send(self, message)

    def traced_get_events(self: Any, timeout: float) -> Any:
        _counts["waits"] = _counts.get("waits", 0) + 1
        if "sleep" not in _marks or _last[0] not in _marks["sleep"]:
            _mark("sleep")  # the loop's first wait for I/O after it read the call
        events = get_events(self, timeout)
        _woke[0] = time.perf_counter_ns()
        return events

    async def traced_wait_readable(sock: Any) -> None:
        await wait_readable(sock)
        _readable[0] = time.perf_counter_ns()

    def traced_dispatch(self: Any, message: Any, handler: Any) -> None:
        if type(message) is CallActor:
            _last[0] = message.task_id
            _mark("read")
            _marks.setdefault("loop", {})[message.task_id] = _woke[0]
            _marks.setdefault("readable", {})[message.task_id] = _readable[0]
        dispatch(self, message, handler)

    def traced_submit(self: Any, job: Any) -> None:
        _mark("submit")
        fn = job.fn

        def traced_fn(*args: Any) -> Any:
            _mark("job")
            try:
                return fn(*args)
            finally:
                _mark("jobend")

        job.fn = traced_fn
        submit(self, job)

    EpollIOManager.get_events = traced_get_events  # type: ignore[method-assign]
    trio.lowlevel.wait_readable = traced_wait_readable
    portal.ThreadPool.submit = traced_submit  # type: ignore[method-assign]
    peer.Peer.send_threadsafe = traced_send_threadsafe  # type: ignore[method-assign]
    peer.Peer._dispatch = traced_dispatch  # type: ignore[method-assign]
    peer.Peer.send = traced_send  # type: ignore[method-assign]


class _Clock:
    """``self.clock.remote("run")`` notes the time as ``_mark`` does: a call of ``.remote`` as a
    statement, so that ``hop`` still makes only fire-and-forget calls and runs on the loop after
    its trial (inline.py), as the benchmark's does; a plain ``_mark("run")`` would keep it on
    pool threads."""

    def remote(self, name: str) -> None:
        _mark(name)


class _TracedRing:
    def __init__(self) -> None:
        _patch()
        self.next: Any = None
        self.clock = _Clock()

    def link(self, next_actor: Any) -> int:
        self.next = next_actor
        return os.getpid()

    def hop(self, n: int, last: int, done: str) -> None:
        self.clock.remote("run")
        if n >= last:
            ag.send(done, n)
        else:
            self.next.hop.remote(n + 1, last, done)

    @ag.method(inline=False)
    def hop_pool(self, n: int, last: int, done: str) -> None:
        """``hop`` kept on pool threads: the path every hop took before its trial."""
        _mark("run")
        if n >= last:
            ag.send(done, n)
        else:
            self.next.hop_pool.remote(n + 1, last, done)

    @ag.method(inline=True)
    def hop_inline(self, n: int, last: int, done: str) -> None:
        _mark("run")
        if n >= last:
            self.next.finish.remote(n, done)
        else:
            self.next.hop_inline.remote(n + 1, last, done)

    def finish(self, n: int, done: str) -> None:
        ag.send(done, n)

    def reset(self) -> tuple[int, float, dict[str, int], dict[str, float]]:
        _marks.clear()
        _counts.clear()
        return os.getpid(), time.process_time(), _switches(), _cpu()

    def dump(
        self,
    ) -> tuple[int, dict[str, dict[Any, int]], float, dict[str, int], dict[str, float]]:
        _marks["counts"] = dict(_counts)
        return os.getpid(), dict(_marks), time.process_time(), _switches(), _cpu()


TracedRing = ag.remote(_TracedRing)


@ag.remote
async def _sink(ctx: ag.Context) -> int:
    async for msg in ctx.mailbox:
        return int(msg)
    return -1


STEPS = [
    ("sent", "loop", "wire + receiver's loop wake-up (epoll returns)"),
    ("loop", "readable", "loop: epoll return to the reader task running"),
    ("readable", "read", "loop: recv + frame + decode"),
    ("read", "submit", "loop: dispatch until the pool job is queued"),
    ("submit", "job", "pool thread wake-up (queue put to job start)"),
    ("job", "run", "pool thread: job start to the method's first line"),
    ("read", "run", "the call decoded to the method's first line, in all"),
    ("run", "next", "method: .remote() of the next hop until its frame is queued/written"),
    ("read", "next", "a hop on one worker: its call read to the next call sent"),
    ("submit", "sleep", "loop: the pool job queued until the loop waits for I/O"),
    ("next", "jobend", "pool thread: the next call sent until the job ends"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hops", type=int, default=5000)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--inline", action="store_true", help="the method declared inline instead")
    mode.add_argument("--pool", action="store_true", help="the method kept on pool threads")
    args = parser.parse_args()
    n_actors = 8
    with ag.init(num_workers=2):
        actors = [TracedRing.remote() for _ in range(n_actors)]
        pids = ag.get([a.link.remote(actors[(i + 1) % n_actors]) for i, a in enumerate(actors)])
        print(f"actors by worker pid: {pids}")
        by_pid = {pid: actors[i] for i, pid in reversed(list(enumerate(pids)))}
        method = "hop_inline" if args.inline else "hop_pool" if args.pool else "hop"

        def lap(hops: int, tag: str) -> float:
            sink = _sink.options(name=f"trace_{tag}").remote()
            started = time.perf_counter()
            getattr(actors[0], method).remote(0, hops, f"trace_{tag}")
            if ag.get(sink, timeout=120) != hops:
                raise RuntimeError("the ring lost its counter")
            return time.perf_counter() - started

        lap(n_actors * 4, "warm")
        before = {pid: ag.get(a.reset.remote()) for pid, a in by_pid.items()}
        elapsed = lap(args.hops, "run")
        after = {pid: ag.get(a.dump.remote()) for pid, a in by_pid.items()}
    hops = args.hops
    print(
        f"{hops} hops ({method}) in {elapsed:.3f} s: {hops / elapsed:,.0f} hops/s, "
        f"{elapsed / hops * 1e6:.1f} µs a hop; load {os.getloadavg()[0]:.2f}"
    )
    marks: dict[str, dict[Any, int]] = {}
    for _, worker_marks, *_ in after.values():
        for step, values in worker_marks.items():
            marks.setdefault(step, {}).update(values)
    for start, end, what in STEPS:
        a, b = marks.get(start, {}), marks.get(end, {})
        steps = [(b[c] - a[c]) / 1000 for c in a if c in b]
        if len(steps) < hops // 4:
            continue
        print(f"  {statistics.median(steps):7.1f} µs  {start:>8} -> {end:<8} {what}")
    print("  CPU per hop, by worker thread (each worker runs half the hops):")
    for pid, (_, cpu0, sw0, threads0) in before.items():
        _, _, cpu1, sw1, threads1 = after[pid]
        waits = after[pid][1].get("counts", {}).get("waits", 0)
        print(
            f"    worker {pid}: {(cpu1 - cpu0) / hops * 1e6:.1f} µs in all; loop waits for I/O {waits / hops:.2f} a hop"
        )
        for name, seconds in sorted(threads1.items()):
            used = (seconds - threads0.get(name, 0.0)) / hops * 1e6
            if used >= 0.5:
                print(f"      {name}: {used:.1f} µs")
        for thread, count in sorted(sw1.items()):
            delta = (count - sw0.get(thread, 0)) / hops
            if delta >= 0.05:
                print(f"      switches {thread}: {delta:.2f}")


if __name__ == "__main__":
    main()
