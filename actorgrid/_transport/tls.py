"""Mutual TLS for cluster links: the certificate settings, and a frame stream over TLS.

With TLS, a connection is authenticated twice, in this order: the TLS handshake (both sides
present a certificate signed by the cluster's private CA), then the same HMAC handshake on the
cluster secret as plain TCP, inside the TLS session. The first layer encrypts; the second keeps
a stolen or misissued certificate from being enough to join.

:class:`TLSConfig` holds file paths rather than loaded contexts, so it pickles and travels as
JSON (node agents hand it to worker processes on their config line), and each process reads the
files itself.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio

from .._exceptions import ProtocolError
from .._protocol.framing import DEFAULT_MAX_MESSAGE_BYTES, Frame, FrameDecoder, frame_header
from .base import Buffer
from .tlslink import TlsLink

__all__ = ["TLSConfig", "TlsFrameStream", "explain_tls_failure", "frame_views"]

_ROLES = {
    "certfile": "this process's certificate (PEM), signed by the cluster's CA",
    "keyfile": "the private key of that certificate (PEM; may be the same file as certfile)",
    "cafile": "the cluster's CA certificate (PEM), which signed every member's certificate",
}


def _absolute(path: str | os.PathLike[str]) -> str:
    # Absolute, because the config is handed to worker processes that may not share our cwd.
    return os.path.abspath(os.fspath(path))


def _existing_file(instance: object, attribute: attrs.Attribute[str], path: str) -> None:
    if os.path.isfile(path):
        return
    problem = "is a directory, not a file" if os.path.isdir(path) else "does not exist"
    raise FileNotFoundError(
        f"TLSConfig {attribute.name}={path!r} {problem}. {attribute.name} must name "
        f"{_ROLES[attribute.name]}; check the path, and that it exists on this machine "
        "(every process reads its certificate files locally)"
    )


@attrs.frozen
class TLSConfig:
    """Certificates for mutual TLS between cluster members.

    ``certfile`` and ``keyfile``: this process's certificate chain and its private key (PEM;
    one file may hold both). ``cafile``: the cluster's private CA, the only trust root: a peer
    is accepted only with a certificate signed by it. Paths are made absolute and checked to
    exist when the config is made.
    """

    certfile: str = attrs.field(converter=_absolute, validator=_existing_file)
    keyfile: str = attrs.field(converter=_absolute, validator=_existing_file)
    cafile: str = attrs.field(converter=_absolute, validator=_existing_file)

    def server_context(self) -> ssl.SSLContext:
        """A context for accepting: TLS 1.2 or later, and the client must present a
        certificate signed by the cluster's CA."""
        context = self._context(ssl.Purpose.CLIENT_AUTH)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self) -> ssl.SSLContext:
        """A context for connecting: the server must present a certificate signed by the
        cluster's CA, and we present ours."""
        context = self._context(ssl.Purpose.SERVER_AUTH)
        # Cluster members are addressed by IP and may change address, so the certificate is
        # not checked against a host name. A peer is authenticated instead by holding a
        # certificate from the cluster's private CA (the only trust root loaded here) and,
        # inside the TLS session, by the HMAC handshake on the cluster secret.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        try:
            # Given a cafile, this loads it as the only trust root: the system's CAs, which
            # would vouch for any public certificate, are left out.
            context = ssl.create_default_context(purpose, cafile=self.cafile)
        except ssl.SSLError as exc:
            raise ValueError(
                f"could not read the cluster's CA certificate from cafile={self.cafile!r} "
                f"({exc}): it must be a PEM file holding the CA certificate"
            ) from exc
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except ssl.SSLError as exc:
            raise ValueError(
                f"could not load the certificate certfile={self.certfile!r} with "
                f"keyfile={self.keyfile!r} ({exc}): both must be PEM, and the key must be the "
                "one the certificate was issued for"
            ) from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # TlsLink encrypts without waiting for the peer, which renegotiation would break; TLS
        # 1.3 has none, and cluster links never need it.
        context.options |= ssl.OP_NO_RENEGOTIATION
        return context

    def to_dict(self) -> dict[str, str]:
        """The paths as a JSON-able dict; :meth:`from_dict` reads it back."""
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TLSConfig:
        expected = set(_ROLES)
        if set(data) != expected:
            raise ValueError(
                f"TLS settings {dict(data)!r} must have exactly the keys "
                f"{sorted(expected)}, as TLSConfig.to_dict() writes them"
            )
        return cls(certfile=data["certfile"], keyfile=data["keyfile"], cafile=data["cafile"])


# Frame data is encrypted in pieces of at most this size, so sending a huge frame never holds
# more than one piece's ciphertext at a time on top of the frame itself.
_WRITE_CHUNK_BYTES = 1 << 20
# Frame parts up to this size are copied into one chunk with their neighbours (frame_views).
_JOIN_MAX_BYTES = 16 * 1024
# The most one receive decrypts before the loop gets a turn (a big frame arrives in place, in
# slices of this size).
_READ_SLICE_BYTES = 4 << 20
_OPS_PER_CHECKPOINT = 32
CLOSE_NOTIFY_TIMEOUT_S = 1.0


class TlsFrameStream:
    """A frame stream over a TlsLink (tlslink.py) whose handshakes are done.

    Encryption needs the event loop, so ``send_nowait`` only queues: it returns False and
    leaves the frames for the next ``send_frames``, which writes the queue and its own frames
    with as few ``send_all`` calls as the data allows (one, for a batch under
    _WRITE_CHUNK_BYTES). Receives decrypt straight into the frame decoder's buffer, many TLS
    records at a time.
    """

    def __init__(
        self,
        link: TlsLink,
        peer: str,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._link = link
        self.peer = peer
        self._decoder = FrameDecoder(max_message_bytes)
        self._pending: list[memoryview] = []
        self._ops = 0
        self._eof = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<TlsFrameStream peer={self.peer} closed={self._closed}>"

    @property
    def link(self) -> TlsLink:
        """The TLS session (for a receiver that reads its frames itself: bulk.py)."""
        return self._link

    @property
    def max_message_bytes(self) -> int:
        return self._decoder.max_message_bytes

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def send_nowait(self, bodies: Sequence[Sequence[Buffer]]) -> bool:
        """Queue ``bodies`` for the next send_frames; True only if there was nothing to queue.

        Like TCP, what is queued is views of the given buffers, not copies.
        """
        self._pending.extend(frame_views(bodies))
        return not self._pending

    async def send_frames(self, bodies: Sequence[Sequence[Buffer]]) -> None:
        views = self._pending
        views.extend(frame_views(bodies))
        self._pending = []
        try:
            for chunk in _chunks(views):
                await self._link.send_all(chunk)
        except (trio.BrokenResourceError, OSError) as exc:
            raise trio.BrokenResourceError(f"send to {self.peer} failed: {_cause(exc)}") from exc
        except trio.ClosedResourceError:
            raise trio.ClosedResourceError(f"the connection to {self.peer} was closed") from None
        await self._fair()

    async def receive_frame(self) -> Frame | None:
        decoder = self._decoder
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                await self._fair()
                return frame
            if self._eof:
                await trio.lowlevel.checkpoint()
                return None
            if self._closed:
                raise trio.ClosedResourceError(f"the connection to {self.peer} was closed")
            buffer = decoder.get_buffer()
            if buffer.nbytes > _READ_SLICE_BYTES:
                buffer = buffer[:_READ_SLICE_BYTES]
            try:
                n = await self._link.receive_into(buffer)
            except trio.ClosedResourceError:
                raise trio.ClosedResourceError(
                    f"the connection to {self.peer} was closed"
                ) from None
            except (trio.BrokenResourceError, OSError) as exc:
                raise self._receive_failed(exc) from exc
            if n == 0:  # the peer's close_notify: a clean end of the TLS session
                if decoder.in_progress:
                    raise ProtocolError(
                        f"{self.peer} closed the connection in the middle of a frame"
                    )
                self._eof = True
                return None
            decoder.buffer_updated(n)
            if n == _READ_SLICE_BYTES:
                await trio.lowlevel.checkpoint()  # a big frame: let the loop turn

    def _receive_failed(self, exc: BaseException) -> Exception:
        if not _is_eof(exc):
            return trio.BrokenResourceError(f"receive from {self.peer} failed: {_cause(exc)}")
        if self._decoder.in_progress:
            return ProtocolError(f"{self.peer} closed the connection in the middle of a frame")
        # Unlike plain TCP, a bare close is told apart from a clean end (close_notify) even
        # between frames: it is what a crash, or a cut connection, looks like.
        return trio.BrokenResourceError(
            f"{self.peer} closed the connection without ending the TLS session "
            "(no close_notify): it may have crashed, or something between us cut it"
        )

    async def aclose(self) -> None:
        """Send close_notify if that is quick, then close the socket, whatever happened."""
        if self._closed:
            return
        self._closed = True
        try:
            with trio.move_on_after(CLOSE_NOTIFY_TIMEOUT_S):
                await self._link.send_close_notify()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the close below still runs
        finally:
            self._link.close()
            self._decoder.close()

    async def _fair(self) -> None:
        # A receive answered from the decoder's buffer, or a send that did not wait, would
        # not reach the scheduler: give other tasks their turn every so often.
        self._ops += 1
        if self._ops % _OPS_PER_CHECKPOINT == 0:
            await trio.lowlevel.checkpoint()


def frame_views(bodies: Sequence[Sequence[Buffer]]) -> list[memoryview]:
    """The frames of ``bodies`` (header, then parts) as few flat bytes views.

    Headers and parts up to _JOIN_MAX_BYTES are copied into one joined chunk per run of them,
    so a batch of small messages is one view (one iovec, one partial-send bookkeeping step)
    instead of three per message; bigger parts (out-of-band buffers) stay views, uncopied.
    """
    views: list[memoryview] = []
    joined: list[Buffer] = []
    for body in bodies:
        parts = [p if type(p) is bytes else memoryview(p).cast("B") for p in body]
        joined.append(frame_header(sum(map(len, parts))))
        for part in parts:
            if len(part) > _JOIN_MAX_BYTES:
                views.append(memoryview(b"".join(joined)))
                joined = []
                views.append(part if type(part) is memoryview else memoryview(part))
            elif part:
                joined.append(part)
    if joined:
        views.append(memoryview(b"".join(joined)))
    return views


def _chunks(views: list[memoryview]) -> list[Buffer]:
    """The views regrouped for send_all: small ones joined, big ones sliced, in order."""
    chunks: list[Buffer] = []
    group: list[memoryview] = []
    size = 0
    for view in views:
        if view.nbytes >= _WRITE_CHUNK_BYTES:
            if group:
                chunks.append(b"".join(group))
                group, size = [], 0
            chunks.extend(
                view[i : i + _WRITE_CHUNK_BYTES] for i in range(0, view.nbytes, _WRITE_CHUNK_BYTES)
            )
            continue
        group.append(view)
        size += view.nbytes
        if size >= _WRITE_CHUNK_BYTES:
            chunks.append(b"".join(group))
            group, size = [], 0
    if group:
        chunks.append(b"".join(group))
    return chunks


# OpenSSL's reasons for a first record that is not TLS at all.
_NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG"}
)


def explain_tls_failure(exc: BaseException, peer: str, *, server_side: bool) -> str:
    """What a failed TLS handshake with ``peer`` most likely means, and the fix.

    ``exc`` is what trio raised: a BrokenResourceError whose cause is the SSL or socket error.
    The TLS protocol does not reliably tell the failing side's reason to the other side (trio
    closes without sending the alert), so a bare close is explained by its usual cause.
    """
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__
    reason = getattr(cause, "reason", None)
    if cause is None or _is_eof(exc):
        if server_side:
            return (
                f"{peer} closed the connection during the handshake, over TLS: it may not "
                "trust this server's certificate (is it signed by the cluster's CA?)"
            )
        return (
            f"{peer} closed the connection during the handshake, over TLS: most likely it "
            "refused this process's certificate: tls.certfile must be signed by the CA that "
            "the server trusts (its cafile)"
        )
    if reason == "CERTIFICATE_VERIFY_FAILED":
        detail = getattr(cause, "verify_message", None) or cause
        if server_side:
            return (
                f"{peer} presented a certificate that is not signed by the cluster's CA "
                f"({detail}): give it a certificate issued by the CA in this server's cafile"
            )
        return (
            f"the certificate of {peer} is not signed by the cluster's CA in tls.cafile "
            f"({detail}): every member's certificate must be issued by the same CA"
        )
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return (
            f"{peer} presented no certificate, and cluster links use mutual TLS: the client "
            "needs tls= with a certificate signed by the cluster's CA"
        )
    if reason in _NOT_TLS_REASONS:
        if server_side:
            return (
                f"{peer} does not speak TLS ({reason}): most likely it was started without "
                "tls=; every cluster member needs the same tls= setting"
            )
        return (
            f"{peer} did not answer in TLS ({reason}): the server was most likely started "
            "without TLS; every cluster member needs the same tls= setting"
        )
    return f"the TLS handshake with {peer} failed: {cause}"


def _is_eof(exc: BaseException) -> bool:
    """Whether the TLS session ended in a bare TCP close, without the peer's close_notify."""
    cause: BaseException | None = exc
    while cause is not None:
        # Some Python and OpenSSL versions raise a plain SSLError for the same thing.
        if isinstance(cause, ssl.SSLEOFError) or "UNEXPECTED_EOF" in str(cause):
            return True
        cause = cause.__cause__
    return False


def _cause(exc: BaseException) -> str:
    """The innermost explanation: trio wraps SSL and socket errors in BrokenResourceError."""
    while exc.__cause__ is not None and not str(exc):
        exc = exc.__cause__
    return str(exc) or type(exc).__name__
