"""The handshake, sans I/O: two Handshake objects talking to each other directly."""

from __future__ import annotations

import struct

import pytest

from actorgrid._exceptions import AuthenticationError, ProtocolError
from actorgrid._protocol.handshake import (
    HELLO_BYTES,
    MAGIC,
    PROOF_BYTES,
    PROTOCOL_VERSION,
    Handshake,
)

SECRET = b"cluster secret"


def run(client: Handshake, server: Handshake) -> None:
    """Both sides' three steps, as the TCP transport interleaves them."""
    client_proof = client.receive_hello(server.hello())
    server_proof = server.receive_hello(client.hello())
    server_verdict = server.receive_proof(client_proof)
    client_verdict = client.receive_proof(server_proof)
    client.receive_verdict(server_verdict)
    server.receive_verdict(client_verdict)


def test_matching_secrets_succeed() -> None:
    run(Handshake(SECRET, "client"), Handshake(SECRET, "server"))


def test_hello_and_proof_sizes() -> None:
    client, server = Handshake(SECRET, "client"), Handshake(SECRET, "server")
    hello = client.hello()
    assert len(hello) == HELLO_BYTES
    assert hello.startswith(MAGIC)
    proof = server.receive_hello(hello)
    assert len(proof) == PROOF_BYTES
    assert client.receive_hello(server.hello()) != proof


def test_nonces_are_fresh() -> None:
    assert Handshake(SECRET, "client").hello() != Handshake(SECRET, "client").hello()


@pytest.mark.parametrize("wrong_side", ["client", "server"])
def test_wrong_secret_is_caught_by_the_verifying_side(wrong_side: str) -> None:
    client = Handshake(b"wrong" if wrong_side == "client" else SECRET, "client", "the server")
    server = Handshake(b"wrong" if wrong_side == "server" else SECRET, "server", "the client")
    client_proof = client.receive_hello(server.hello())
    server_proof = server.receive_hello(client.hello())
    # Each side verifies the other's proof, so both notice, and the message names the peer.
    with pytest.raises(AuthenticationError, match="the client failed authentication"):
        server.receive_proof(client_proof)
    with pytest.raises(AuthenticationError, match="the server failed authentication"):
        client.receive_proof(server_proof)


def test_authentication_error_is_a_connection_error() -> None:
    assert issubclass(AuthenticationError, ConnectionError)


@pytest.mark.parametrize("verdict", [b"\x00", b"", b"\x02", b"\x01\x01"])
def test_a_rejecting_verdict_raises(verdict: bytes) -> None:
    client = Handshake(SECRET, "client", "head:1234")
    with pytest.raises(AuthenticationError, match=r"head:1234 rejected our authentication.*secret"):
        client.receive_verdict(verdict)


def test_accepting_verdict_passes() -> None:
    Handshake(SECRET, "client").receive_verdict(b"\x01")


def test_wrong_length_proof_is_rejected() -> None:
    client, server = Handshake(SECRET, "client"), Handshake(SECRET, "server")
    server.receive_hello(client.hello())
    good = client.receive_hello(server.hello())
    for bad in (good[:-1], good + b"\x00", b""):
        with pytest.raises(AuthenticationError):
            server.receive_proof(bad)
    assert server.receive_proof(good) == b"\x01"


def test_bad_magic() -> None:
    server = Handshake(SECRET, "server", "10.0.0.7:5555")
    hello = b"GET " + Handshake(SECRET, "client").hello()[4:]
    with pytest.raises(ProtocolError, match=r"10.0.0.7:5555 is not an actorgrid peer.*b'GET '"):
        server.receive_hello(hello)


def test_wrong_version() -> None:
    client = Handshake(SECRET, "client")
    hello = struct.pack("!4sH32s", MAGIC, PROTOCOL_VERSION + 1, b"n" * 32)
    with pytest.raises(
        ProtocolError,
        match=rf"version {PROTOCOL_VERSION + 1}, this process speaks {PROTOCOL_VERSION}.*same actorgrid version",
    ):
        client.receive_hello(hello)


@pytest.mark.parametrize("length", [0, 1, 4, HELLO_BYTES - 1, HELLO_BYTES + 1])
def test_truncated_or_overlong_hello(length: int) -> None:
    hello = (Handshake(SECRET, "client").hello() * 2)[:length]
    with pytest.raises(ProtocolError, match="peer sent a truncated handshake"):
        Handshake(SECRET, "server").receive_hello(hello)


def test_proof_before_hello() -> None:
    with pytest.raises(ProtocolError, match="before hello"):
        Handshake(SECRET, "server").receive_proof(b"\x00" * PROOF_BYTES)


def test_proof_reflected_back_to_its_sender_is_rejected() -> None:
    # A peer without the secret plays server by echoing: our own hello back as its hello, then
    # our own proof back as its proof. Nonces match either way; only the role in the MAC
    # tells a client's proof from a server's.
    client = Handshake(SECRET, "client")
    hello = client.hello()
    proof = client.receive_hello(hello)
    with pytest.raises(AuthenticationError):
        client.receive_proof(proof)


def test_client_proof_replayed_as_server_proof_is_rejected() -> None:
    # A man in the middle relays the server's hello to the client, then hands the client's
    # proof back to it as if the server had sent it.
    client, server = Handshake(SECRET, "client"), Handshake(SECRET, "server")
    client_proof = client.receive_hello(server.hello())
    server.receive_hello(client.hello())
    with pytest.raises(AuthenticationError):
        client.receive_proof(client_proof)
    # The same proof, given to the server it was meant for, is fine.
    assert server.receive_proof(client_proof) == b"\x01"


def test_server_proof_replayed_to_another_server_is_rejected() -> None:
    # Reflection across connections: an attacker connects to the server twice and relays each
    # connection's hello into the other, so both MACs cover the same two nonces in the same
    # order. Server 2's proof, fed to server 1 as the client's, differs only in its role.
    server_1, server_2 = Handshake(SECRET, "server"), Handshake(SECRET, "server")
    server_1.receive_hello(server_2.hello())
    proof_2 = server_2.receive_hello(server_1.hello())
    with pytest.raises(AuthenticationError):
        server_1.receive_proof(proof_2)


@pytest.mark.parametrize(
    ("secret", "role", "match"),
    [(SECRET, "peer", "role must be"), (b"", "client", "must not be empty")],
)
def test_bad_arguments(secret: bytes, role: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Handshake(secret, role)
