"""Where one hop of the 8-agent ring by name spends its time: a timestamp per hand-off.

    python benchmarks/ring_trace.py [--hops N] [--alternate]

The ``ring`` workload's ring (named coroutine agents, each passing the counter on with
``ctx.send(name, n + 1)``), with a few runtime functions patched in every worker to note
``time.perf_counter_ns()`` (CLOCK_MONOTONIC, the same in every process) at each step of a hop,
keyed by the counter the hop carries:

    send      the sending agent calls ctx.send
    write     its frame handed to the socket (TcpFrameStream.send_nowait called)
    written   the socket took it (send_nowait returned)
    sent      its ctx.send returned (the frame handed to the socket, or queued)
    loop      the receiver's loop back from epoll (trio's EpollIOManager.get_events)
    readable  the link's reader back from ``wait_readable``
    read      the Deliver frame decoded (Peer._dispatch)
    put       the letter in the agent's mailbox (Peer._dispatch returned)
    run       the agent's ``async for`` got the counter
    wait      the receiver's loop waits for I/O again (its first epoll after the hop)

One message is in flight at a time in the whole ring, so "the message" of a worker is the
last one it read. Prints the median of each step in µs, the spread of the hops (a loaded
machine shows as a few hops of milliseconds), and each worker's CPU time per hop it handled
(all of its threads: the least noisy figure on a shared machine) and how often its loop
waited for I/O, as ``hring_trace.py`` does for the ring by handle.
"""

from __future__ import annotations

import argparse
import itertools
import os
import pickle
import statistics
import time
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


def _patch() -> None:
    if _patched[0]:
        return
    _patched[0] = True
    import trio
    from trio._core._io_epoll import EpollIOManager

    from actorgrid._protocol.messages import Deliver
    from actorgrid._runtime import peer
    from actorgrid._transport.tcp import TcpFrameStream

    dispatch = peer.Peer._dispatch
    send_nowait = TcpFrameStream.send_nowait
    get_events = EpollIOManager.get_events
    wait_readable = trio.lowlevel.wait_readable

    def traced_get_events(self: Any, timeout: float) -> Any:
        _counts["waits"] = _counts.get("waits", 0) + 1
        if timeout > 0 and _last[0] not in _marks.setdefault("wait", {}):
            _mark("wait")  # the loop's first blocking wait after it read the message
        events = get_events(self, timeout)
        _woke[0] = time.perf_counter_ns()
        return events

    async def traced_wait_readable(sock: Any) -> None:
        await wait_readable(sock)
        _readable[0] = time.perf_counter_ns()

    def traced_dispatch(self: Any, message: Any, handler: Any) -> None:
        if type(message) is Deliver and not message.rid:
            _last[0] = pickle.loads(message.payload.data)
            _mark("read")
            _marks.setdefault("loop", {})[_last[0]] = _woke[0]
            _marks.setdefault("readable", {})[_last[0]] = _readable[0]
            dispatch(self, message, handler)
            _mark("put")
            return
        dispatch(self, message, handler)

    def traced_send_nowait(self: Any, bodies: Any) -> bool:
        key = _last[0] + 1 if isinstance(_last[0], int) else None
        _mark("write", key)
        done = send_nowait(self, bodies)
        _mark("written", key)
        return bool(done)

    TcpFrameStream.send_nowait = traced_send_nowait  # type: ignore[method-assign]
    EpollIOManager.get_events = traced_get_events  # type: ignore[method-assign]
    trio.lowlevel.wait_readable = traced_wait_readable
    peer.Peer._dispatch = traced_dispatch  # type: ignore[method-assign]


def _stepped() -> dict[str, int]:
    """Receivers this worker's readers stepped in their turn, and left to Trio (stepping.py;
    none on a version without it)."""
    try:
        from actorgrid._runtime.stepping import counts
    except ImportError:
        return {}
    return dict(counts)


@ag.remote
async def trace_agent(ctx: ag.Context, me: int, n: int, hops: int) -> int:
    _patch()
    target = f"trace{(me + 1) % n}"
    warm: Any = None
    async for msg in ctx.mailbox:
        if msg == "warm":  # four laps of negative counters, answered when they are back
            warm = ctx.request
            await ctx.send(target, -4 * n + 1)
            continue
        if msg == "warmed":
            warm.reply(None)
            continue
        if msg == "pid":
            await ctx.reply(os.getpid())
            continue
        if msg == "reset":
            _marks.clear()
            _counts.clear()
            _counts["stepped_at"] = _stepped()
            _counts["cpu_ns"] = time.process_time_ns()
            await ctx.reply(os.getpid())
            continue
        if msg == "dump":
            _counts.setdefault("cpu_used_ns", time.process_time_ns() - _counts["cpu_ns"])
            at = _counts.pop("stepped_at", {})
            _counts.update({k: v - at.get(k, 0) for k, v in _stepped().items()})
            _marks["counts"] = dict(_counts)
            await ctx.reply((os.getpid(), dict(_marks)))
            continue
        if msg < 0:
            await ctx.send(target, msg + 1 if msg < -1 else "warmed")
            continue
        _mark("run", msg)
        if msg >= hops:
            return int(msg)
        _mark("send", msg + 1)
        await ctx.send(target, msg + 1)
        _mark("sent", msg + 1)
    return -1


STEPS = [
    ("send", "sent", "sender: ctx.send, in all (lookup, encode, credit, write)"),
    ("send", "write", "sender: ctx.send to the socket write (lookup, pickle, credit, encode)"),
    ("write", "written", "sender: the socket write (send(2): the receiver's wake-up included)"),
    ("sent", "loop", "wire + receiver's loop wake-up (epoll returns)"),
    ("send", "loop", "ctx.send called to the receiver's epoll return"),
    ("loop", "readable", "loop: epoll return to the reader task running"),
    ("readable", "read", "reader: recv + frame + decode"),
    ("read", "put", "reader: dispatch, into the agent's mailbox"),
    ("put", "run", "the agent woken: mailbox put to its async for returning"),
    ("loop", "run", "receiver: epoll return to the agent's code, in all"),
    ("run", "wait", "receiver: the agent's code to the loop's next wait for I/O"),
    ("run", "send", "the agent's own code (the trace's marks)"),
]


def _start_ring(n: int, hops: int, alternate: bool) -> list[Any]:
    """The ring's agents as placement put them; ``alternate``: an agent placed on the same
    worker as the one before it is killed and made again until it is not."""
    refs: list[Any] = []
    before = None
    for i in range(n):
        for _ in range(50):
            ref = trace_agent.options(name=f"trace{i}").remote(i, n, hops)
            pid = ag.ask(f"trace{i}", "pid", timeout=60)
            if not alternate or pid != before:
                break
            ag.kill(ref)
            try:
                ag.get(ref, timeout=60)  # its name is free once its end is reported
            except ag.ActorDiedError:
                pass
        refs.append(ref)
        before = pid
    return refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hops", type=int, default=5000)
    parser.add_argument(
        "--alternate",
        action="store_true",
        help="place each agent on the other worker from the one before: every hop crosses",
    )
    args = parser.parse_args()
    n, hops = 8, args.hops
    with ag.init(num_workers=2):
        refs = _start_ring(n, hops, args.alternate)
        ag.ask("trace0", "warm", timeout=60)  # names cached, links made, code warm
        pids = [ag.ask(f"trace{i}", "reset", timeout=60) for i in range(n)]
        started = time.perf_counter()
        ag.send("trace0", 0)
        ag.wait(refs, num_returns=1, timeout=120)
        elapsed = time.perf_counter() - started
        last = hops % n  # the agent that returned
        dumps = [ag.ask(f"trace{i}", "dump", timeout=60) for i in range(n) if i != last]
        for ref in refs:
            ag.kill(ref)
    crossing = sum(pids[i] != pids[(i + 1) % n] for i in range(n))
    print(
        f"{hops} hops in {elapsed:.3f} s: {hops / elapsed:,.0f} hops/s, "
        f"{elapsed / hops * 1e6:.1f} µs a hop; load {os.getloadavg()[0]:.2f}; "
        f"{crossing} of the {n} hops of a lap cross workers"
    )
    marks: dict[str, dict[Any, int]] = {}
    workers: dict[int, dict[str, Any]] = {}
    for pid, worker_marks in dumps:
        workers[pid] = worker_marks
        for step, values in worker_marks.items():
            marks.setdefault(step, {}).update(values)
    for start, end, what in STEPS:
        a, b = marks.get(start, {}), marks.get(end, {})
        steps = [(b[c] - a[c]) / 1000 for c in a if c in b and c >= 0]
        if len(steps) < hops // 4:
            continue
        print(f"  {statistics.median(steps):7.1f} µs  {start:>8} -> {end:<8} {what}")
    runs = sorted(t for k, t in marks.get("run", {}).items() if k >= 0)
    gaps = [(b - a) / 1000 for a, b in itertools.pairwise(runs)]
    gaps.sort()
    print(
        f"  {statistics.median(gaps):7.1f} µs  a hop (run to the next run), median; mean "
        f"{statistics.fmean(gaps):.1f}, 99th percentile {gaps[len(gaps) * 99 // 100]:.1f}, "
        f"slowest {gaps[-1]:.0f}; over 500 µs: {sum(g > 500 for g in gaps)} hops, "
        f"{sum(g for g in gaps if g > 500) / 1000:.1f} ms in all"
    )
    for pid, worker_marks in workers.items():
        counts = worker_marks.get("counts", {})
        print(
            f"    worker {pid}: CPU {counts.get('cpu_used_ns', 0) / hops * 2 / 1000:.1f} µs a hop of "
            f"its own; loop waits for I/O {counts.get('waits', 0) / hops * 2:.2f} a hop; "
            f"receivers stepped in the reader's turn {counts.get('stepped', 0)}, "
            f"left to Trio {counts.get('left', 0)}"
        )


if __name__ == "__main__":
    main()
