"""``/proc/net/tcp`` of the virtual board: its TCP sockets as a Linux kernel prints them (IPv4,
``net/ipv4/tcp_ipv4.c``, a 32-bit little-endian ARM board such as the Red Pitaya's Zynq).

One header line, then one row per socket, each padded to 149 characters: ``sl`` (row number),
``local_address`` and ``rem_address`` as ``AAAAAAAA:PPPP`` (the IPv4 address as the board's
little-endian CPU reads the network-order word, so 127.0.0.1 is ``0100007F``; the port in
ordinary hexadecimal), ``st`` the TCP state (``0A`` LISTEN, ``01`` ESTABLISHED), then queues,
timers, uid, inode and the kernel's internals (fixed plausible values here). A listener's remote
address is ``00000000:0000``.
"""
from __future__ import annotations

import ipaddress
import socket
import zlib
from dataclasses import dataclass

ESTABLISHED = 0x01
LISTEN = 0x0A
HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
          "timeout inode")
WIDTH = 149
"""Characters of every line before its ``\\n`` (the kernel pads them with spaces)."""
NO_PEER = ("0.0.0.0", 0)


@dataclass(frozen=True)
class TcpSocket:
    """One TCP socket of the board: ``local`` and ``remote`` (host, port) and its ``state``
    (:data:`LISTEN`, with ``remote`` :data:`NO_PEER`, or :data:`ESTABLISHED`)."""

    local: tuple[str, int]
    remote: tuple[str, int]
    state: int


def hex_address(address: tuple[str, int]) -> str:
    """``(host, port)`` as ``/proc/net/tcp`` prints it: ``("127.0.0.1", 2222)`` →
    ``0100007F:08AE``. Raises OSError for a host that is not an IPv4 address."""
    host, port = address
    return f"{int.from_bytes(socket.inet_aton(host), 'little'):08X}:{port:04X}"


def _is_ipv4(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        return False


def render(sockets: list[TcpSocket]) -> str:
    """The contents of ``/proc/net/tcp`` for ``sockets`` (listeners first, as the kernel walks
    its listening hash before the established one); IPv6 sockets are left out (a kernel lists
    them in ``/proc/net/tcp6``)."""
    ipv4 = [s for s in sockets if _is_ipv4(s.local[0]) and _is_ipv4(s.remote[0])]
    ordered = sorted(ipv4, key=lambda s: s.state != LISTEN)
    lines = [HEADER.ljust(WIDTH)]
    for row, sock in enumerate(ordered):
        local, remote = hex_address(sock.local), hex_address(sock.remote)
        inode = 10000 + zlib.crc32(f"{local} {remote}".encode()) % 90000
        tail = "100 0 0 10 0" if sock.state == LISTEN else "20 4 30 10 -1"
        lines.append(f"{row:4d}: {local} {remote} {sock.state:02X} 00000000:00000000 "
                     f"00:00000000 00000000 {0:5d} {0:8d} {inode} 1 00000000 {tail}".ljust(WIDTH))
    return "".join(line + "\n" for line in lines)
