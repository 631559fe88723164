"""The dashboard's server over a real socket, given a source that fails: a request it cannot
answer gets a 503 that says why, and the dashboard goes on serving."""

from __future__ import annotations

from collections.abc import Callable

import trio

from actorgrid._dashboard.auth import dashboard_token
from actorgrid._dashboard.server import DashboardServer
from actorgrid._protocol.messages import ClusterView, Event


class HeadAway:
    """A source whose cluster never answers (as when the head is away)."""

    async def view(self) -> ClusterView:
        raise ConnectionError("the head is away")

    async def subscribe(self, listener: Callable[[Event], None]) -> list[Event]:
        return []

    def unsubscribe(self, listener: Callable[[Event], None]) -> None:
        pass

    async def act(self, action: str, target: bytes) -> str:
        raise ConnectionError("the head is away")


async def _get(port: int, target: str) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
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
