"""The dashboard's I/O shell: one listener serving the page, ``/metrics`` and the WebSocket
feed ``/ws``, every request checked for the token first.

A connection is unauthenticated until its request head has been read and its token checked:
that part runs under the listeners' admission gate (``_transport/listen.py``: a bounded
number at once, a deadline, rejections logged in summary) and reads at most
``http.MAX_HEAD_BYTES``. Only then is anything else done for it: a page, a scrape (one
cluster view), or a WebSocket (trio-websocket, over the same bytes). Plain HTTP is answered
once and closed.

Feed: each WebSocket client has a bounded queue; events are pushed as they come, and a
snapshot of the tables every REFRESH_INTERVAL_S while at least one client is connected (and
at once after an action). A client that falls CLIENT_QUEUE messages behind is closed, never
waited for. Actions are JSON ``{"id", "action", "target"}``, answered with a ``result``.
"""

from __future__ import annotations

import json
import logging
import ssl
from typing import Any

import trio
import trio_websocket

from .._protocol.messages import Event
from .._transport.admission import ListenLimits
from .._transport.listen import ListenGate
from .._transport.tls import TLSConfig
from .auth import token_matches
from .http import MAX_HEAD_BYTES, HttpError, Request, parse_head, response
from .metrics import CONTENT_TYPE, render_metrics
from .model import ACTIONS, DashboardModel
from .page import PAGE
from .source import DashboardSource

__all__ = ["DashboardServer", "dashboard_ssl_context"]

log = logging.getLogger("actorgrid.dashboard")

REFRESH_INTERVAL_S = 1.0
VIEW_TIMEOUT_S = 10.0
CLIENT_QUEUE = 256
MAX_CLIENTS = 32
MAX_ACTION_BYTES = 4096
SEND_TIMEOUT_S = 10.0
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def dashboard_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """The dashboard's server context: the cluster member's certificate and key. Browsers
    present no client certificate, so none is asked for: the token authenticates."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.certfile, tls.keyfile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _ReplayStream(trio.abc.Stream):
    """A stream that first yields bytes already read from it (the request head), so that
    trio-websocket reads the upgrade request it was routed by."""

    def __init__(self, inner: trio.abc.Stream, first: bytes) -> None:
        self.transport_stream = inner
        self._first = first

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._first:
            n = len(self._first) if max_bytes is None else max_bytes
            chunk, self._first = self._first[:n], self._first[n:]
            await trio.lowlevel.checkpoint()
            return chunk
        return bytes(await self.transport_stream.receive_some(max_bytes))

    async def aclose(self) -> None:
        await self.transport_stream.aclose()


async def _read_head(stream: trio.abc.Stream) -> tuple[bytes, bytes]:
    """The request head (without its blank line) and whatever came after it."""
    buffer = bytearray()
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            return bytes(buffer[:end]), bytes(buffer[end + 4 :])
        if len(buffer) > MAX_HEAD_BYTES:
            raise HttpError(431, f"the request head is larger than {MAX_HEAD_BYTES} bytes")
        data = await stream.receive_some(4096)
        if not data:
            raise HttpError(400, "the connection closed before the request head ended")
        buffer += data


class DashboardServer:
    """Serves one cluster's dashboard; ``serve`` reports the URL (with its token)."""

    def __init__(
        self,
        source: DashboardSource,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        limits: ListenLimits | None = None,
    ) -> None:
        self._source = source
        self._token = token
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._limits = limits or ListenLimits()
        self._gate = ListenGate(self._limits)
        self.model = DashboardModel()
        self._clients: set[trio.MemorySendChannel[str]] = set()
        self._wake = trio.Event()
        self._view_failing = False
        self.base_url = ""

    def __repr__(self) -> str:
        return f"<DashboardServer {self.base_url or 'not listening'} clients={len(self._clients)}>"

    @property
    def url(self) -> str:
        return f"{self.base_url}?token={self._token}"

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self._port, host=self._host)
        listener = listeners[0]
        for extra in listeners[1:]:  # port 0 would give each a different port: keep one
            await extra.aclose()
        host, port = listener.socket.getsockname()[:2]
        if self._host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"{'https' if self._ssl else 'http'}://{shown}:{port}/"
        async with listener, trio.open_nursery() as nursery:
            await nursery.start(self._gate.serve_log)
            for event in await self._source.subscribe(self._on_event):
                self.model.handle_event(event)
            self._source.follow_output(self.model.handle_output)
            try:
                nursery.start_soon(self._refresh_loop)
                task_status.started(self.url)
                while True:
                    stream = await self._gate.accept(listener)
                    nursery.start_soon(self._connection, stream)
            finally:
                self._source.unsubscribe(self._on_event)

    # --- the feed ----------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        data = self.model.handle_event(event)
        if data is not None:
            self._broadcast(json.dumps({"type": "event", "event": data}))

    def _broadcast(self, text: str) -> None:
        for client in list(self._clients):
            try:
                client.send_nowait(text)
            except trio.WouldBlock:
                # A page that cannot keep up is dropped (it reconnects and gets a snapshot).
                self._clients.discard(client)
                client.close()
            except trio.ClosedResourceError:
                self._clients.discard(client)

    async def _refresh_loop(self) -> None:
        while True:
            if self._clients:
                with trio.move_on_after(REFRESH_INTERVAL_S):
                    await self._wake.wait()
            else:
                await self._wake.wait()
            self._wake = trio.Event()
            if not self._clients:
                continue
            try:
                with trio.fail_after(VIEW_TIMEOUT_S):
                    view = await self._source.view()
            except Exception as exc:
                if not self._view_failing:  # once per outage, not once per refresh
                    log.warning("the dashboard could not get the cluster's state: %r", exc)
                self._view_failing = True
                continue
            if self._view_failing:
                log.warning("the dashboard gets the cluster's state again")
                self._view_failing = False
            self._broadcast(json.dumps(self.model.snapshot(view)))

    # --- connections -------------------------------------------------------------------------

    async def _connection(self, tcp: trio.SocketStream) -> None:
        try:
            address = str(tcp.socket.getpeername()[0])
        except OSError:
            address = "unknown"
        stream: trio.abc.Stream = tcp
        try:
            request: Request | None = None
            head = rest = b""
            with self._gate.handshake(address):
                with trio.move_on_after(self._limits.handshake_timeout_s):
                    try:
                        if self._ssl is not None:
                            stream = trio.SSLStream(tcp, self._ssl, server_side=True)
                            await stream.do_handshake()
                        head, rest = await _read_head(stream)
                        request = parse_head(head)
                        self._authorize(request)
                    except HttpError as exc:
                        self._gate.rejected(address, f"HTTP {exc.status}", f"dashboard: {exc}")
                        await stream.send_all(
                            response(
                                exc.status, f"{exc}\n".encode(), extra=_auth_header(exc.status)
                            )
                        )
                        return
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                        self._gate.rejected(address, "broken", f"dashboard: {exc!r}")
                        return
            if request is None:
                return  # too slow, or evicted: counted by the gate
            await self._route(stream, request, head, rest)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away: nothing to answer
        except Exception:
            # One request fails, never the dashboard, nor the process that serves it.
            log.exception("the dashboard failed to answer a request")
        finally:
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await stream.aclose()

    def _authorize(self, request: Request) -> None:
        given = request.token()
        if given is None:
            raise HttpError(
                401,
                "this dashboard needs its token: open the URL `actorgrid dashboard` prints "
                "(…/?token=...), or send `Authorization: Bearer TOKEN`",
            )
        if not token_matches(self._token, given):
            raise HttpError(
                403,
                "wrong dashboard token: it is derived from the cluster secret; get the URL "
                "again with `actorgrid dashboard` (the cluster may have been restarted)",
            )

    async def _route(
        self, stream: trio.abc.Stream, request: Request, head: bytes, rest: bytes
    ) -> None:
        head_only = request.method == "HEAD"
        if request.path == "/ws" and request.wants_websocket:
            await self._websocket(_ReplayStream(stream, head + b"\r\n\r\n" + rest))
        elif request.path == "/":
            body = PAGE.encode()
            extra = (("Content-Security-Policy", _CSP), ("X-Frame-Options", "DENY"))
            await stream.send_all(
                response(200, body, "text/html; charset=utf-8", extra, head_only=head_only)
            )
        elif request.path == "/metrics":
            try:
                with trio.fail_after(VIEW_TIMEOUT_S):
                    view = await self._source.view()
            except Exception as exc:
                # The cluster did not answer (its head is away, say): this scrape fails.
                log.warning("the dashboard could not get the cluster's state: %r", exc)
                body = (
                    f"the dashboard could not get the cluster's state ({exc!r}); its head may "
                    "be restarting: scrape again\n"
                ).encode()
                await stream.send_all(response(503, body, head_only=head_only))
                return
            self.model.snapshot(view)
            body = render_metrics(self.model, view, self._source.traffic()).encode()
            await stream.send_all(response(200, body, CONTENT_TYPE, head_only=head_only))
        else:
            body = b"not found: the dashboard serves /, /metrics and /ws\n"
            await stream.send_all(response(404, body, head_only=head_only))

    async def _websocket(self, stream: _ReplayStream) -> None:
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(
                nursery, stream, max_message_size=MAX_ACTION_BYTES
            )
            if len(self._clients) >= MAX_CLIENTS:
                await request.reject(503, body=b"too many dashboard pages open at once\n")
                nursery.cancel_scope.cancel()  # trio-websocket's reader of this connection
                return
            ws = await request.accept()
            send, receive = trio.open_memory_channel[str](CLIENT_QUEUE)
            send.send_nowait(json.dumps({"type": "events", "events": list(self.model.events)}))
            self._clients.add(send)
            self._wake.set()  # a snapshot for it now
            try:
                nursery.start_soon(self._write, ws, receive)
                await self._read_actions(ws, send, nursery)
            except trio_websocket.ConnectionClosed:
                pass
            finally:
                self._clients.discard(send)
                send.close()
                nursery.cancel_scope.cancel()
                with trio.move_on_after(1) as cleanup:
                    cleanup.shield = True
                    await ws.aclose()

    async def _write(
        self, ws: trio_websocket.WebSocketConnection, receive: trio.MemoryReceiveChannel[str]
    ) -> None:
        try:
            async with receive:
                async for text in receive:
                    with trio.fail_after(SEND_TIMEOUT_S):
                        await ws.send_message(text)
            await ws.aclose(1008, "this page fell behind the feed; reload it")
        except (trio_websocket.ConnectionClosed, trio.TooSlowError):
            await ws.aclose()

    async def _read_actions(
        self,
        ws: trio_websocket.WebSocketConnection,
        send: trio.MemorySendChannel[str],
        nursery: trio.Nursery,
    ) -> None:
        while True:
            text = await ws.get_message()
            try:
                message = json.loads(text)
                rid = message.get("id")
                action = message["action"]
                target = bytes.fromhex(message["target"])
                if action not in ACTIONS:
                    raise ValueError(f"unknown action {action!r}; one of {sorted(ACTIONS)}")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                _answer(send, None, False, f"a malformed action: {exc}")
                continue
            nursery.start_soon(self._act, send, rid, action, target)

    async def _act(
        self, send: trio.MemorySendChannel[str], rid: Any, action: str, target: bytes
    ) -> None:
        try:
            done = await self._source.act(action, target)
        except Exception as exc:
            _answer(send, rid, False, f"{action} failed: {exc}")
        else:
            log.info("dashboard: %s", done)
            _answer(send, rid, True, done)
        self._wake.set()


def _answer(send: trio.MemorySendChannel[str], rid: Any, ok: bool, message: str) -> None:
    try:
        send.send_nowait(json.dumps({"type": "result", "id": rid, "ok": ok, "message": message}))
    except (trio.WouldBlock, trio.ClosedResourceError):
        pass  # the page is gone or being dropped


def _auth_header(status: int) -> tuple[tuple[str, str], ...]:
    return (("WWW-Authenticate", 'Bearer realm="actorgrid dashboard"'),) if status == 401 else ()
