"""Workloads of the node object store (``run.py`` registers ``SPECS``).

- ``store_chain``: an array of half ``array_bytes`` passed task -> task -> task by ref, as
  MB/s of the two hand-offs (median of ``array_runs`` chains after one of the same size); it
  fails if the driver's RSS grew by half the array meanwhile (the growth is in its detail).
- ``store_argument``: ``ag.get(f.remote(arr))`` with a numpy array of ``array_bytes``, as MB/s
  of argument (the same measure as ``big_argument``, kept here with the store's figures).
- ``store_two_nodes``: a value of ``array_bytes`` made by a task on one node and read by a task
  on another, each node in its own network namespace (``tests/hostlab.py``), as MB/s; the
  machine's TCP bulk rate between the same namespaces is measured in the same run (median of
  ``TCP_RUNS``), and the figure's detail gives the ratio (goal: at least 70 %). Needs root; without it the figure is
  NaN with the reason.
- ``store_two_nodes_tls``: the same with the cluster on mutual TLS, beside it: TLS in user
  space (Python 3.11's ``ssl`` has no kernel TLS) costs AES-GCM and one more copy a side, so
  its ratio to TCP bulk is bounded near 1 / (1 + TCP rate / AES-GCM rate), ~74 % with TCP at
  2 GB/s and AES-256-GCM at 5.65 GB/s a core, before any overhead (43-46 % measured).
"""

from __future__ import annotations

import gc
import math
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from workloads import GET_TIMEOUT_S, MB, Result, Sizes, register

import actorgrid as ag

__all__ = ["store_argument", "store_chain", "store_two_nodes", "store_two_nodes_tls"]


@ag.remote
def make_array(nbytes: int) -> Any:
    import numpy as np

    return np.full(nbytes, 1, dtype=np.uint8)


@ag.remote
def next_array(a: Any) -> Any:
    return a[::-1] + 1  # a new array of the same size: the middle task's own result


@ag.remote
def array_sum(a: Any) -> int:
    return int(a.sum(dtype="int64"))


@ag.remote
def first_byte(a: Any) -> int:
    return int(a[0])


RSS_NOISE_BYTES = 16 * MB
TCP_RUNS = 3  # the machine's TCP bulk rate swings on a shared machine: the median of these


@register(
    "store_chain", "array of half {array_mb:g} MB passed task->task->task, driver RSS flat", "MB/s",
    ">=", 1_000, limit="memcpy_mb_per_s",
)  # fmt: skip
def store_chain(sizes: Sizes, num_workers: int) -> Result:
    nbytes = sizes.array_bytes // 2
    driver = psutil.Process()
    runs: list[float] = []
    with ag.init(num_workers=num_workers):
        # One chain of the full size first, as the argument rows warm up: the first 50 MB a
        # worker allocates costs its page faults (~100 ms each), which is the machine's, not
        # the hand-off's.
        assert ag.get(array_sum.remote(next_array.remote(make_array.remote(nbytes)))) == 2 * nbytes
        gc.collect()
        before = driver.memory_info().rss
        for _ in range(sizes.array_runs):
            started = time.perf_counter()
            ref = next_array.remote(make_array.remote(nbytes))
            total = ag.get(array_sum.remote(ref), timeout=GET_TIMEOUT_S)
            runs.append(time.perf_counter() - started)
            del ref
            assert total == 2 * nbytes, total
        grown = driver.memory_info().rss - before
    # RSS moves by a few MB on its own (allocator, imports): below that floor the check says
    # nothing, which only the quick sizes are (tests/_runtime/test_store.py checks 100 MB).
    if grown > max(nbytes / 2, RSS_NOISE_BYTES):
        raise RuntimeError(
            f"the driver's RSS grew by {grown / MB:.0f} MB while a {nbytes / MB:.0f} MB array "
            "went from task to task: it passed through the driver"
        )
    median = statistics.median(runs)
    return {
        "value": 2 * nbytes / MB / median,  # two hand-offs of the array
        "detail": {
            "array_mb": nbytes / MB,
            "median_s": median,
            "runs_s": runs,
            "driver_rss_growth_mb": grown / MB,
        },
    }


@register(
    "store_argument", "{array_mb:g} MB numpy argument through the object store", "MB/s", ">=",
    2_000, limit="memcpy_mb_per_s",
)  # fmt: skip
def store_argument(sizes: Sizes, num_workers: int) -> Result:
    import numpy as np

    arr = np.ones(sizes.array_bytes // 8)
    runs: list[float] = []
    with ag.init(num_workers=num_workers):
        assert ag.get(first_byte.remote(arr), timeout=GET_TIMEOUT_S) == 1
        for _ in range(sizes.array_runs):
            started = time.perf_counter()
            ag.get(first_byte.remote(arr), timeout=GET_TIMEOUT_S)
            runs.append(time.perf_counter() - started)
    median = statistics.median(runs)
    return {
        "value": arr.nbytes / MB / median,
        "detail": {"megabytes": arr.nbytes / MB, "median_s": median, "runs_s": runs},
    }


# --- two nodes in network namespaces -----------------------------------------------------

# Receives argv[2] bytes on argv[1]:7777, then prints the rate (MB/s) and closes.
_TCP_SINK = """
import json, socket, sys, time
s = socket.create_server((sys.argv[1], 7777))
print(json.dumps({"listening": True}), flush=True)
c, _ = s.accept()
n, want, started = 0, int(sys.argv[2]), None
buf = bytearray(1 << 20)
while n < want:
    got = c.recv_into(buf)
    if not got:
        break
    started = started or time.perf_counter()
    n += got
c.sendall(b"k")
print(json.dumps({"mb_s": n / 1e6 / (time.perf_counter() - started)}), flush=True)
"""
_TCP_SOURCE = """
import socket, sys
c = socket.create_connection((sys.argv[1], 7777))
block = b"x" * (1 << 20)
left = int(sys.argv[2])
while left > 0:
    c.sendall(block[: min(left, len(block))])
    left -= len(block)
c.recv(1)
"""
# A driver on h0: the value made on the zone=a node, read on the zone=b node, ``runs`` times
# (a new value each time: a second read on the same node would hit its cache).
_DRIVER = """
import json, statistics, sys, time
import actorgrid as ag

@ag.remote
def make(n):
    import numpy as np
    return np.full(n, 1, dtype=np.uint8)

@ag.remote
def first(a):
    return int(a[0])

nbytes, runs = int(sys.argv[3]), int(sys.argv[4])
tls = None
if len(sys.argv) > 5:  # a folder with host.pem and ca.pem: the cluster runs mutual TLS
    tls = ag.TLSConfig(f"{sys.argv[5]}/host.pem", f"{sys.argv[5]}/host.pem", f"{sys.argv[5]}/ca.pem")
with ag.init(address=sys.argv[1], secret=bytes.fromhex(sys.argv[2]), tls=tls):
    times = []
    for _ in range(runs + 1):
        ref = make.options(label_selector={"zone": "a"}).remote(nbytes)
        ag.wait([ref], timeout=120)
        started = time.perf_counter()
        assert ag.get(first.options(label_selector={"zone": "b"}).remote(ref), timeout=120) == 1
        times.append(time.perf_counter() - started)
        del ref
    print(json.dumps({"mb_s": nbytes / 1e6 / statistics.median(times[1:]), "runs_s": times}))
"""


@register(
    "store_two_nodes", "{array_mb:g} MB value read across two netns nodes (vs TCP bulk)",
    "MB/s", ">=", 500,
)  # fmt: skip
def store_two_nodes(sizes: Sizes, num_workers: int) -> Result:
    return _two_nodes(sizes, tls=False)


# A head (argv: host, secret, port, pulse, cert folder) or a node agent (argv: head address,
# secret, pulse, zone, cert folder) with mutual TLS; each prints a line once it serves.
_TLS_HEAD = """
import functools, json, sys, trio
import actorgrid as ag
d = sys.argv[5]
tls = ag.TLSConfig(f"{d}/host.pem", f"{d}/host.pem", f"{d}/ca.pem")
async def main():
    async with trio.open_nursery() as nursery:
        address = await nursery.start(functools.partial(
            ag.serve_head, secret=bytes.fromhex(sys.argv[2]), host=sys.argv[1],
            port=int(sys.argv[3]), pulse_interval=float(sys.argv[4]), tls=tls))
        print(json.dumps({"address": address}), flush=True)
trio.run(main)
"""
_TLS_NODE = """
import functools, json, os, sys, trio
import actorgrid as ag
d = sys.argv[5]
tls = ag.TLSConfig(f"{d}/host.pem", f"{d}/host.pem", f"{d}/ca.pem")
async def main():
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(
            ag.serve_node, sys.argv[1], secret=bytes.fromhex(sys.argv[2]), num_workers=1,
            pulse_interval=float(sys.argv[3]), labels={"zone": sys.argv[4]}, tls=tls))
        print(json.dumps({"joined": os.getpid()}), flush=True)
trio.run(main)
"""


@register(
    "store_two_nodes_tls", "{array_mb:g} MB value read across two netns nodes, mutual TLS "
    "(vs TCP bulk)", "MB/s", ">=", 500,
)  # fmt: skip
def store_two_nodes_tls(sizes: Sizes, num_workers: int) -> Result:
    return _two_nodes(sizes, tls=True)


def _two_nodes(sizes: Sizes, *, tls: bool) -> Result:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from hostlab import Hosts, netns_unavailable, read_json

    reason = netns_unavailable()
    if reason is not None:
        return {"value": math.nan, "detail": {"skipped": reason}}
    nbytes = sizes.array_bytes
    hosts = Hosts(Path(tempfile.mkdtemp(prefix="ag-bench-hosts-")))
    try:
        hosts.create()
        tcp_runs = []
        for _ in range(TCP_RUNS):
            sink = hosts.run(2, _TCP_SINK, hosts.addresses[2], str(nbytes))
            read_json(sink)
            hosts.run(1, _TCP_SOURCE, hosts.addresses[2], str(nbytes))
            tcp_runs.append(float(read_json(sink)["mb_s"]))
        tcp = statistics.median(tcp_runs)  # the same statistic as the pulls'
        secret = secrets.token_hex(32)
        certs: list[str] = []
        if tls:
            import trustme

            ca = trustme.CA()
            pem = ca.issue_cert(*hosts.addresses).private_key_and_cert_chain_pem
            pem.write_to_path(str(hosts.folder / "host.pem"))
            ca.cert_pem.write_to_path(str(hosts.folder / "ca.pem"))
            certs = [str(hosts.folder)]
            head = hosts.run(0, _TLS_HEAD, hosts.addresses[0], secret, "7412", "0.5", *certs)
            address = read_json(head)["address"]
            for host, zone in ((1, "a"), (2, "b")):
                read_json(hosts.run(host, _TLS_NODE, address, secret, "0.5", zone, *certs))
        else:
            _, address = hosts.start_head(0, secret, 0.5)
            for host, zone in ((1, "a"), (2, "b")):
                hosts.start_node(host, address, secret, 0.5, labels={"zone": zone})
        driver = hosts.run(0, _DRIVER, address, secret, str(nbytes), str(sizes.array_runs), *certs)
        found = read_json(driver, timeout=GET_TIMEOUT_S * 2)
    finally:
        hosts.destroy()
    rate = float(found["mb_s"])
    return {
        "value": rate,
        "detail": {
            "megabytes": nbytes / MB,
            "tcp_bulk_mb_s": tcp,
            "tcp_runs_mb_s": tcp_runs,
            "of_tcp": rate / tcp,
            **found,
        },
    }
