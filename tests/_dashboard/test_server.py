"""The dashboard of a real embedded cluster (``ag.init(dashboard=True)``), over real sockets:
the token on every request, the bounds on requests, ``/metrics`` read by a strict Prometheus
text parser, and its figures moving as the cluster does."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

import actorgrid as ag
from actorgrid._runtime.core import current_runtime

CLUSTER_OPTIONS = {"num_workers": 2, "dashboard": True}
WAIT_S = 30.0


# --- a strict Prometheus text-format (0.0.4) parser --------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_prometheus(text: str) -> tuple[Samples, dict[str, str]]:
    """Samples by (name, labels), and each family's type; raises AssertionError on anything
    the format does not allow: a sample before its TYPE, a repeated family or sample, a
    counter not named *_total, a bad label or value."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    types: dict[str, str] = {}
    samples: Samples = {}
    for number, line in enumerate(text.splitlines(), 1):
        where = f"line {number}: {line!r}"
        if line.startswith("# HELP "):
            assert re.match(rf"^# HELP {_NAME} .+$", line), where
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), where
            assert name not in types, f"family {name} declared twice ({where})"
            if kind == "counter":
                assert name.endswith("_total"), where
            types[name] = kind
        else:
            assert not line.startswith("#") and line, where
            match = _SAMPLE.match(line)
            assert match, where
            name, labels_text, value = match.groups()
            assert name in types, f"sample before its TYPE ({where})"
            labels: list[tuple[str, str]] = []
            rest = labels_text or ""
            while rest:
                label = _LABEL.match(rest)
                assert label, where
                labels.append((label[1], label[2]))
                rest = rest[label.end() :]
            key = (name, frozenset(labels))
            assert key not in samples, f"sample repeated ({where})"
            samples[key] = float(value)
            if types[name] == "counter":
                assert samples[key] >= 0, where
    return samples, types


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


# --- helpers -----------------------------------------------------------------------------


def _base(cluster: ag.Cluster) -> tuple[str, str]:
    assert cluster.dashboard_url is not None
    base, _, query = cluster.dashboard_url.partition("?")
    return base, query.removeprefix("token=")


def _status_of(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def _metrics(cluster: ag.Cluster) -> Samples:
    base, token = _base(cluster)
    status, body = _status_of(base + "metrics", {"Authorization": f"Bearer {token}"})
    assert status == 200, body
    return parse_prometheus(body)[0]


def _wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {WAIT_S} s"
        time.sleep(0.1)


def _raw(cluster: ag.Cluster, data: bytes) -> str:
    base, _ = _base(cluster)
    host, port = base.removeprefix("http://").rstrip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply.decode("latin-1")


# --- tests -------------------------------------------------------------------------------


def test_the_dashboard_listens_on_loopback(cluster: ag.Cluster) -> None:
    base, token = _base(cluster)
    assert base.startswith("http://127.0.0.1:")
    assert len(token) == 64


@pytest.mark.parametrize("path", ["", "metrics", "ws"])
def test_a_request_without_the_token_gets_401_and_a_wrong_one_403(
    cluster: ag.Cluster, path: str
) -> None:
    base, token = _base(cluster)
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"} if path == "ws" else {}
    status, body = _status_of(base + path, upgrade)
    assert status == 401, body
    assert "token" in body
    status, body = _status_of(base + path + "?token=" + "0" * 64, upgrade)
    assert status == 403, body
    status, _ = _status_of(base + path, {"Authorization": "Bearer " + token[:-1] + "x"})
    assert status == 403


def test_the_websocket_feed_serves_the_right_token(cluster: ag.Cluster) -> None:
    # (A wrong or missing token on /ws is refused above, before any WebSocket handshake.)
    base, token = _base(cluster)
    ws_base = "ws" + base.removeprefix("http") + "ws"

    async def main() -> dict[str, Any]:
        with trio.fail_after(WAIT_S):
            return await feed()

    async def feed() -> dict[str, Any]:
        async with trio_websocket.open_websocket_url(ws_base + "?token=" + token) as ws:
            while True:
                message: dict[str, Any] = json.loads(await ws.get_message())
                if message["type"] == "snapshot":
                    return message

    snapshot = trio.run(main)
    assert len(snapshot["workers"]) == 2


@ag.remote
def doomed(word: str) -> None:
    raise ValueError(f"doomed by {word}")


def test_the_feed_shows_a_failed_task_with_its_traceback(cluster: ag.Cluster) -> None:
    with pytest.raises(ValueError, match="doomed by fate"):
        ag.get(doomed.remote("fate"), timeout=WAIT_S)
    base, token = _base(cluster)
    ws_url = "ws" + base.removeprefix("http") + "ws?token=" + token

    async def failure() -> dict[str, Any]:
        with trio.fail_after(WAIT_S):  # the worker reports its events every 0.2 s
            async with trio_websocket.open_websocket_url(ws_url) as ws:
                while True:
                    message: dict[str, Any] = json.loads(await ws.get_message())
                    for f in message.get("failures", ()):
                        if f.get("error") == "ValueError: doomed by fate":
                            return f

    shown = trio.run(failure)
    assert shown["name"] == "doomed"
    assert shown["detail"].startswith("Traceback (most recent call last):")
    # (the test module's functions travel by value: their frames have no source lines)
    assert ", in doomed\n" in shown["detail"]
    assert shown["detail"].rstrip().endswith("ValueError: doomed by fate")


@ag.remote
class Keeper:
    def hold(self) -> int:
        return os.getpid()


def test_the_feed_shows_nodes_resources_and_actors_with_their_class_and_mailbox(
    cluster: ag.Cluster,
) -> None:
    keeper = Keeper.options(name="keeper").remote()
    pid = ag.get(keeper.hold.remote(), timeout=WAIT_S)
    base, token = _base(cluster)
    ws_url = "ws" + base.removeprefix("http") + "ws?token=" + token

    async def snapshot() -> dict[str, Any]:
        with trio.fail_after(WAIT_S):
            async with trio_websocket.open_websocket_url(ws_url) as ws:
                while True:
                    message: dict[str, Any] = json.loads(await ws.get_message())
                    if message["type"] == "snapshot" and any(
                        a["name"] == "keeper" for a in message["actors"]
                    ):
                        return message

    shown = trio.run(snapshot)
    (node,) = shown["nodes"]
    assert node["state"] == "alive"
    assert 0 <= node["availability"]["cpu_percent"] <= 100
    assert node["availability"]["memory_available"] > 0
    assert node["availability"]["num_cpus"] >= 1
    assert 0 <= node["last_pulse_s"] < WAIT_S
    (actor,) = [a for a in shown["actors"] if a["name"] == "keeper"]
    assert (actor["label"], actor["state"], actor["restarts"]) == ("Keeper", "alive", 0)
    assert actor["mailbox_depth"] == 0
    (worker,) = [w for w in shown["workers"] if w["worker"]["pid"] == pid]
    assert actor["worker_id"] == worker["worker"]["worker_id"]
    ag.kill(keeper)


def test_requests_beyond_the_bounds_are_refused_and_the_dashboard_stays_up(
    cluster: ag.Cluster,
) -> None:
    huge = b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"
    assert _raw(cluster, huge).startswith("HTTP/1.1 431 ")
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n"
    assert _raw(cluster, many).startswith("HTTP/1.1 431 ")
    assert _raw(cluster, b"POST / HTTP/1.1\r\n\r\n").startswith("HTTP/1.1 405 ")
    base, token = _base(cluster)
    # A connection that never sends its request does not hold the dashboard up.
    host, port = base.removeprefix("http://").rstrip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port))):
        status, body = _status_of(base + "?token=" + token)
    assert status == 200
    assert "<title>actorgrid dashboard</title>" in body


@ag.remote
def wait_for_file(path: str) -> str:
    while not os.path.exists(path):
        time.sleep(0.02)
    return "done"


@ag.remote
async def hoarder(ctx: ag.Context, path: str) -> int:
    while not os.path.exists(path):
        await trio.sleep(0.02)
    got = 0
    async for msg in ctx.mailbox:
        if msg == "stop":
            return got
        got += 1
    return got


def test_metrics_parse_and_their_figures_follow_the_cluster(
    cluster: ag.Cluster, tmp_path: Path
) -> None:
    first = _metrics(cluster)
    node = cluster.nodes()[0].node_id.hex()
    assert first["actorgrid_nodes", frozenset()] == 1
    assert first["actorgrid_workers", frozenset({("node", node)})] == 2
    for counter in ("tasks_submitted", "tasks_finished", "tasks_failed", "tasks_retried"):
        assert ("actorgrid_" + counter + "_total", frozenset({("node", node)})) in first
    restarts = total(first, "actorgrid_worker_restarts_total")

    # A call that runs shows in the running gauge, then leaves it.
    release = tmp_path / "release"
    ref = wait_for_file.remote(str(release))
    _wait_for("the task running", lambda: total(_metrics(cluster), "actorgrid_tasks_running") >= 1)
    release.touch()
    assert ag.get(ref, timeout=WAIT_S) == "done"
    _wait_for("the task gone", lambda: total(_metrics(cluster), "actorgrid_tasks_running") == 0)

    # Messages waiting for a busy actor show as its mailbox depth.
    opened = tmp_path / "opened"
    box = hoarder.options(name="hoarder").remote(str(opened))
    for i in range(3):
        ag.send("hoarder", i)
    _wait_for(
        "a mailbox depth of 3",
        lambda: total(_metrics(cluster), "actorgrid_actor_mailbox_depth") == 3,
    )
    opened.touch()
    ag.send("hoarder", "stop")
    assert ag.get(box, timeout=WAIT_S) == 3

    # A worker killed from outside is replaced: the restart counter moves.
    victim = cluster.workers()[0].pid
    os.kill(victim, signal.SIGKILL)
    _wait_for(
        "a worker restart counted",
        lambda: total(_metrics(cluster), "actorgrid_worker_restarts_total") > restarts,
    )
    _wait_for("two workers again", lambda: len(cluster.workers()) == 2)


@ag.remote
class Tally:
    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n


def test_actor_calls_and_bytes_on_the_links_are_counted_per_node(cluster: ag.Cluster) -> None:
    node = cluster.nodes()[0].node_id.hex()
    before = _metrics(cluster)
    calls = total(before, "actorgrid_actor_calls_total")
    tally = Tally.remote()
    assert ag.get([tally.add.remote(1) for _ in range(5)], timeout=WAIT_S)[-1] == 5
    _wait_for(
        "five actor calls counted",
        lambda: total(_metrics(cluster), "actorgrid_actor_calls_total") >= calls + 5,
    )
    # The workers report what their links carried every few seconds.
    _wait_for(
        "the node's workers' bytes reported",
        lambda: all(
            _metrics(cluster).get((f"actorgrid_bytes_{way}_total", frozenset({("node", node)})), 0)
            > 0
            for way in ("sent", "received")
        ),
    )
    sent = ("actorgrid_bytes_sent_total", frozenset({("node", node)}))
    first = _metrics(cluster)[sent]
    ag.get([tally.add.remote(1) for _ in range(50)], timeout=WAIT_S)
    _wait_for("the bytes counter moving", lambda: _metrics(cluster)[sent] > first)


def test_a_killed_workers_bytes_row_goes_and_its_nodes_counters_do_not_go_down(
    cluster: ag.Cluster,
) -> None:
    rows = current_runtime().observe.traffic  # the table /metrics sums per node
    node = cluster.nodes()[0].node_id.hex()
    sent = ("actorgrid_bytes_sent_total", frozenset({("node", node)}))
    victim = cluster.workers()[0].pid
    assert ag.get([shout.remote("traffic") for _ in range(20)], timeout=WAIT_S)
    _wait_for(
        "the worker's bytes reported",
        lambda: any(pid == victim and n[0] > 0 for (_, _, pid), n in rows.rows().items()),
    )
    before = _metrics(cluster)[sent]
    os.kill(victim, signal.SIGKILL)
    _wait_for("its row gone", lambda: all(pid != victim for _, _, pid in rows.rows()))
    assert _metrics(cluster)[sent] >= before  # its bytes stay counted (a Prometheus counter)
    _wait_for("two workers again", lambda: len(cluster.workers()) == 2)


def test_the_object_store_shows_in_metrics(cluster: ag.Cluster) -> None:
    node = cluster.nodes()[0].node_id.hex()
    used = ("actorgrid_object_store_used_bytes", frozenset({("node", node)}))
    capacity = ("actorgrid_object_store_capacity_bytes", frozenset({("node", node)}))
    _wait_for("the store's capacity reported", lambda: _metrics(cluster).get(capacity, 0) > 0)
    before = _metrics(cluster).get(used, 0.0)
    ref = ag.put(b"x" * 4_000_000)  # over the store's threshold: it stays in the node's store
    # The node reports its store with its pulse.
    _wait_for(
        "the 4 MB put counted in the store's use",
        lambda: _metrics(cluster).get(used, 0.0) >= before + 4_000_000,
    )
    del ref


@ag.remote
def shout(text: str) -> int:
    print(text)
    return os.getpid()


def test_the_feed_shows_each_workers_recent_log_lines(cluster: ag.Cluster) -> None:
    base, token = _base(cluster)
    ws_base = "ws" + base.removeprefix("http") + "ws"
    text = f"hello from the dashboard test {time.time()}"
    pid = ag.get(shout.remote(text), timeout=WAIT_S)

    async def feed() -> tuple[str, list[str]]:
        async with trio_websocket.open_websocket_url(ws_base + "?token=" + token) as ws:
            while True:
                message: dict[str, Any] = json.loads(await ws.get_message())
                if message["type"] != "snapshot":
                    continue
                worker = next(
                    w["worker"]["worker_id"]
                    for w in message["workers"]
                    if w["worker"]["pid"] == pid
                )
                lines = message["logs"].get(worker, [])
                if any(text in line for line in lines):
                    return worker, lines

    async def main() -> tuple[str, list[str]]:
        with trio.fail_after(WAIT_S):
            return await feed()

    _, lines = trio.run(main)
    assert f"(shout pid={pid}) {text}" in lines
