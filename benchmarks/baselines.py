"""Baselines for the workloads where they apply: ``multiprocessing.Pool`` and, if installed, Ray.

The same sizes as the actorgrid workloads, with as close an equivalent as each library offers.
The Pool has no actors and no named mailboxes, so the actor and ring workloads have no Pool
figure. Ray has no named mailboxes, so the ring has no Ray figure.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

from workloads import (
    GET_TIMEOUT_S,
    MB,
    MEMORY_SNAPSHOT,
    Result,
    Sizes,
    cold_start_result,
    percentile,
    rss_result,
    run_child,
)

__all__ = ["POOL", "RAY", "ray_version"]


def noop(_: object = None) -> None:
    return None


def first_element(arr: Any) -> float:
    return float(arr[0])


# --- multiprocessing.Pool ------------------------------------------------------------------

# Builtins (abs) are what the children run, so the scripts work under any start method.
_POOL_COLD_START_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import multiprocessing

with multiprocessing.Pool(int(sys.argv[1])) as pool:
    assert pool.apply(abs, (-1,)) == 1
    first_result_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    pool.terminate()
    pool.join()
shutdown_s = time.perf_counter() - t1
print(json.dumps({"seconds": first_result_s, "shutdown_s": shutdown_s}))
"""

_POOL_IDLE_RSS_SCRIPT = f"""
import json, sys, time
import psutil
import multiprocessing
{MEMORY_SNAPSHOT}
with multiprocessing.Pool(int(sys.argv[1])) as pool:
    assert pool.map(abs, range(4)) == [0, 1, 2, 3]
    time.sleep(1.0)
    processes = memory_snapshot()
    pool.terminate()
    pool.join()
print(json.dumps({{"processes": processes}}))
"""


def _pool(num_workers: int) -> Any:
    return multiprocessing.Pool(num_workers)


def _close(pool: Any) -> None:
    pool.terminate()
    pool.join()


def pool_cold_start(sizes: Sizes, num_workers: int) -> Result:
    """Fresh process: before `import multiprocessing` to Pool(n) + first apply returning."""
    return cold_start_result(_POOL_COLD_START_SCRIPT, sizes.cold_start_runs, str(num_workers))


def pool_noop_tasks(sizes: Sizes, num_workers: int) -> Result:
    """``pool.map(noop, range(N))`` (batched) and N ``apply_async`` calls (one per task)."""
    pool = _pool(num_workers)
    try:
        pool.map(noop, range(sizes.warmup_tasks))
        started = time.perf_counter()
        pool.map(noop, range(sizes.tasks))
        map_s = time.perf_counter() - started
        started = time.perf_counter()
        pending = [pool.apply_async(noop) for _ in range(sizes.tasks)]
        for result in pending:
            result.get(timeout=GET_TIMEOUT_S)
        apply_s = time.perf_counter() - started
    finally:
        _close(pool)
    return {
        "value": sizes.tasks / map_s,
        "detail": {
            "map_tasks_per_s": sizes.tasks / map_s,
            "apply_async_tasks_per_s": sizes.tasks / apply_s,
            "tasks": sizes.tasks,
        },
    }


def pool_pool_map(sizes: Sizes, num_workers: int) -> Result:
    """``pool.map(noop, range(N))`` with default chunking, after a warm-up map: items/s."""
    pool = _pool(num_workers)
    try:
        pool.map(noop, range(sizes.warmup_tasks))
        started = time.perf_counter()
        pool.map(noop, range(sizes.pool_items))
        elapsed = time.perf_counter() - started
    finally:
        _close(pool)
    return {"value": sizes.pool_items / elapsed, "detail": {"items": sizes.pool_items}}


def pool_big_argument(sizes: Sizes, num_workers: int) -> Result:
    """``pool.apply(first_element, (arr,))``: median of ``array_runs`` after one warm-up."""
    import numpy as np

    arr = np.ones(sizes.array_bytes // 8)
    runs: list[float] = []
    pool = _pool(num_workers)
    try:
        assert pool.apply(first_element, (arr,)) == 1.0
        for _ in range(sizes.array_runs):
            started = time.perf_counter()
            pool.apply(first_element, (arr,))
            runs.append(time.perf_counter() - started)
    finally:
        _close(pool)
    median = statistics.median(runs)
    return {
        "value": arr.nbytes / MB / median,
        "detail": {"megabytes": arr.nbytes / MB, "median_s": median, "runs_s": runs},
    }


def pool_idle_rss(sizes: Sizes, num_workers: int) -> Result:
    """Fresh process: Pool(n) up, 4 tasks run, 1 s idle; RSS of driver + all descendants."""
    return rss_result(run_child(_POOL_IDLE_RSS_SCRIPT, str(num_workers)))


Workload = Callable[[Sizes, int], Result]

POOL: dict[str, Workload] = {
    "cold_start": pool_cold_start,
    "noop_tasks": pool_noop_tasks,
    "pool_map": pool_pool_map,
    "big_argument": pool_big_argument,
    "idle_rss": pool_idle_rss,
}


# --- Ray (optional) ------------------------------------------------------------------------


def ray_version() -> str | None:
    """Ray's version if ``import ray`` would work, else None (Ray is never required)."""
    if importlib.util.find_spec("ray") is None:
        return None
    try:
        import ray
    except ImportError:
        return None
    return str(getattr(ray, "__version__", "unknown"))


_RAY_INIT = "ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, log_to_driver=False)"

_RAY_COLD_START_SCRIPT = f"""
import json, sys, time
t0 = time.perf_counter()
import ray
{_RAY_INIT}

@ray.remote
def one():
    return 1

assert ray.get(one.remote(), timeout=60.0) == 1
first_result_s = time.perf_counter() - t0
t1 = time.perf_counter()
ray.shutdown()
print(json.dumps({{"seconds": first_result_s, "shutdown_s": time.perf_counter() - t1}}))
"""

_RAY_IDLE_RSS_SCRIPT = f"""
import json, sys, time
import psutil
import ray
{_RAY_INIT}
{MEMORY_SNAPSHOT}

@ray.remote
def one():
    return 1

try:
    assert ray.get([one.remote() for _ in range(4)], timeout=60.0) == [1] * 4
    time.sleep(1.0)
    processes = memory_snapshot()
finally:
    ray.shutdown()
print(json.dumps({{"processes": processes}}))
"""


def _ray_session(num_workers: int) -> Any:
    import ray

    ray.init(num_cpus=num_workers, include_dashboard=False, log_to_driver=False)
    return ray


def ray_cold_start(sizes: Sizes, num_workers: int) -> Result:
    return cold_start_result(_RAY_COLD_START_SCRIPT, sizes.cold_start_runs, str(num_workers))


def ray_noop_tasks(sizes: Sizes, num_workers: int) -> Result:
    ray = _ray_session(num_workers)
    try:
        remote_noop = ray.remote(noop)
        ray.get([remote_noop.remote() for _ in range(sizes.warmup_tasks)], timeout=GET_TIMEOUT_S)
        started = time.perf_counter()
        ray.get([remote_noop.remote() for _ in range(sizes.tasks)], timeout=GET_TIMEOUT_S)
        elapsed = time.perf_counter() - started
    finally:
        ray.shutdown()
    return {"value": sizes.tasks / elapsed, "detail": {"tasks": sizes.tasks, "seconds": elapsed}}


class _Pinger:
    def ping(self) -> int:
        return 0


def ray_actor_rtt(sizes: Sizes, num_workers: int) -> Result:
    ray = _ray_session(num_workers)
    samples: list[float] = []
    try:
        actor = ray.remote(_Pinger).remote()
        ray.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)
        for _ in range(sizes.round_trips):
            started = time.perf_counter_ns()
            ray.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)
            samples.append((time.perf_counter_ns() - started) / 1_000)
    finally:
        ray.shutdown()
    return {
        "value": statistics.median(samples),
        "detail": {"p99_us": percentile(samples, 99), "mean_us": statistics.fmean(samples)},
    }


def ray_pipelined_calls(sizes: Sizes, num_workers: int) -> Result:
    ray = _ray_session(num_workers)
    try:
        actor = ray.remote(_Pinger).remote()
        ray.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)
        started = time.perf_counter()
        ray.get([actor.ping.remote() for _ in range(sizes.pipelined)], timeout=GET_TIMEOUT_S)
        elapsed = time.perf_counter() - started
    finally:
        ray.shutdown()
    return {"value": sizes.pipelined / elapsed, "detail": {"seconds": elapsed}}


def ray_big_argument(sizes: Sizes, num_workers: int) -> Result:
    import numpy as np

    arr = np.ones(sizes.array_bytes // 8)
    runs: list[float] = []
    ray = _ray_session(num_workers)
    try:
        remote_first = ray.remote(first_element)
        ray.get(remote_first.remote(arr), timeout=GET_TIMEOUT_S)
        for _ in range(sizes.array_runs):
            started = time.perf_counter()
            ray.get(remote_first.remote(arr), timeout=GET_TIMEOUT_S)
            runs.append(time.perf_counter() - started)
    finally:
        ray.shutdown()
    median = statistics.median(runs)
    return {"value": arr.nbytes / MB / median, "detail": {"median_s": median, "runs_s": runs}}


def ray_idle_rss(sizes: Sizes, num_workers: int) -> Result:
    return rss_result(run_child(_RAY_IDLE_RSS_SCRIPT, str(num_workers)))


RAY: dict[str, Workload] = {
    "cold_start": ray_cold_start,
    "noop_tasks": ray_noop_tasks,
    "actor_rtt": ray_actor_rtt,
    "pipelined_calls": ray_pipelined_calls,
    "big_argument": ray_big_argument,
    "idle_rss": ray_idle_rss,
}
