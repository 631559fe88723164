"""HTTP/1.1 for the dashboard, without I/O: a request head parser with hard bounds, and
responses. Enough for a page, ``/metrics`` and a WebSocket upgrade; nothing else.

Bounds (anything beyond them is refused with the status that says so, never buffered):
a request head of at most MAX_HEAD_BYTES, at most MAX_HEADERS header lines, no body.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import attrs

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "HttpError",
    "Request",
    "parse_head",
    "response",
]

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 64

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class HttpError(Exception):
    """A request the dashboard refuses: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class Request:
    """A parsed request head; header names are lower case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]

    def token(self) -> str | None:
        """The token the request carries, from ``?token=`` or ``Authorization: Bearer``."""
        auth = self.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return self.query.get("token")

    @property
    def wants_websocket(self) -> bool:
        return self.headers.get("upgrade", "").lower() == "websocket"


def parse_head(head: bytes) -> Request:
    """Parse a request head (up to and without the blank line). Raises HttpError."""
    if len(head) > MAX_HEAD_BYTES:
        raise HttpError(431, f"the request head is larger than {MAX_HEAD_BYTES} bytes")
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HttpError(400, "the request head is not text") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "not an HTTP/1.x request line")
    method, target, _ = parts
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header lines")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(400, f"a malformed header line: {line[:80]!r}")
        headers[name.lower()] = value.strip()
    if method not in ("GET", "HEAD"):
        raise HttpError(405, f"the dashboard answers GET only, not {method}")
    if headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers:
        raise HttpError(413, "the dashboard takes no request body")
    split = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(split.query, max_num_fields=32).items()}
    return Request(method, split.path or "/", query, headers)


def response(
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    extra: tuple[tuple[str, str], ...] = (),
    *,
    head_only: bool = False,
) -> bytes:
    """A complete response that closes the connection."""
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        "Referrer-Policy: no-referrer",
        *(f"{name}: {value}" for name, value in extra),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body
