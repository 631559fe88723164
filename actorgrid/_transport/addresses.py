"""Which local address other machines can reach this process at."""

from __future__ import annotations

import socket

__all__ = ["local_address_towards"]


def local_address_towards(address: str) -> str:
    """The local IP this machine uses to reach ``host:port``: the one to listen on and
    advertise, so that peers of that host can connect back (127.0.0.1 for a local head).

    A UDP ``connect`` only consults the routing table; no packet is sent.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)
        family, _, _, _, sockaddr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(sockaddr)
            local: str = probe.getsockname()[0]
            return local
    except (OSError, ValueError, IndexError):
        return "127.0.0.1"
