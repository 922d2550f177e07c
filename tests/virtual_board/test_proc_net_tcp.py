"""``/proc/net/tcp`` as the virtual board prints it, against what this machine's Linux kernel
prints for the same sockets."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pymodaq_plugins_pyrpl.virtual_board.proc_net_tcp import (
    ESTABLISHED,
    LISTEN,
    NO_PEER,
    WIDTH,
    TcpSocket,
    hex_address,
    render,
)

pytestmark = pytest.mark.timeout(30)

KERNEL_TABLE = Path("/proc/net/tcp")


def _rows(table: str) -> dict[tuple[str, str], str]:
    """(local, remote) → state, from a ``/proc/net/tcp`` text."""
    rows = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        rows[(fields[1], fields[2])] = fields[3]
    return rows


def test_addresses_are_little_endian_words_and_ports_plain_hex() -> None:
    assert hex_address(("127.0.0.1", 2222)) == "0100007F:08AE"
    assert hex_address(("192.168.1.100", 22)) == "6401A8C0:0016"
    assert hex_address(NO_PEER) == "00000000:0000"
    with pytest.raises(OSError):
        hex_address(("localhost", 22))


def test_render_lists_listeners_first_every_line_padded_ipv4_only() -> None:
    table = render([TcpSocket(("127.0.0.1", 2222), ("127.0.0.1", 40000), ESTABLISHED),
                    TcpSocket(("::1", 22), ("::", 0), LISTEN),
                    TcpSocket(("127.0.0.1", 2222), NO_PEER, LISTEN)])
    lines = table.split("\n")
    assert lines[-1] == "" and all(len(line) == WIDTH for line in lines[:-1])
    assert lines[0].split()[:4] == ["sl", "local_address", "rem_address", "st"]
    assert lines[1].split()[:4] == ["0:", "0100007F:08AE", "00000000:0000", "0A"]
    assert lines[2].split()[:4] == ["1:", "0100007F:08AE", "0100007F:9C40", "01"]
    assert len(lines) == 4


@pytest.mark.skipif(not KERNEL_TABLE.exists(), reason="needs Linux's /proc/net/tcp")
def test_the_same_sockets_print_as_the_kernel_prints_them() -> None:
    """A listener and an accepted connection of this machine: the kernel's rows for them (local,
    remote, state, the header, the number of fields) are the board's."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=5)
    served, peer = listener.accept()
    try:
        ours = [TcpSocket(listener.getsockname(), NO_PEER, LISTEN),
                TcpSocket(served.getsockname(), peer, ESTABLISHED)]
        kernel_text = KERNEL_TABLE.read_text()
        board_text = render(ours)
        kernel, board = _rows(kernel_text), _rows(board_text)
        assert all(kernel.get(key) == state for key, state in board.items()), board
        assert board_text.splitlines()[0] == kernel_text.splitlines()[0]
        kernel_fields = {len(line.split()) for line in kernel_text.splitlines()[1:]}
        assert {len(line.split()) for line in board_text.splitlines()[1:]} <= kernel_fields
    finally:
        for sock in (served, client, listener):
            sock.close()
