"""The dashboard's server over a real socket, given a source whose cluster never answers: a
request it cannot answer gets a 503 that says why, pages beyond the limit are refused, a
malformed action is answered, and the dashboard goes on serving."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import trio
import trio_websocket

from actorgrid._dashboard import server as server_module
from actorgrid._dashboard.auth import dashboard_token
from actorgrid._dashboard.server import DashboardServer
from actorgrid._dashboard.source import Traffic
from actorgrid._protocol.messages import ClusterView, Event
from actorgrid._protocol.observe import WorkerOutput


class HeadAway:
    """A source whose cluster never answers (as when the head is away)."""

    async def view(self) -> ClusterView:
        raise ConnectionError("the head is away")

    async def subscribe(self, listener: Callable[[Event], None]) -> list[Event]:
        return []

    def unsubscribe(self, listener: Callable[[Event], None]) -> None:
        pass

    def follow_output(self, listener: Callable[[WorkerOutput], None]) -> None:
        pass

    def traffic(self) -> Traffic:
        return {}

    async def act(self, action: str, target: bytes) -> str:
        raise ConnectionError("the head is away")


async def _get(port: int, target: str, headers: str = "") -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: x{headers}\r\n\r\n".encode())
        reply = b""
        while chunk := await stream.receive_some():
            reply += chunk
    return reply.decode()


async def test_a_cluster_that_does_not_answer_gets_a_503_and_the_dashboard_goes_on() -> None:
    token = dashboard_token(b"k" * 32)
    server = DashboardServer(HeadAway(), token)
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(server.serve)
        port = int(url.split(":")[2].split("/")[0])
        with trio.fail_after(30):
            reply = await _get(port, f"/metrics?token={token}")
            assert reply.startswith("HTTP/1.1 503 "), reply
            assert "the head is away" in reply
            page = await _get(port, f"/?token={token}")
            assert page.startswith("HTTP/1.1 200 ")
        nursery.cancel_scope.cancel()


async def test_pages_beyond_the_limit_are_refused_and_the_others_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "MAX_CLIENTS", 1)
    token = dashboard_token(b"k" * 32)
    server = DashboardServer(HeadAway(), token)
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(server.serve)
        port = int(url.split(":")[2].split("/")[0])
        with trio.fail_after(30):
            async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{port}/ws?token={token}"
            ) as first:
                assert json.loads(await first.get_message())["type"] == "events"
                upgrade = (
                    "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13"
                    "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
                )
                second = await _get(port, f"/ws?token={token}", upgrade)
                assert second.startswith("HTTP/1.1 503 "), second
                assert "too many dashboard pages" in second
                await first.send_message(json.dumps({"id": 1, "action": "nope", "target": "00"}))
                answer = json.loads(await first.get_message())
                assert answer["type"] == "result" and not answer["ok"]
                assert "unknown action 'nope'" in answer["message"]
        nursery.cancel_scope.cancel()
