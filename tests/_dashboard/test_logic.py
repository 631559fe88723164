"""The dashboard's logic without sockets: the token, the bounded request parser, the model's
counters and its generic rendering of events."""

from __future__ import annotations

import time

import pytest

from actorgrid._dashboard.auth import dashboard_token, token_matches
from actorgrid._dashboard.http import MAX_HEAD_BYTES, MAX_HEADERS, HttpError, parse_head
from actorgrid._dashboard.model import DashboardModel, event_json
from actorgrid._protocol.ids import NodeId, WorkerId
from actorgrid._protocol.messages import (
    ClusterView,
    Event,
    NodeInfo,
    NodeView,
    WorkerInfo,
    WorkerView,
)


def test_token_is_derived_from_the_secret_and_checked_exactly() -> None:
    token = dashboard_token(b"s" * 32)
    assert token == dashboard_token(b"s" * 32)
    assert token != dashboard_token(b"t" * 32)
    assert b"s" * 32 not in bytes.fromhex(token)
    assert token_matches(token, token)
    assert not token_matches(token, token[:-1])
    assert not token_matches(token, token[:-1] + "é")  # non-ASCII: wrong, not an error


def _head(*lines: str) -> bytes:
    return "\r\n".join(lines).encode()


def test_a_request_head_is_parsed_with_its_token() -> None:
    req = parse_head(_head("GET /metrics?token=abc HTTP/1.1", "Host: x", "Upgrade: websocket"))
    assert (req.method, req.path, req.token(), req.wants_websocket) == (
        "GET",
        "/metrics",
        "abc",
        True,
    )
    bearer = parse_head(_head("GET / HTTP/1.1", "Authorization: Bearer xyz"))
    assert bearer.token() == "xyz"
    assert parse_head(_head("GET / HTTP/1.1")).token() is None


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (_head("POST / HTTP/1.1"), 405),
        (_head("GET / HTTP/1.1", "Content-Length: 5"), 413),
        (_head("GET / HTTP/1.1", "Transfer-Encoding: chunked"), 413),
        (_head("GET / HTTP/1.1", *[f"X-{i}: 1" for i in range(MAX_HEADERS + 1)]), 431),
        (_head("GET / HTTP/1.1", "X: " + "a" * MAX_HEAD_BYTES), 431),
        (_head("HELLO"), 400),
        (_head("GET / HTTP/1.1", "no colon here"), 400),
    ],
)
def test_requests_beyond_the_bounds_are_refused_with_their_status(head: bytes, status: int) -> None:
    with pytest.raises(HttpError) as caught:
        parse_head(head)
    assert caught.value.status == status


NODE = NodeId(bytes(range(16)))
WORKER = WorkerId(bytes(range(16, 32)))


def _view() -> ClusterView:
    node = NodeView(NodeInfo(NODE, "host", 1, 1), "alive", None, 0.5)
    worker = WorkerView(WorkerInfo(WORKER, NODE, "127.0.0.1:1", 2, "host", 1.0), "alive", 1, 0)
    return ClusterView(0, (node,), (worker,))


def test_events_move_counters_per_node_and_render_every_field_that_is_set() -> None:
    model = DashboardModel()
    model.snapshot(_view())  # learns that WORKER is on NODE
    now = time.time()
    shown = model.handle_event(Event("worker_restarted", now, worker_id=WORKER, pid=7))
    assert shown == {"kind": "worker_restarted", "time": now, "worker_id": WORKER.hex(), "pid": 7}
    model.handle_event(Event("task_retried", now, node_id=NODE, detail="once"))
    model.handle_event(Event("task_retried", now))
    assert model.counters["worker_restarts", NODE.hex()] == 1
    assert model.counters["tasks_retried", NODE.hex()] == 1
    assert model.counters["tasks_retried", "unknown"] == 1
    # Pulses update the tables through snapshots; they are not listed as events.
    assert model.handle_event(Event("node_status", now, node_id=NODE)) is None
    assert [e["kind"] for e in model.events] == ["worker_restarted", "task_retried", "task_retried"]
    assert event_json(Event("node_joined", now, exit_code=0))["exit_code"] == 0


def test_lost_sends_count_by_how_many_each_event_reports() -> None:
    model = DashboardModel()
    model.snapshot(_view())
    now = time.time()
    model.handle_event(Event("sends_lost", now, worker_id=WORKER, count=5, detail="5 calls"))
    model.handle_event(Event("sends_lost", now, worker_id=WORKER, count=2, detail="2 messages"))
    assert model.counters["sends_lost", NODE.hex()] == 7
    assert model.events[-1]["count"] == 2
