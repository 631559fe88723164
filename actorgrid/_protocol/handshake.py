"""Connection handshake, sans I/O: protocol version, then mutual HMAC challenge-response.

Both sides speak the same three steps, in the same order, so neither waits on the other's role:

1. ``hello``: ``b"AGRD"``, u16 protocol version, 32-byte random nonce (38 bytes).
2. ``proof``: HMAC-SHA256 over the cluster secret of the sender's role, the *peer's* nonce and
   its own (32 bytes). Binding the role stops a proof from being reflected back.
3. ``verdict``: one byte, 1 if the peer's proof was right, else 0, so a client with a wrong
   secret is told so instead of seeing a bare EOF.

Nothing after the handshake is decoded until all three steps passed on both sides.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from .._exceptions import AuthenticationError, ProtocolError

__all__ = ["HELLO_BYTES", "PROOF_BYTES", "PROTOCOL_VERSION", "Handshake"]

MAGIC = b"AGRD"
PROTOCOL_VERSION = 1
_HELLO = struct.Struct("!4sH32s")
HELLO_BYTES = _HELLO.size
PROOF_BYTES = 32
HANDSHAKE_TIMEOUT_S = 10.0


class Handshake:
    """One side of a handshake. ``role`` is "client" (connected) or "server" (accepted)."""

    def __init__(self, secret: bytes, role: str, peer: str = "peer") -> None:
        if role not in ("client", "server"):
            raise ValueError(f"role must be 'client' or 'server', not {role!r}")
        if not secret:
            raise ValueError("the cluster secret must not be empty")
        self._secret = secret
        self._role = role.encode()
        self._peer_role = b"server" if role == "client" else b"client"
        self._peer = peer
        self._nonce = os.urandom(32)
        self._peer_nonce: bytes | None = None

    def hello(self) -> bytes:
        return _HELLO.pack(MAGIC, PROTOCOL_VERSION, self._nonce)

    def receive_hello(self, data: bytes) -> bytes:
        """Check the peer's hello; return our proof to send."""
        if len(data) != HELLO_BYTES:
            raise ProtocolError(f"{self._peer} sent a truncated handshake")
        magic, version, nonce = _HELLO.unpack(data)
        if magic != MAGIC:
            raise ProtocolError(
                f"{self._peer} is not an actorgrid peer (handshake began with {magic!r})"
            )
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"{self._peer} speaks actorgrid protocol version {version}, this process speaks "
                f"{PROTOCOL_VERSION}: install the same actorgrid version everywhere"
            )
        self._peer_nonce = nonce
        return self._mac(self._role, nonce, self._nonce)

    def receive_proof(self, proof: bytes) -> bytes:
        """Check the peer's proof; return the verdict byte to send. Raises if it is wrong."""
        if self._peer_nonce is None:
            raise ProtocolError("proof received before hello")
        expected = self._mac(self._peer_role, self._nonce, self._peer_nonce)
        if len(proof) != PROOF_BYTES or not hmac.compare_digest(proof, expected):
            raise AuthenticationError(
                f"{self._peer} failed authentication: it does not hold this cluster's secret"
            )
        return b"\x01"

    def receive_verdict(self, verdict: bytes) -> None:
        if verdict != b"\x01":
            raise AuthenticationError(
                f"{self._peer} rejected our authentication: the cluster secret given to this "
                "process does not match the cluster's (check --secret-file or ACTORGRID_SECRET)"
            )

    def _mac(self, role: bytes, receiver_nonce: bytes, sender_nonce: bytes) -> bytes:
        return hmac.new(
            self._secret, b"actorgrid-v1|" + role + receiver_nonce + sender_nonce, hashlib.sha256
        ).digest()
