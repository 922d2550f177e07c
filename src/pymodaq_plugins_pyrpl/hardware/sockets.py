"""Socket plumbing shared by the client, the server manager, the demo and the tests."""
from __future__ import annotations

import ipaddress
import socket

KEEPALIVE = (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
"""Keepalive probes: first after 15 s idle, then every 5 s, 3 unanswered ones end the connection."""


def configure_stream(sock: socket.socket) -> None:
    """Options of every request/reply connection, client and server side: no Nagle (a short line
    leaves at once instead of waiting for the peer's delayed ACK, about 40 ms) and keepalive, so a
    silently vanished peer (pulled cable, sleeping laptop) is noticed within about 30 s."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in KEEPALIVE:
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def is_loopback(host: str) -> bool:
    """True if ``host`` (a name or an IP address) is this machine's loopback: ``localhost`` or an
    address in 127.0.0.0/8 or ::1. The empty string (all interfaces, for a bind) is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (another program may take it since)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def close_listener(listener: socket.socket) -> None:
    """Close a listening socket and wake a thread blocked in its ``accept`` (on Linux, closing
    alone leaves that thread blocked)."""
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    listener.close()
