"""The actorgrid workloads of the benchmark suite, and the helpers the baselines share.

Each workload function takes the run's ``Sizes`` and worker count and returns a ``Result``:
``{"value": <the headline figure>, "detail": {...}}``. Workloads that need a fresh interpreter
(cold start, idle RSS) run a short script in a child process that prints one JSON line.

Only the public API (``import actorgrid as ag``) is used. Worker processes import this module
by name to run its remote functions, so ``run.py`` puts this folder on ``PYTHONPATH``.

A workload joins the suite with one line, the ``register`` decorator (from any module that
``run.py`` lists in ``WORKLOAD_MODULES``); the table shows workloads in registration order::

    @register("task_chain", "{array_mb:g} MB array task -> task -> task", "MB/s", ">=", 2_000,
              limit="memcpy_mb_per_s")
    def task_chain(sizes: Sizes, num_workers: int) -> Result: ...

The title is a format string over the fields of ``Sizes`` (plus ``array_mb`` and
``num_workers``); ``limit`` names the machine limit (``limits.py``) the figure is divided by.
"""

from __future__ import annotations

import compileall
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import actorgrid as ag

__all__ = [
    "FULL",
    "MB",
    "MEMORY_SNAPSHOT",
    "QUICK",
    "SPECS",
    "Result",
    "Sizes",
    "Spec",
    "actor_recovery",
    "actor_rtt",
    "big_argument",
    "big_bytes",
    "byte_compile_actorgrid",
    "cold_start",
    "handle_ring",
    "idle_rss",
    "noop_tasks",
    "percentile",
    "pipelined_calls",
    "pipelined_calls_no_pulses",
    "pool_map",
    "register",
    "ring",
    "run_child",
]

MB = 1_000_000  # decimal megabytes, for MB/s and RSS alike
GET_TIMEOUT_S = 120.0  # a hung runtime fails the workload instead of hanging the suite
CHILD_TIMEOUT_S = 120.0

Result = dict[str, Any]


@dataclass(frozen=True)
class Sizes:
    """The fixed sizes of one run; FULL never changes, so figures compare across commits."""

    cold_start_runs: int
    tasks: int
    warmup_tasks: int
    round_trips: int
    pipelined: int
    array_bytes: int
    array_runs: int
    ring_agents: int
    ring_hops: int
    recovery_runs: int
    pool_items: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


FULL = Sizes(
    cold_start_runs=3,
    tasks=10_000,
    warmup_tasks=100,
    round_trips=2_000,
    pipelined=20_000,
    array_bytes=100_000_000,
    array_runs=5,
    ring_agents=8,
    ring_hops=5_000,
    recovery_runs=5,
    pool_items=100_000,
)
QUICK = Sizes(
    cold_start_runs=1,
    tasks=200,
    warmup_tasks=10,
    round_trips=50,
    pipelined=500,
    array_bytes=1_000_000,
    array_runs=5,
    ring_agents=8,
    ring_hops=100,
    recovery_runs=1,
    pool_items=2_000,
)


Workload = Callable[[Sizes, int], Result]


@dataclass(frozen=True)
class Spec:
    key: str
    title: str  # a format string over Sizes' fields, array_mb and num_workers
    unit: str
    op: str  # "<=" (lower is better) or ">=" (higher is better)
    target: float
    run: Workload
    limit: str | None = None  # a key of limits.LIMITS, in the same unit as the figure

    def sized_title(self, sizes: Sizes, num_workers: int) -> str:
        fields = {**sizes.as_dict(), "array_mb": sizes.array_bytes / MB, "num_workers": num_workers}
        return self.title.format(**fields)


SPECS: list[Spec] = []


def register(
    key: str, title: str, unit: str, op: str, target: float, *, limit: str | None = None
) -> Callable[[Workload], Workload]:
    """Add the decorated workload to the suite (see the module docstring)."""
    if op not in ("<=", ">="):
        raise ValueError(f"op must be '<=' or '>=', not {op!r}")

    def add(run: Workload) -> Workload:
        if any(spec.key == key for spec in SPECS):
            raise ValueError(f"a workload named {key!r} is already registered")
        SPECS.append(Spec(key, title, unit, op, target, run, limit))
        return run

    return add


# --- helpers (also used by baselines.py) -------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def run_child(
    script: str, *args: str, timeout: float = CHILD_TIMEOUT_S, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``python -c script args...`` in its own session (with ``env``, else this process's
    environment); return its last stdout line as JSON.

    On a timeout the child's whole session is killed (the cluster's workers, in sessions of
    their own, exit when their node's process dies: they read EOF on their stdin).
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc)
        out, err = proc.communicate()
        raise RuntimeError(
            f"child benchmark process timed out after {timeout:.0f} s; stderr:\n{err[-2000:]}"
        ) from None
    finally:
        if proc.poll() is None:  # an interrupt while waiting: never leave it running
            _kill_session(proc)
            proc.communicate()
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"child benchmark process exited with status {proc.returncode}; stderr:\n{err[-2000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _kill_session(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# The scripts that child processes run. Both take the worker count as argv[1] and print one
# JSON line. The clock of the cold start starts before `import actorgrid` (json, sys and time
# are imported first so that they are not counted).

_COLD_START_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import actorgrid as ag

@ag.remote
def one() -> int:
    return 1

with ag.init(num_workers=int(sys.argv[1])):
    assert ag.get(one.remote(), timeout=60.0) == 1
    first_result_s = time.perf_counter() - t0
    t1 = time.perf_counter()
shutdown_s = time.perf_counter() - t1
print(json.dumps({"seconds": first_result_s, "shutdown_s": shutdown_s}))
"""


def cold_start_result(
    script: str, runs: int, *args: str, env: dict[str, str] | None = None
) -> Result:
    """Median of ``runs`` fresh processes each reporting ``seconds``; shared with baselines."""
    seconds: list[float] = []
    walls: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        out = run_child(script, *args, env=env)
        walls.append(time.perf_counter() - started)
        seconds.append(float(out["seconds"]))
    return {
        "value": statistics.median(seconds),
        "detail": {
            "runs_s": seconds,
            "process_wall_s": statistics.median(walls),  # with interpreter start and exit
        },
    }


def byte_compile_actorgrid() -> None:
    """Write actorgrid's ``.pyc`` files, as ``pip install`` does when it installs the package.

    A cold start measures what a user's installed package does. A source checkout run with
    ``PYTHONDONTWRITEBYTECODE=1`` (as CI and sandboxes often are) would otherwise compile
    every module from source in every process, a third of its import time; reading ``.pyc``
    files is not affected by that variable. Up-to-date files are left as they are."""
    compileall.compile_dir(Path(ag.__file__).parent, quiet=1)


@contextmanager
def source_only_actorgrid() -> Iterator[dict[str, str]]:
    """An environment in which actorgrid is imported from a copy without ``.pyc`` files and
    writes none: what a cold start costs where nothing was byte-compiled."""
    with tempfile.TemporaryDirectory(prefix="actorgrid-nopyc-") as tmp:
        package = Path(ag.__file__).parent
        shutil.copytree(package, Path(tmp) / package.name, ignore=shutil.ignore_patterns("*.pyc"))
        path = os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH", "")) if p)
        yield {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}


# Embedded in every idle-memory script (the baselines' too): one record per process of the
# cluster, the calling process (the driver) first. PSS and USS are Linux's (0 elsewhere).
MEMORY_SNAPSHOT = """
def memory_snapshot():
    me = psutil.Process()
    records = []
    for p in [me, *me.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            name, ppid, command = p.name(), p.ppid(), p.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if p.pid == me.pid:
            role = "driver"
        elif ppid == me.pid and command[1:3] == ["-m", "actorgrid._node.templateproc"]:
            role = "template"  # actorgrid's workers are forked from it
        elif name.startswith(("python", "ray::")):
            role = "worker"
        else:
            role = name  # a runtime's own helper (Ray's raylet, gcs_server, ...)
        records.append({"role": role, "rss": info.rss, "pss": getattr(info, "pss", 0),
                        "uss": getattr(info, "uss", 0)})
    return records
"""


def rss_result(out: dict[str, Any]) -> Result:
    """The idle-memory figure from ``MEMORY_SNAPSHOT``'s records; shared with the baselines.

    The headline is the PSS of every process of the cluster (its driver, template, workers
    and helpers): what the cluster costs the machine, with nothing left out and no page
    counted twice. Summed RSS would count each page that forked workers share with their
    template once per process; leaving out the template would hide what makes that sharing
    possible. The issue's own figure, the RSS of the driver and its workers, is in the detail
    (``driver_workers_rss_mb``) beside every process's RSS, PSS and USS."""
    procs = out["processes"]
    pss = sum(p["pss"] for p in procs)
    rss = sum(p["rss"] for p in procs)
    return {
        "value": (pss if all(p["pss"] for p in procs) else rss) / MB,
        "detail": {
            "pss_mb": pss / MB,
            "rss_mb": rss / MB,
            "driver_workers_rss_mb": sum(
                p["rss"] for p in procs if p["role"] in ("driver", "worker")
            )
            / MB,
            "processes": [
                {
                    "role": p["role"],
                    **{f"{k}_mb": round(p[k] / MB, 1) for k in ("rss", "pss", "uss")},
                }
                for p in procs
            ],
        },
    }


_IDLE_RSS_SCRIPT = (
    """
import json, sys, time
import psutil
import actorgrid as ag
"""
    + MEMORY_SNAPSHOT
    + """
@ag.remote
def one() -> int:
    return 1

with ag.init(num_workers=int(sys.argv[1])):
    assert ag.get([one.remote() for _ in range(4)], timeout=60.0) == [1] * 4
    time.sleep(1.0)
    processes = memory_snapshot()
print(json.dumps({"processes": processes}))
"""
)


# --- remote code ---------------------------------------------------------------------------


@ag.remote
def noop() -> None:
    return None


@ag.remote
def first_element(arr: Any) -> float:
    return float(arr[0])


class _Pinger:
    def ping(self) -> int:
        return 0

    @ag.method(inline=True)
    def ping_inline(self) -> int:
        return 0

    @ag.method(inline=False)  # ping runs on the loop (no call in it): this one on a pool thread
    def ping_pool(self) -> int:
        return 0

    def pid(self) -> int:
        return os.getpid()


Pinger = ag.remote(_Pinger)  # not a decorator, so that type checkers see an ActorClass


@ag.remote
async def ring_agent(ctx: ag.Context, me: int, n: int, hops: int) -> int:
    async for msg in ctx.mailbox:
        if msg >= hops:
            return int(msg)
        await ctx.send(f"ring{(me + 1) % n}", msg + 1)
    return -1


def identity(x: int) -> int:
    return x


@ag.remote
def first_byte(data: bytes) -> int:
    return data[0]


class _RingActor:
    """A sync actor that passes a counter to the next by handle, fire-and-forget."""

    def __init__(self) -> None:
        self.next: Any = None

    def link(self, next_actor: Any) -> None:
        self.next = next_actor

    def hop(self, n: int, last: int, done: str) -> None:
        if n >= last:
            ag.send(done, n)
        else:
            self.next.hop.remote(n + 1, last, done)  # its result is never asked for

    @ag.method(inline=True)
    def hop_inline(self, n: int, last: int, done: str) -> None:
        """``hop`` declared to run on the worker's loop from its first call (``hop`` gets there
        after its trial: inline.py); the last one hands over to ``finish``, as it did when
        ``ag.send`` raised in an inline method (kept, so that figures compare across commits)."""
        if n >= last:
            self.next.finish.remote(n, done)
        else:
            self.next.hop_inline.remote(n + 1, last, done)

    def finish(self, n: int, done: str) -> None:
        ag.send(done, n)


RingActor = ag.remote(_RingActor)


@ag.remote
async def ring_sink(ctx: ag.Context) -> int:
    async for msg in ctx.mailbox:
        return int(msg)
    return -1


# --- workloads -----------------------------------------------------------------------------


@register(
    "cold_start",
    "cold start to first result (byte-compiled), median of {cold_start_runs} [{num_workers} workers]",
    "s",
    "<=",
    0.5,
    limit="spawn_import_trio_s",
)
def cold_start(sizes: Sizes, num_workers: int) -> Result:
    """Fresh process: seconds from before `import actorgrid` to the first ag.get returning.

    The headline is actorgrid as installed, byte-compiled (``byte_compile_actorgrid``); the
    detail's ``without_pyc_s`` is the same from a copy that every process compiles from
    source (``source_only_actorgrid``)."""
    byte_compile_actorgrid()
    result = cold_start_result(_COLD_START_SCRIPT, sizes.cold_start_runs, str(num_workers))
    with source_only_actorgrid() as env:
        plain = cold_start_result(
            _COLD_START_SCRIPT, sizes.cold_start_runs, str(num_workers), env=env
        )
    result["detail"]["without_pyc_s"] = plain["value"]
    result["detail"]["without_pyc_runs_s"] = plain["detail"]["runs_s"]
    return result


@register(
    "noop_tasks", "{tasks:,} no-op tasks", "tasks/s", ">=", 30_000, limit="trio_oneway_msgs_per_s"
)
def noop_tasks(sizes: Sizes, num_workers: int) -> Result:
    """``ag.get([noop.remote() for _ in range(N)])`` after a small warm-up batch: tasks/s."""
    with ag.init(num_workers=num_workers):
        ag.get([noop.remote() for _ in range(sizes.warmup_tasks)], timeout=GET_TIMEOUT_S)
        started = time.perf_counter()
        ag.get([noop.remote() for _ in range(sizes.tasks)], timeout=GET_TIMEOUT_S)
        elapsed = time.perf_counter() - started
    return {"value": sizes.tasks / elapsed, "detail": {"tasks": sizes.tasks, "seconds": elapsed}}


@register(
    "actor_rtt",
    "{round_trips:,} sequential actor round trip (median)",
    "µs",
    "<=",
    150,
    limit="trio_rtt_us",
)
def actor_rtt(sizes: Sizes, num_workers: int) -> Result:
    """Sequential ``ag.get(a.ping.remote())`` after one warm-up call: median µs (p99 too).

    ``ping`` has no call in it, so it runs on the worker's loop (inline.py); the same round
    trip through a pool thread (``ping_pool``, ``inline=False``) and with
    ``@ag.method(inline=True)`` are in the detail.
    """
    samples: list[float] = []
    inline: list[float] = []  # the same with @ag.method(inline=True): no pool thread
    pool: list[float] = []  # the same on a pool thread (inline=False)
    with ag.init(num_workers=num_workers):
        actor = Pinger.remote()
        for method, into in (
            (actor.ping, samples),
            (actor.ping_inline, inline),
            (actor.ping_pool, pool),
        ):
            ag.get(method.remote(), timeout=GET_TIMEOUT_S)
            for _ in range(sizes.round_trips):
                started = time.perf_counter_ns()
                ag.get(method.remote(), timeout=GET_TIMEOUT_S)
                into.append((time.perf_counter_ns() - started) / 1_000)
    return {
        "value": statistics.median(samples),
        "detail": {
            "p99_us": percentile(samples, 99),
            "mean_us": statistics.fmean(samples),
            "max_us": max(samples),
            "round_trips": sizes.round_trips,
            "inline_median_us": statistics.median(inline),
            "pool_median_us": statistics.median(pool),
            "summary": (
                f"inline method: median {statistics.median(inline):,.0f} µs; "
                f"on a pool thread: median {statistics.median(pool):,.0f} µs"
            ),
        },
    }


@register(
    "pipelined_calls",
    "{pipelined:,} pipelined actor calls",
    "calls/s",
    ">=",
    50_000,
    limit="trio_oneway_msgs_per_s",
)
def pipelined_calls(sizes: Sizes, num_workers: int, **options: Any) -> Result:
    """``ag.get([a.ping.remote() for _ in range(N)])`` on one warm actor: calls/s."""
    with ag.init(num_workers=num_workers, **options):
        actor = Pinger.remote()
        ag.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)
        started = time.perf_counter()
        ag.get([actor.ping.remote() for _ in range(sizes.pipelined)], timeout=GET_TIMEOUT_S)
        elapsed = time.perf_counter() - started
    return {
        "value": sizes.pipelined / elapsed,
        "detail": {"calls": sizes.pipelined, "seconds": elapsed},
    }


@register(
    "pipelined_calls_no_pulses",
    "{pipelined:,} pipelined actor calls, pulses off",
    "calls/s",
    ">=",
    50_000,
    limit="trio_oneway_msgs_per_s",
)
def pipelined_calls_no_pulses(sizes: Sizes, num_workers: int) -> Result:
    """``pipelined_calls`` with pulses effectively off (one an hour): what pulses cost."""
    return pipelined_calls(sizes, num_workers, pulse_interval=3600.0)


@register(
    "pool_map",
    "{pool_items:,} no-op items through ag.Pool.map, default chunking",
    "items/s",
    ">=",
    200_000,
)
def pool_map(sizes: Sizes, num_workers: int) -> Result:
    """``ag.Pool().map(identity, range(N))`` with default chunking, after a warm-up map: items/s."""
    with ag.init(num_workers=num_workers), ag.Pool() as pool:
        pool.map(identity, range(sizes.warmup_tasks))
        started = time.perf_counter()
        results = pool.map(identity, range(sizes.pool_items))
        elapsed = time.perf_counter() - started
    assert results[-1] == sizes.pool_items - 1
    return {
        "value": sizes.pool_items / elapsed,
        "detail": {"items": sizes.pool_items, "seconds": elapsed, "processes": num_workers},
    }


@register(
    "big_argument",
    "{array_mb:g} MB numpy argument",
    "MB/s",
    ">=",
    2_000,
    limit="memcpy_mb_per_s",
)
def big_argument(sizes: Sizes, num_workers: int) -> Result:
    """``ag.get(f.remote(arr))`` with a float64 array of ``array_bytes``: median of
    ``array_runs`` after one warm-up, as MB/s of argument."""
    import numpy as np

    arr = np.ones(sizes.array_bytes // 8)
    runs: list[float] = []
    with ag.init(num_workers=num_workers):
        assert ag.get(first_element.remote(arr), timeout=GET_TIMEOUT_S) == 1.0
        for _ in range(sizes.array_runs):
            started = time.perf_counter()
            ag.get(first_element.remote(arr), timeout=GET_TIMEOUT_S)
            runs.append(time.perf_counter() - started)
    median = statistics.median(runs)
    return {
        "value": arr.nbytes / MB / median,
        "detail": {"megabytes": arr.nbytes / MB, "median_s": median, "runs_s": runs},
    }


@register(
    "big_bytes",
    "{array_mb:g} MB bytes argument",
    "MB/s",
    ">=",
    2_000,
    limit="memcpy_mb_per_s",
)
def big_bytes(sizes: Sizes, num_workers: int) -> Result:
    """``ag.get(f.remote(data))`` with ``data = bytes(array_bytes)``: median of ``array_runs``
    after one warm-up, as MB/s of argument (the store writes the bytes once; on the worker's
    node they arrive as a ``bytes`` whose pages are the store's, where the allocator allows)."""
    data = bytes(sizes.array_bytes)
    runs: list[float] = []
    with ag.init(num_workers=num_workers):
        assert ag.get(first_byte.remote(data), timeout=GET_TIMEOUT_S) == 0
        for _ in range(sizes.array_runs):
            started = time.perf_counter()
            ag.get(first_byte.remote(data), timeout=GET_TIMEOUT_S)
            runs.append(time.perf_counter() - started)
    median = statistics.median(runs)
    return {
        "value": len(data) / MB / median,
        "detail": {"megabytes": len(data) / MB, "median_s": median, "runs_s": runs},
    }


@register(
    "ring",
    "{ring_agents}-agent ring of named agents, {ring_hops:,} hops",
    "hops/s",
    ">=",
    15_000,
    limit="hop_bound_per_s",
)
def ring(sizes: Sizes, num_workers: int) -> Result:
    """Named coroutine agents ring0..ringN-1 pass one counter ``ring_hops`` times by name:
    hops/s from ``ag.send("ring0", 0)`` to ``ag.wait`` seeing the agent that returned."""
    n, hops = sizes.ring_agents, sizes.ring_hops
    with ag.init(num_workers=num_workers):
        refs = [ring_agent.options(name=f"ring{i}").remote(i, n, hops) for i in range(n)]
        try:
            started = time.perf_counter()
            ag.send("ring0", 0)
            ready, _ = ag.wait(refs, num_returns=1, timeout=GET_TIMEOUT_S)
            elapsed = time.perf_counter() - started
            if not ready:
                raise TimeoutError(f"the ring did not finish {hops} hops in {GET_TIMEOUT_S} s")
            final = ag.get(ready[0], timeout=GET_TIMEOUT_S)
            if final != hops:
                raise RuntimeError(f"the ring's last agent returned {final}, not {hops}")
        finally:
            for ref in refs:
                ag.kill(ref)
    return {"value": hops / elapsed, "detail": {"agents": n, "hops": hops, "seconds": elapsed}}


@register(
    "handle_ring",
    "{ring_agents}-actor ring by handle, fire-and-forget (sync actors), {ring_hops:,} hops",
    "hops/s",
    ">=",
    10_000,
    limit="hop_bound_per_s",
)
def handle_ring(sizes: Sizes, num_workers: int) -> Result:
    """Sync actors, each holding the next one's handle, pass a counter on with
    ``next.hop.remote(n + 1)`` and never wait for a result; the last hop tells a named agent.
    One warm-up lap first (connections, the class on every worker), then ``ring_hops`` hops."""
    n, hops = sizes.ring_agents, sizes.ring_hops
    with ag.init(num_workers=num_workers):
        actors = [RingActor.remote() for _ in range(n)]
        ag.get([a.link.remote(actors[(i + 1) % n]) for i, a in enumerate(actors)])
        elapsed = _handle_lap(actors, "hop", n, hops)
        inline = _handle_lap(actors, "hop_inline", n, hops)  # @ag.method(inline=True)
    return {
        "value": hops / elapsed,
        "detail": {
            "actors": n,
            "hops": hops,
            "seconds": elapsed,
            "inline_hops_per_s": hops / inline,
            "summary": f"inline method: {hops / inline:,.0f} hops/s",
        },
    }


def _handle_lap(actors: list[Any], method: str, n: int, hops: int) -> float:
    """A warm-up lap of ``method`` round the ring, then seconds for ``hops`` hops."""
    sinks = [ring_sink.options(name=f"hring_{method}_{end}").remote() for end in ("warm", "done")]
    try:
        getattr(actors[0], method).remote(0, n, f"hring_{method}_warm")
        if ag.get(sinks[0], timeout=GET_TIMEOUT_S) != n:
            raise RuntimeError("the warm-up lap of the handle ring lost its counter")
        started = time.perf_counter()
        getattr(actors[0], method).remote(0, hops, f"hring_{method}_done")
        final = ag.get(sinks[1], timeout=GET_TIMEOUT_S)
        elapsed = time.perf_counter() - started
        if final != hops:
            raise RuntimeError(f"the handle ring ended at {final}, not {hops}")
    finally:
        for ref in sinks:
            ag.kill(ref)
    return elapsed


@register(
    "idle_rss",
    "idle memory, PSS of the whole cluster (driver, template, workers)",
    "MB",
    "<=",
    120,
    limit="cluster_rss_bound_mb",
)
def idle_rss(sizes: Sizes, num_workers: int) -> Result:
    """Fresh process: cluster up, 4 tasks run, 1 s idle; the PSS of the driver and all its
    descendants (see ``rss_result`` for why PSS, and for the issue's RSS figure)."""
    byte_compile_actorgrid()  # as installed: code read from .pyc files, as in cold_start
    return rss_result(run_child(_IDLE_RSS_SCRIPT, str(num_workers)))


@register(
    "actor_recovery",
    "named actor answers again after kill -9 of its worker, median of {recovery_runs}",
    "s",
    "<=",
    1.0,
)
def actor_recovery(sizes: Sizes, num_workers: int) -> Result:
    """Kill -9 the worker of a named actor (``max_restarts=1``): seconds until the same
    handle answers again from the new incarnation; median of ``recovery_runs``."""
    runs: list[float] = []
    # Runs follow each other within seconds: more kills than the default intensity allows.
    forever = ag.RestartPolicy(max_restarts=-1)
    with ag.init(num_workers=num_workers, worker_restarts=forever) as cluster:
        for i in range(sizes.recovery_runs):
            actor = Pinger.options(name=f"recover{i}", max_restarts=1, max_task_retries=1).remote()
            pid = ag.get(actor.pid.remote(), timeout=GET_TIMEOUT_S)
            started = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            if ag.get(actor.pid.remote(), timeout=GET_TIMEOUT_S) == pid:
                raise RuntimeError("the actor answered from the worker that was killed")
            runs.append(time.perf_counter() - started)
            ag.kill(actor)
            deadline = time.monotonic() + GET_TIMEOUT_S
            while len(cluster.workers()) < num_workers:  # the slot is refilled before the next run
                if time.monotonic() > deadline:
                    raise TimeoutError("the killed worker's slot was not refilled")
                time.sleep(0.01)
    return {
        "value": statistics.median(runs),
        "detail": {"runs_s": runs, "max_s": max(runs)},
    }
